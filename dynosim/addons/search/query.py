"""The query DSL: an Elasticsearch query against one index -> {row id: score}.

Full-text queries run on the field's FTS5 table and are scored with FTS5's bm25(), rescaled
to Lucene's BM25 (see `_full_text`); exact queries (term, terms, range, exists, ids) are SQL
conditions on the stored JSON. `bool` combines the results the way Elasticsearch does.
Anything else is refused with `Unsupported`, never silently approximated.
"""

import math
import re
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from .errors import EsError, Unsupported
from .index import IndexInfo, SearchStore, comparable, json_path
from .shapes import JSON, Object, Scores

K1 = 1.2  # BM25's k1, the same in FTS5 and Lucene
EXACT_TYPES = {
    "keyword",
    "constant_keyword",
    "wildcard",
    "long",
    "integer",
    "short",
    "byte",
    "double",
    "float",
    "half_float",
    "scaled_float",
    "unsigned_long",
    "date",
    "date_nanos",
    "boolean",
    "ip",
}
_DATE_MATH = re.compile(r"^now(?:([+-])(\d+)([wdhHms]))?$")
_UNIT_MS = {"w": 604_800_000, "d": 86_400_000, "h": 3_600_000, "H": 3_600_000, "m": 60_000, "s": 1000}


class Target:
    """The index a query runs against: the store, the index's name and mappings."""

    def __init__(self, store: SearchStore, info: IndexInfo) -> None:
        self.store = store
        self.index = info.name
        self.mappings = info.mappings

    def all(self, score: float = 1.0) -> Scores:
        return dict.fromkeys(self.store.all_rids(self.index), score)

    def where(self, condition: str, params: Sequence[Any], score: float) -> Scores:
        return dict.fromkeys(self.store.rids_where(self.index, condition, params), score)

    def field(self, name: str) -> tuple[str, str | None]:
        """A field name in a query -> (its path in _source, its mapped type or None)."""
        props = self.mappings.get("properties", {})
        parts = name.split(".")
        for i, part in enumerate(parts):
            node = props.get(part)
            if node is None:
                break
            if i == len(parts) - 1:
                return name, node.get("type", "object")
            sub = node.get("fields", {}).get(parts[i + 1])
            if sub is not None and i + 2 == len(parts):  # a multi-field such as title.raw
                return ".".join(parts[: i + 1]), sub.get("type")
            props = node.get("properties", {})
        if len(parts) > 1 and parts[-1] == "keyword":  # the dynamic mapping's keyword sub-field
            return ".".join(parts[:-1]), "keyword"
        return name, None


def evaluate(query: JSON, target: Target) -> Scores:
    if not isinstance(query, dict) or len(query) != 1:
        raise EsError(400, "parsing_exception", "a query must be an object with exactly one query type")
    ((kind, spec),) = query.items()
    handler = QUERIES.get(kind)
    if handler is None:
        raise Unsupported(f"the [{kind}] query")
    return handler(spec, target)


def _options(kind: str, spec: JSON, allowed: Collection[str]) -> Object:
    if not isinstance(spec, dict):
        raise EsError(400, "parsing_exception", f"[{kind}] query malformed, expected an object")
    for key in spec:
        if key not in allowed and key not in ("boost", "_name"):
            raise Unsupported(f"the [{key}] option of the [{kind}] query")
    return spec


def _required(kind: str, options: Object, key: str) -> JSON:
    if options.get(key) is None:
        raise EsError(400, "parsing_exception", f"[{kind}] query requires [{key}]")
    return options[key]


def _one_field(kind: str, spec: JSON, value_key: str | None, allowed: Collection[str]) -> tuple[str, Object]:
    """`{"field": value}` or `{"field": {value_key: value, ...}}` -> (field, options)."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise EsError(400, "parsing_exception", f"[{kind}] query doesn't support multiple fields")
    ((field, value),) = spec.items()
    if not isinstance(value, dict) and value_key is None:
        raise EsError(400, "parsing_exception", f"[{kind}] query malformed, expected an object for [{field}]")
    options = value if isinstance(value, dict) else {value_key: value}
    if value_key and value_key not in options:
        raise EsError(400, "parsing_exception", f"[{kind}] query requires [{value_key}] for field [{field}]")
    return field, _options(kind, options, allowed)


def _scaled(scores: Scores, boost: float) -> Scores:
    return scores if boost == 1 else {rid: s * boost for rid, s in scores.items()}


# -- full text -------------------------------------------------------------------------------


def tokens(text: JSON) -> list[str]:
    """Split text as FTS5's unicode61 does: runs of letters and digits."""
    return re.findall(r"[^\W_]+", str(text))


