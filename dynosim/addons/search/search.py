"""A `_search` or `_count` request: which indices, the query, then sort, paging and `_source`."""

import fnmatch
import functools
import time
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from .errors import EsError, Unsupported, bad_request, index_not_found
from .index import Doc, SearchStore, comparable
from .query import Target, evaluate
from .shapes import JSON, Object, Scores

SortKey: TypeAlias = tuple[str, str, str]  # (field, "asc" | "desc", missing: "_last" | "_first")
Hit: TypeAlias = tuple[int, int, float]  # (the index's position in the request, row id, score)
SortValue: TypeAlias = int | float | str | None

SEARCH_KEYS = {
    "query",
    "from",
    "size",
    "sort",
    "_source",
    "track_total_hits",
    "track_scores",
    "timeout",
    "min_score",
    "version",
    "seq_no_primary_term",
}
MAX_RESULT_WINDOW = 10_000


def resolve_indices(store: SearchStore, expression: str | None, ignore_unavailable: bool = False) -> list[str]:
    """`a,b`, `logs-*`, `_all` or nothing -> the existing index names it means."""
    existing = store.index_names()
    if expression in (None, "", "_all", "*"):
        return existing
    names = []
    for part in expression.split(","):
        if "*" in part or "?" in part:
            names += [name for name in existing if fnmatch.fnmatchcase(name, part)]
        elif part in existing:
            names.append(part)
        elif not ignore_unavailable:
            raise index_not_found(part)
    return list(dict.fromkeys(names))


def shards(count: int) -> Object:
    return {"total": count, "successful": count, "skipped": 0, "failed": 0}


def count(store: SearchStore, expression: str | None, body: Object, params: Mapping[str, str]) -> Object:
    for key in body:
        if key != "query":
            raise Unsupported(f"[{key}] in a _count request")
    names = resolve_indices(store, expression, params.get("ignore_unavailable") == "true")
    total = sum(len(_matches(store, name, body)) for name in names)
    return {"count": total, "_shards": shards(len(names))}


def search(store: SearchStore, expression: str | None, body: Object, params: Mapping[str, str]) -> Object:
    started = time.monotonic()
    if "q" in params:
        raise Unsupported("the [q] query-string parameter")
    for key in body:
        if key not in SEARCH_KEYS:
            raise Unsupported(f"[{key}] in a search request")
    start = _int(params.get("from", body.get("from")), "from", 0)
    size = _int(params.get("size", body.get("size")), "size", 10)
    if start + size > MAX_RESULT_WINDOW:
        raise bad_request(
            f"Result window is too large, from + size must be less than or equal to: "
            f"[{MAX_RESULT_WINDOW}] but was [{start + size}]."
        )
    sort = parse_sort(params["sort"].split(",") if "sort" in params else body.get("sort"))
    includes, excludes = source_filter(body.get("_source", True), params)
    names = resolve_indices(store, expression, params.get("ignore_unavailable") == "true")

    hits: list[Hit] = []
    for position, name in enumerate(names):
        hits += [(position, rid, score) for rid, score in _matches(store, name, body).items()]
    if body.get("min_score") is not None:
        if not isinstance(body["min_score"], (int, float)):
            raise bad_request(f"[min_score] must be a number, got [{body['min_score']}]")
        hits = [hit for hit in hits if hit[2] >= body["min_score"]]

    by_field = [key for key in sort if key[0] not in ("_score", "_doc")]
    docs: dict[int, Doc] = store.docs(rid for _, rid, _ in hits) if by_field else {}
    keyed = [(hit, [_sort_value(key, hit, docs) for key in sort]) for hit in hits]
    keyed.sort(key=functools.cmp_to_key(functools.partial(_compare, sort)))
    page = keyed[start : start + size]
    if not by_field:
        docs = store.docs(rid for (_, rid, _), _ in page)

    show_scores = not by_field or any(k[0] == "_score" for k in sort) or body.get("track_scores")
    out: list[Object] = []
    for (position, rid, score), values in page:
        doc = docs[rid]
        hit: Object = {"_index": names[position], "_id": doc.id, "_score": score if show_scores else None}
        if body.get("version"):
            hit["_version"] = doc.version
        if body.get("seq_no_primary_term"):
            hit.update(_seq_no=doc.seq_no, _primary_term=1)
        if includes is not None:
            hit["_source"] = filter_source(doc.source, includes, excludes)
        if by_field or sort != DEFAULT_SORT:
            hit["sort"] = values
        out.append(hit)

    hits_body: Object = {"max_score": max((h[2] for h in hits), default=None) if show_scores else None, "hits": out}
    if str(body.get("track_total_hits", params.get("track_total_hits", True))).lower() != "false":
        total = {"value": len(hits), "relation": "eq"}
        hits_body = {"total": len(hits) if params.get("rest_total_hits_as_int") == "true" else total, **hits_body}
    return {
        "took": int((time.monotonic() - started) * 1000),
        "timed_out": False,
        "_shards": shards(len(names)),
        "hits": hits_body,
    }


def _matches(store: SearchStore, name: str, body: Object) -> Scores:
    query = body.get("query") or {"match_all": {}}
    return evaluate(query, Target(store, store.require_index(name)))


