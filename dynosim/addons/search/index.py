"""The stand-in's storage: indices and documents in one SQLite file, text in FTS5 tables.

Every document is a row of `docs` holding its JSON `_source`. Every string field of an index
(by dotted path, array values joined) gets its own FTS5 table whose rowid is the document's
row id, so BM25 statistics (document count, average length, document frequency) are per
index and per field, as in Elasticsearch. One connection, one re-entrant lock: requests run
one at a time against the store, which keeps it simple and correct under concurrent HTTP.
"""

import contextlib
import datetime
import json
import re
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from .errors import (
    EsError,
    document_missing,
    index_exists,
    index_not_found,
    version_conflict,
)
from .shapes import JSON, Object

# unicode61 lowercases and splits on anything not a letter or digit, close to ES's standard
# analyzer; ES keeps diacritics, so do we.
TOKENIZER = "unicode61 remove_diacritics 0"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS indices (
    name TEXT PRIMARY KEY, uuid TEXT NOT NULL, mappings TEXT NOT NULL, settings TEXT NOT NULL,
    created INTEGER NOT NULL, seq_no INTEGER NOT NULL DEFAULT -1);
CREATE TABLE IF NOT EXISTS docs (
    rid INTEGER PRIMARY KEY, idx TEXT NOT NULL, id TEXT NOT NULL, source TEXT NOT NULL,
    version INTEGER NOT NULL, seq_no INTEGER NOT NULL, UNIQUE (idx, id));
CREATE TABLE IF NOT EXISTS text_fields (
    n INTEGER PRIMARY KEY, idx TEXT NOT NULL, field TEXT NOT NULL, UNIQUE (idx, field));