def _idf(total: int, hits: int) -> tuple[float, float]:
    """Lucene's BM25 idf, and the one FTS5 uses (which floors at 1e-6 for common terms)."""
    ratio = (total - hits + 0.5) / (hits + 0.5)
    return math.log(1 + ratio), max(math.log(ratio), 1e-6)


def _full_text(target: Target, field: str, words: list[str], required: int) -> Scores:
    """Docs with at least `required` of `words` in `field`, scored like Elasticsearch.

    Each word is its own FTS5 query. FTS5's bm25() is idf * tf*(k1+1)/(tf + k1*norm); Lucene's
    is idf' * tf/(tf + k1*norm) with idf' = ln(1 + (N-n+.5)/(n+.5)). Dividing out FTS5's idf and
    (k1+1) and multiplying in Lucene's keeps FTS5 as the ranker and gives Elasticsearch's scores.
    """
    total = target.store.field_doc_count(target.index, field)
    scores: Scores = {}
    matched: dict[int, int] = {}
    for word in words:
        hits = target.store.bm25(target.index, field, f'"{word}"')
        lucene_idf, fts_idf = _idf(total, len(hits))
        for rid, score in hits.items():
            scores[rid] = scores.get(rid, 0.0) + score / fts_idf / (K1 + 1) * lucene_idf
            matched[rid] = matched.get(rid, 0) + 1
    return {rid: s for rid, s in scores.items() if matched[rid] >= required}


def _phrase(target: Target, field: str, words: list[str]) -> Scores:
    total = target.store.field_doc_count(target.index, field)
    hits = target.store.bm25(target.index, field, '"' + " ".join(words) + '"')
    fts_idf = _idf(total, len(hits))[1]
    lucene_idf = sum(_idf(total, len(target.store.bm25(target.index, field, f'"{w}"')))[0] for w in words)
    return {rid: score / fts_idf / (K1 + 1) * lucene_idf for rid, score in hits.items()}


def _match_field(
    target: Target, name: str, text: JSON, operator: str = "or", minimum: JSON = None, *, phrase: bool = False
) -> Scores:
    path, type_ = target.field(name)
    if type_ in EXACT_TYPES or path not in target.store.text_fields(target.index):
        return _term_scores(target, path, [text], 1.0)
    words = tokens(text)
    if not words:
        return {}
    if phrase:
        return _phrase(target, path, words)
    if str(operator).lower() == "and":
        required = len(words)
    else:
        required = max(1, minimum_should_match(minimum, len(words)) if minimum is not None else 1)
    return _full_text(target, path, words, required)


def match(spec: JSON, target: Target) -> Scores:
    field, o = _one_field(
        "match", spec, "query", {"query", "operator", "minimum_should_match", "analyzer", "lenient", "zero_terms_query"}
    )
    scores = _match_field(target, field, o["query"], o.get("operator", "or"), o.get("minimum_should_match"))
    return _scaled(scores, o.get("boost", 1))


def match_phrase(spec: JSON, target: Target) -> Scores:
    field, o = _one_field("match_phrase", spec, "query", {"query", "slop", "analyzer"})
    if o.get("slop", 0):
        raise Unsupported("[slop] in the [match_phrase] query")
    return _scaled(_match_field(target, field, o["query"], phrase=True), o.get("boost", 1))


def multi_match(spec: JSON, target: Target) -> Scores:
    o = _options(
        "multi_match",
        spec,
        {"query", "fields", "type", "operator", "tie_breaker", "minimum_should_match", "analyzer", "lenient"},
    )
    text = _required("multi_match", o, "query")
    kind = o.get("type", "best_fields")
    if kind not in ("best_fields", "most_fields", "phrase"):
        raise Unsupported(f"[type: {kind}] in the [multi_match] query")
    fields = o.get("fields") or ["*"]
    tie = o.get("tie_breaker", 0.0)
    per_field = []
    for name, boost in _expand_fields(target, fields):
        scores = _match_field(
            target, name, text, o.get("operator", "or"), o.get("minimum_should_match"), phrase=kind == "phrase"
        )
        per_field.append(_scaled(scores, boost))
    combined: Scores = {}
    for rid in set().union(*per_field):
        values = [scores[rid] for scores in per_field if rid in scores]
        best = max(values)
        combined[rid] = sum(values) if kind == "most_fields" else best + tie * (sum(values) - best)
    return _scaled(combined, o.get("boost", 1))