def _int(value: JSON, name: str, default: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise bad_request(f"[{name}] must be an integer, got [{value}]") from None
    if number < 0:
        raise bad_request(f"[{name}] parameter cannot be negative, found [{number}]")
    return number


# -- sort ------------------------------------------------------------------------------

DEFAULT_SORT: list[SortKey] = [("_score", "desc", "_last")]


def parse_sort(spec: JSON) -> list[SortKey]:
    """Every form ES takes ("f", "f:desc", {"f": "desc"}, {"f": {"order": ...}}, lists) ->
    [(field, order, missing)]."""
    if not spec:
        return DEFAULT_SORT
    keys: list[SortKey] = []
    for item in spec if isinstance(spec, list) else [spec]:
        if isinstance(item, str):
            field, _, order = item.partition(":")
            options = {"order": order} if order else {}
        elif isinstance(item, dict) and len(item) == 1:
            ((field, options),) = item.items()
            options = options if isinstance(options, dict) else {"order": options}
        else:
            raise EsError(400, "parsing_exception", f"malformed sort [{item}]")
        for option in options:
            if option not in ("order", "missing", "unmapped_type", "format"):
                raise Unsupported(f"[{option}] in a sort")
        order = options.get("order") or ("desc" if field == "_score" else "asc")
        missing = options.get("missing", "_last")
        if order not in ("asc", "desc") or missing not in ("_last", "_first"):
            raise bad_request(f"sort order must be asc or desc, missing _last or _first, in [{item}]")
        keys.append((_sort_field(field), order, missing))
    return keys


def _sort_field(field: str) -> str:
    return field[: -len(".keyword")] if field.endswith(".keyword") else field


def _sort_value(key: SortKey, hit: Hit, docs: Mapping[int, Doc]) -> SortValue:
    field, order, _ = key
    _, rid, score = hit
    if field == "_score":
        return score
    if field == "_doc":
        return rid
    value: JSON = docs[rid].source
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    values = [comparable(v) for v in (value if isinstance(value, list) else [value])]
    values = [v for v in values if v is not None]
    if not values:
        return None
    return min(values, key=_rank) if order == "asc" else max(values, key=_rank)


def _rank(value: SortValue) -> tuple[bool, Any]:
    return (isinstance(value, str), value)  # numbers before strings, as in a mixed sort


def _compare(sort: Sequence[SortKey], a: tuple[Hit, list[SortValue]], b: tuple[Hit, list[SortValue]]) -> int:
    (hit_a, values_a), (hit_b, values_b) = a, b
    for (_, order, missing), x, y in zip(sort, values_a, values_b, strict=True):
        if x == y:
            continue
        if x is None or y is None:
            return (1 if x is None else -1) * (1 if missing == "_last" else -1)
        result = -1 if _rank(x) < _rank(y) else 1
        return result if order == "asc" else -result
    return -1 if hit_a[:2] < hit_b[:2] else 1  # ties: index order, then indexing order


# -- _source ---------------------------------------------------------------------------


def _split(value: JSON) -> list[str]:
    return [part for part in value.split(",") if part] if isinstance(value, str) else list(value)


def source_filter(spec: JSON, params: Mapping[str, str]) -> tuple[list[str] | None, list[str]]:
    """The `_source` option and parameters -> (includes, excludes); includes None means no _source."""
    if "_source" in params:
        spec = {"true": True, "false": False}.get(params["_source"], params["_source"])
    if "_source_includes" in params or "_source_excludes" in params:
        spec = {"includes": params.get("_source_includes", "*"), "excludes": params.get("_source_excludes", "")}
    if spec is True or spec is None:
        return ["*"], []
    if spec is False:
        return None, []
    if isinstance(spec, (str, list)):
        return _split(spec) or ["*"], []
    if isinstance(spec, dict):
        includes = spec.get("includes", spec.get("include", ["*"]))
        excludes = spec.get("excludes", spec.get("exclude", []))
        return _split(includes) or ["*"], _split(excludes)
    raise EsError(400, "parsing_exception", f"malformed _source [{spec}]")


def filter_source(source: Object, includes: list[str], excludes: list[str]) -> JSON:
    if includes == ["*"] and not excludes:
        return source
    return _filter(source, includes, excludes, "", False)


_DROPPED = object()


def _filter(value: JSON, includes: list[str], excludes: list[str], prefix: str, included: bool) -> JSON:
    """Keep what an include pattern names (with everything under it), minus what excludes name."""
    if isinstance(value, list):
        items = [_filter(item, includes, excludes, prefix, included) for item in value]
        return [item for item in items if item is not _DROPPED and (included or item != {})]
    if not isinstance(value, dict):
        return value if included else _DROPPED
    kept: Object = {}
    for key, item in value.items():
        path = prefix + key
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in excludes):
            continue
        inside = included or any(fnmatch.fnmatchcase(path, pattern) for pattern in includes)
        inner = _filter(item, includes, excludes, path + ".", inside)
        if inner is not _DROPPED and (inside or inner):
            kept[key] = inner
    return kept