"""

_BAD_NAME_CHARS = set('\\/*?"<>| ,#:')
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")


@dataclass(frozen=True)
class IndexInfo:
    name: str
    uuid: str
    mappings: Object
    settings: Object
    created: int  # epoch millis


@dataclass(frozen=True)
class Doc:
    index: str
    id: str
    source: Object
    version: int
    seq_no: int
    rid: int


def comparable(value: JSON) -> int | float | str | None:
    """A value as Elasticsearch compares it: numbers as numbers, ISO dates as epoch millis.

    Other strings stay strings; objects, arrays and null compare as nothing (None).
    """
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        if _ISO_DATE.match(value):
            try:
                moment = datetime.datetime.fromisoformat(value.replace(" ", "T"))
            except ValueError:
                return value
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=datetime.UTC)
            return int(moment.timestamp() * 1000)
        return value
    return None


def json_path(field: str) -> str:
    """`author.name` -> `$."author"."name"`, the path json_extract and json_each take."""
    return "$" + "".join('."' + part.replace('"', '""') + '"' for part in field.split("."))


def text_values(source: JSON, prefix: str = "") -> dict[str, list[str]]:
    """Every string in a document, grouped by dotted field path (arrays flattened)."""
    found: dict[str, list[str]] = {}

    def walk(value: JSON, path: str) -> None:
        if isinstance(value, str):
            found.setdefault(path, []).append(value)
        elif isinstance(value, list):
            for item in value:
                walk(item, path)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else key)

    walk(source, prefix)
    return found


def check_index_name(name: str) -> None:
    if (
        not name
        or name != name.lower()
        or name[0] in "_-+"
        or name in (".", "..")
        or _BAD_NAME_CHARS & set(name)
        or len(name.encode()) > 255
    ):
        raise EsError(
            400,
            "invalid_index_name_exception",
            f"Invalid index name [{name}], must be lowercase, must not start with '_', '-' or '+', "
            f'and must not contain \\, /, *, ?, ", <, >, |, space, comma, # or :',
            index=name,
            index_uuid="_na_",
        )


class SearchStore:
    """Indices and documents in `<path>`, a SQLite database in WAL mode."""

    def __init__(self, path: str) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.create_function("es_comparable", 1, comparable, deterministic=True)
        self._db.executescript(SCHEMA)  # its own transaction; every statement is idempotent
        with self.transaction():
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('cluster_uuid', ?)", (secrets.token_urlsafe(16),))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Hold the store so that a multi-step read sees no write in between."""
        with self._lock:
            yield

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the store; the outermost holder commits (or rolls back on error)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                self._depth = 0

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._db.execute(sql, params).fetchone()

    # -- cluster and indices -------------------------------------------------------------

    def cluster_uuid(self) -> str:
        with self._lock:
            return self._one("SELECT value FROM meta WHERE key = 'cluster_uuid'")[0]

    def index_names(self) -> list[str]:
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT name FROM indices ORDER BY name")]

    def get_index(self, name: str) -> IndexInfo | None:
        with self._lock:
            row = self._one("SELECT name, uuid, mappings, settings, created FROM indices WHERE name = ?", (name,))
        if row is None:
            return None
        return IndexInfo(row[0], row[1], json.loads(row[2]), json.loads(row[3]), row[4])

    def require_index(self, name: str) -> IndexInfo:
        info = self.get_index(name)
        if info is None:
            raise index_not_found(name)
        return info

    def create_index(self, name: str, mappings: Object | None = None, settings: Object | None = None) -> IndexInfo:
        check_index_name(name)
        with self.transaction():
            existing = self.get_index(name)
            if existing is not None:
                raise index_exists(name, existing.uuid)
            self._db.execute(
                "INSERT INTO indices (name, uuid, mappings, settings, created) VALUES (?, ?, ?, ?, ?)",
                (
                    name,
                    uuid.uuid4().hex[:22],
                    json.dumps(mappings or {}),
                    json.dumps(settings or {}),
                    int(time.time() * 1000),
                ),
            )
            return self.require_index(name)

    def ensure_index(self, name: str) -> IndexInfo:
        """Indexing a document into a missing index creates it, as in Elasticsearch."""
        with self.transaction():
            return self.get_index(name) or self.create_index(name)

    def delete_index(self, name: str) -> None:
        with self.transaction():
            self.require_index(name)
            for table in self.text_fields(name).values():
                self._db.execute(f"DROP TABLE {table}")
            self._db.execute("DELETE FROM text_fields WHERE idx = ?", (name,))
            self._db.execute("DELETE FROM docs WHERE idx = ?", (name,))
            self._db.execute("DELETE FROM indices WHERE name = ?", (name,))

    def put_mapping(self, name: str, mappings: Object) -> None:
        with self.transaction():
            info = self.require_index(name)
            merged = dict(info.mappings)
            merged.update({k: v for k, v in mappings.items() if k != "properties"})
            merged["properties"] = {**info.mappings.get("properties", {}), **mappings.get("properties", {})}
            self._db.execute("UPDATE indices SET mappings = ? WHERE name = ?", (json.dumps(merged), name))

    def doc_count(self, name: str) -> int:
        with self._lock:
            return self._one("SELECT count(*) FROM docs WHERE idx = ?", (name,))[0]

    # -- documents -----------------------------------------------------------------------

    def get_doc(self, index: str, id_: str) -> Doc | None:
        with self._lock:
            row = self._one(
                "SELECT idx, id, source, version, seq_no, rid FROM docs WHERE idx = ? AND id = ?", (index, id_)
            )
        return _doc(row) if row else None

    def put_doc(
        self, index: str, id_: str | None, source: Object, op_type: str = "index", if_seq_no: int | None = None
    ) -> tuple[Doc, bool]:
        """Index (create or replace) a document. Returns (doc, created)."""
        with self.transaction():
            self.ensure_index(index)
            if id_ is None:
                id_ = secrets.token_urlsafe(15)
            old = self.get_doc(index, id_)
            if old is not None and op_type == "create":
                raise version_conflict(index, id_, f"document already exists (current version [{old.version}])")
            if if_seq_no is not None and (old is None or old.seq_no != if_seq_no):
                current = "document does not exist" if old is None else f"current document has seqNo [{old.seq_no}]"
                raise version_conflict(index, id_, f"required seqNo [{if_seq_no}], primary term [1]. {current}")
            seq_no = self._next_seq_no(index)
            text = json.dumps(source, ensure_ascii=False)
            if old is None:
                cursor = self._db.execute(
                    "INSERT INTO docs (idx, id, source, version, seq_no) VALUES (?, ?, ?, 1, ?)",
                    (index, id_, text, seq_no),
                )
                rid = cast(int, cursor.lastrowid)  # set by every INSERT
            else:
                rid = old.rid
                self._unindex_text(index, rid)
                self._db.execute(
                    "UPDATE docs SET source = ?, version = version + 1, seq_no = ? WHERE rid = ?",
                    (text, seq_no, rid),
                )
            self._index_text(index, rid, source)
            return cast(Doc, self.get_doc(index, id_)), old is None  # read back in the transaction that wrote it

    def update_doc(
        self, index: str, id_: str, partial: Object, upsert: Object | None = None, detect_noop: bool = True
    ) -> tuple[Doc, str]:
        """Merge `partial` into a document. Returns (doc, result) with result created/updated/noop."""
        with self.transaction():
            old = self.get_doc(index, id_) if self.get_index(index) else None
            if old is None:
                if upsert is None:
                    if self.get_index(index) is None:
                        raise index_not_found(index)
                    raise document_missing(index, id_)
                return self.put_doc(index, id_, upsert)[0], "created"
            merged = deep_merge(old.source, partial)
            if detect_noop and merged == old.source:
                return old, "noop"
            return self.put_doc(index, id_, merged)[0], "updated"

    def delete_doc(self, index: str, id_: str) -> Doc | None:
        """Delete a document; returns the deleted Doc with its new version, or None."""
        with self.transaction():
            old = self.get_doc(index, id_)
            if old is None:
                return None
            self._unindex_text(index, old.rid)
            self._db.execute("DELETE FROM docs WHERE rid = ?", (old.rid,))
            seq_no = self._next_seq_no(index)
            return Doc(index, id_, old.source, old.version + 1, seq_no, old.rid)

    def docs(self, rids: Iterable[int]) -> dict[int, Doc]:
        """Documents by row id, as a dict."""
        found: dict[int, Doc] = {}
        wanted = list(rids)
        with self._lock:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for row in self._db.execute(
                    f"SELECT idx, id, source, version, seq_no, rid FROM docs WHERE rid IN ({marks})", chunk
                ):
                    found[row[5]] = _doc(row)
        return found

    # -- what queries are made of ----------------------------------------------------------

    def text_fields(self, index: str) -> dict[str, str]:
        """Field path -> name of its FTS5 table, for every string field the index has seen."""
        with self._lock:
            return {
                field: f"fts_{n}"
                for n, field in self._db.execute("SELECT n, field FROM text_fields WHERE idx = ?", (index,))
            }

    def all_rids(self, index: str) -> list[int]:
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT rid FROM docs WHERE idx = ?", (index,))]

    def rids_where(self, index: str, condition: str, params: Sequence[Any] = ()) -> set[int]:
        """Row ids of the index's documents for which an SQL condition on `source` holds."""
        with self._lock:
            return {
                row[0]
                for row in self._db.execute(f"SELECT rid FROM docs WHERE idx = ? AND ({condition})", (index, *params))
            }

    def bm25(self, index: str, field: str, expression: str) -> dict[int, float]:
        """Run an FTS5 query on one field: (rid -> BM25 score, higher better), or {} if no such field."""
        table = self.text_fields(index).get(field)
        if table is None:
            return {}
        with self._lock:
            rows = self._db.execute(f"SELECT rowid, -bm25({table}) FROM {table} WHERE {table} MATCH ?", (expression,))
            return dict(rows.fetchall())

    def field_doc_count(self, index: str, field: str) -> int:
        table = self.text_fields(index).get(field)
        if table is None:
            return 0
        with self._lock:
            return self._one(f"SELECT count(*) FROM {table}")[0]

    # -- internals -----------------------------------------------------------------------

    def _next_seq_no(self, index: str) -> int:
        self._db.execute("UPDATE indices SET seq_no = seq_no + 1 WHERE name = ?", (index,))
        return self._one("SELECT seq_no FROM indices WHERE name = ?", (index,))[0]

    def _index_text(self, index: str, rid: int, source: Object) -> None:
        tables = self.text_fields(index)
        for field, values in text_values(source).items():
            table = tables.get(field)
            if table is None:
                n = self._db.execute("INSERT INTO text_fields (idx, field) VALUES (?, ?)", (index, field)).lastrowid
                table = f"fts_{n}"
                self._db.execute(f"CREATE VIRTUAL TABLE {table} USING fts5(body, tokenize='{TOKENIZER}')")
            self._db.execute(f"INSERT INTO {table} (rowid, body) VALUES (?, ?)", (rid, "\n".join(values)))

    def _unindex_text(self, index: str, rid: int) -> None:
        for table in self.text_fields(index).values():
            self._db.execute(f"DELETE FROM {table} WHERE rowid = ?", (rid,))


def deep_merge(base: Object, partial: Object) -> Object:
    """Elasticsearch's partial update: objects merge recursively, everything else replaces."""
    merged = dict(base)
    for key, value in partial.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _doc(row: Sequence[Any]) -> Doc:
    return Doc(row[0], row[1], json.loads(row[2]), row[3], row[4], row[5])