def _expand_fields(target: Target, fields: str | list[str]) -> list[tuple[str, float]]:
    """["title^3", "body*"] -> [("title", 3.0), ("body", 1.0), ("body_html", 1.0)]."""
    known = set(target.store.text_fields(target.index))
    expanded = []
    for spec in [fields] if isinstance(fields, str) else fields:
        name, _, factor = spec.partition("^")
        boost = float(factor) if factor else 1.0
        if "*" in name:
            pattern = re.compile(re.escape(name).replace(r"\*", ".*") + "$")
            expanded += [(field, boost) for field in sorted(known) if pattern.match(field)]
        else:
            expanded.append((name, boost))
    return expanded


# -- exact values ------------------------------------------------------------------------


def _each_value(condition: str) -> str:
    # the field's value, or each element when it is an array (never an object's members)
    return f"EXISTS (SELECT 1 FROM json_each(source, ?) WHERE typeof(key) != 'text' AND ({condition}))"


def _term_scores(target: Target, path: str, values: list[JSON], score: float, case_insensitive: bool = False) -> Scores:
    if not values:
        return {}
    if any(isinstance(v, (dict, list)) or v is None for v in values):
        raise EsError(400, "parsing_exception", f"term values for [{path}] must be strings, numbers or booleans")
    marks = ",".join("?" * len(values))
    if case_insensitive:
        condition = _each_value(f"lower(value) IN ({marks})")
        values = [str(v).lower() for v in values]
    else:
        condition = _each_value(f"value IN ({marks})")
    return target.where(condition, [json_path(path), *values], score)


def term(spec: JSON, target: Target) -> Scores:
    field, o = _one_field("term", spec, "value", {"value", "case_insensitive"})
    path = target.field(field)[0]
    return _term_scores(target, path, [o["value"]], o.get("boost", 1.0), o.get("case_insensitive", False))


def terms(spec: JSON, target: Target) -> Scores:
    if not isinstance(spec, dict):
        raise EsError(400, "parsing_exception", "[terms] query malformed, expected an object")
    boost = spec.get("boost", 1.0)
    fields = {k: v for k, v in spec.items() if k not in ("boost", "_name")}
    if len(fields) != 1:
        raise EsError(400, "parsing_exception", "[terms] query requires exactly one field")
    ((field, values),) = fields.items()
    if not isinstance(values, list):
        raise Unsupported("the terms lookup form of the [terms] query")
    return _term_scores(target, target.field(field)[0], values, boost)


def _bound(value: JSON) -> int | float | str:
    if isinstance(value, str) and value.startswith("now"):
        found = _DATE_MATH.match(value)
        if not found:
            raise Unsupported(f"the date math [{value}] (only now, now-Nd, now+Nh and the like)")
        sign, amount, unit = found.groups()
        offset = int(amount) * _UNIT_MS[unit] if amount else 0
        return int(time.time() * 1000) + (-offset if sign == "-" else offset)
    if isinstance(value, str) and "||" in value:
        raise Unsupported(f"the date math [{value}]")
    key = comparable(value)
    if key is None:
        raise EsError(400, "parsing_exception", f"[range] bound [{value!r}] must be a number or a string")
    return key


def range_(spec: JSON, target: Target) -> Scores:
    field, o = _one_field("range", spec, None, {"gt", "gte", "lt", "lte", "format"})
    conditions: list[str] = []
    params: list[int | float | str] = []
    for op, sql in (("gt", ">"), ("gte", ">="), ("lt", "<"), ("lte", "<=")):
        if o.get(op) is None:
            continue
        bound = _bound(o[op])
        kinds = "'text'" if isinstance(bound, str) else "'integer','real'"
        conditions.append(f"(typeof(k) IN ({kinds}) AND k {sql} ?)")
        params.append(bound)
    if not conditions:
        return target.where(_each_value("value IS NOT NULL"), [json_path(target.field(field)[0])], o.get("boost", 1.0))
    condition = (
        "EXISTS (SELECT 1 FROM (SELECT es_comparable(value) AS k FROM json_each(source, ?) "
        f"WHERE typeof(key) != 'text') WHERE {' AND '.join(conditions)})"
    )
    return target.where(condition, [json_path(target.field(field)[0]), *params], o.get("boost", 1.0))


def exists(spec: JSON, target: Target) -> Scores:
    o = _options("exists", spec, {"field"})
    path = target.field(_required("exists", o, "field"))[0]
    return target.where(
        "EXISTS (SELECT 1 FROM json_each(source, ?) WHERE type != 'null')", [json_path(path)], o.get("boost", 1.0)
    )


def ids(spec: JSON, target: Target) -> Scores:
    o = _options("ids", spec, {"values"})
    values = [str(v) for v in o.get("values", [])]
    if not values:
        return {}
    return target.where(f"id IN ({','.join('?' * len(values))})", values, o.get("boost", 1.0))


# -- compound ----------------------------------------------------------------------------


def minimum_should_match(value: JSON, count: int) -> int:
    """Elasticsearch's minimum_should_match (an integer or a percentage, maybe negative)."""
    text = str(value).strip()
    try:
        if text.endswith("%"):
            percent = int(text[:-1])
            wanted = count * percent // 100 if percent >= 0 else count - count * -percent // 100
        else:
            number = int(text)
            wanted = number if number >= 0 else count + number
    except ValueError:
        raise Unsupported(f"minimum_should_match [{value}] (only integers and percentages)") from None
    return max(0, min(wanted, count))


def _clauses(value: JSON) -> list[JSON]:
    return value if isinstance(value, list) else [value] if value else []


def bool_(spec: JSON, target: Target) -> Scores:
    o = _options("bool", spec, {"must", "should", "filter", "must_not", "minimum_should_match"})
    must, should = _clauses(o.get("must")), _clauses(o.get("should"))
    filters, must_not = _clauses(o.get("filter")), _clauses(o.get("must_not"))
    if not (must or should or filters or must_not):
        return target.all(o.get("boost", 1.0))
    scores: Scores = {}
    allowed: set[int] | None = None

    def narrow(results: Iterable[int]) -> None:
        nonlocal allowed
        allowed = set(results) if allowed is None else allowed & set(results)

    for clause in must:
        results = evaluate(clause, target)
        narrow(results)
        for rid, score in results.items():
            scores[rid] = scores.get(rid, 0.0) + score
    for clause in filters:
        narrow(evaluate(clause, target))
    if should:
        default = 0 if (must or filters) else 1
        wanted = minimum_should_match(o.get("minimum_should_match", default), len(should))
        counts: dict[int, int] = {}
        for clause in should:
            for rid, score in evaluate(clause, target).items():
                scores[rid] = scores.get(rid, 0.0) + score
                counts[rid] = counts.get(rid, 0) + 1
        if wanted:
            narrow(rid for rid, n in counts.items() if n >= wanted)
    if allowed is None:
        allowed = set(target.all())
    for clause in must_not:
        allowed -= set(evaluate(clause, target))
    boost = o.get("boost", 1.0)
    return {rid: scores.get(rid, 0.0) * boost for rid in allowed}


def constant_score(spec: JSON, target: Target) -> Scores:
    o = _options("constant_score", spec, {"filter"})
    boost: float = o.get("boost", 1.0)
    return dict.fromkeys(evaluate(_required("constant_score", o, "filter"), target), boost)


def match_all(spec: JSON, target: Target) -> Scores:
    return target.all(_options("match_all", spec or {}, set()).get("boost", 1.0))


def match_none(spec: JSON, target: Target) -> Scores:
    return {}


QUERIES: dict[str, Callable[[JSON, Target], Scores]] = {
    "match_all": match_all,
    "match_none": match_none,
    "match": match,
    "match_phrase": match_phrase,
    "multi_match": multi_match,
    "term": term,
    "terms": terms,
    "range": range_,
    "exists": exists,
    "ids": ids,
    "bool": bool_,
    "constant_score": constant_score,
}
