"""The search add-on's data (SearchBox's Elasticsearch): reset to no index, through its REST API; snapshots
of its SQLite file on the native backend, of its indices through the REST API on the docker backend.

Native (dynosim's stand-in), `<add-on folder>/data/search.sqlite3`. Save: SQLite's backup API, in one
step, copies the database as one read transaction saw it, while the server goes on writing (it keeps the
file in WAL mode: a reader never blocks it); the copy is made a single self-contained file (journal mode
DELETE). Load: the snapshot's file copied beside the server's, checked there (SQLite's quick_check, the
stand-in's tables and columns, each text field's FTS5 table), then swapped in by rename while the server
is stopped: it opens its database only at start.

Docker (Elasticsearch, or any server that speaks its REST API: the test image runs dynosim's stand-in),
`<add-on>.ndjson`, one JSON object a line:

    {"dynosim-search-dump": 1, "version": "8.17.0"}                          the format, the server's version
    per index:    {"index": name, "mappings": {…}, "settings": {…}, "aliases": {…}}
    per document: {"doc": index, "id": "…", "source": {…}} (and "routing", when it has one)
    the end:      {"end": {"indices": n, "documents": m, "sha256": of every byte before this line}}

Save: the open, visible indices (`_cat/indices`; hidden and system ones are the server's own), each one's
mappings, aliases and the settings that shape its documents' indexing (analysis and the like, not its
shards), then every document in one scroll over them all, 1000 a page, so the documents are one moment's
(Elasticsearch keeps a scroll's view). A server without scroll (dynosim's stand-in) answers in one page,
one read, up to 10000 documents. Documents' versions and sequence numbers are not kept: loaded, each is
at version 1.

Load: the server's indices replaced by the snapshot's. Aliases cannot swap them in atomically here (the
stand-in has no `_aliases`; with them an index would become an alias of a differently named one), so it
is verify-then-replace: the file checked whole (its checksum, its layout, the format, the server's major
version, which reads what its major version wrote), then every index built under a temporary name, its
documents bulk-indexed, refreshed and counted, and deleted again: a refusal up to there (a mapping or a
document the server rejects, its disk full) changes nothing the app sees. Only then are the add-on's
indices deleted and the snapshot's made under their names, the same way; a failure in that last step
(the server stopping midway) leaves part of the snapshot, and says so.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import json
import os
import secrets
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynosim.addons.data.base import Context, Kind, check_format, read_snapshot
from dynosim.addons.search.index import SCHEMA
from dynosim.addons.search.server import DATABASE
from dynosim.errors import AddonError

FORMAT = 1
_TABLES = ("meta", "indices", "docs", "text_fields")

DUMP_FORMAT = 1
DUMP_HEADER = "dynosim-search-dump"
PAGE = 1000  # documents a scroll page and a _bulk request hold
BULK_BYTES = 8 << 20  # and a _bulk request's most, well under Elasticsearch's 100 MB http.max_content_length
SCROLL = "5m"  # how long the server keeps a scroll's view between two pages
WINDOW = 10_000  # the most documents one search returns (Elasticsearch's index.max_result_window)
# the index settings that shape how its documents are indexed and searched, kept; the rest (shards,
# replicas, uuid, creation date, allocation) are the server's
SETTINGS = ("analysis", "similarity", "mapping", "max_result_window", "max_ngram_diff", "max_shingle_diff")
TIMEOUT = 60.0


def reset(ctx: Context) -> str:
    indices = json.loads(_http(ctx, "GET", "_cat/indices?format=json"))
    for index in indices:
        _http(ctx, "DELETE", urllib.parse.quote(str(index["index"])))
    return f"{len(indices)} index(es) deleted"


def save(ctx: Context, folder: Path) -> dict[str, Any]:
    """Native: a consistent copy of the stand-in's database into `<folder>/<add-on>.sqlite3`. Docker: its
    indices and documents into `<folder>/<add-on>.ndjson`."""
    if _backend(ctx) == "docker":
        return _save_dump(ctx, folder)
    current = _database(ctx)
    if not current.is_file():
        raise AddonError(f"{ctx.name}: no search database at {current}; start the app once so its server makes one")
    target = folder / f"{ctx.name}.sqlite3"
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # the user's only from the start
    try:
        with _open(current.as_uri() + "?mode=ro", uri=True) as source, _open(target) as copy:
            source.backup(copy)  # pages=-1: all in one step, one read transaction
            copy.execute("PRAGMA journal_mode=DELETE")
            indices, documents = _counts(copy)
    except sqlite3.Error as error:
        target.unlink(missing_ok=True)
        raise AddonError(f"{current}: could not be copied ({error}); check the add-on's log, then try again") from None
    return {
        "format": FORMAT,
        "file": target.name,
        "sqlite_version": sqlite3.sqlite_version,
        "indices": indices,
        "documents": documents,
    }


def verify(ctx: Context, folder: Path, meta: Mapping[str, Any]) -> None:
    """That the snapshot's file is there and is the stand-in's database (read in place, read-only); on
    docker, that it is whole and of a server of this one's major version."""
    snapshot = _file(folder, meta)
    _same_backend(ctx, snapshot, meta)
    if _backend(ctx) == "docker":
        _check_version(ctx, snapshot, _read_dump(snapshot, meta).version)
        return
    check_format(meta, snapshot, "search", FORMAT)
    if not snapshot.is_file():
        raise AddonError(f"{snapshot}: missing from the snapshot; save the snapshot again")
    try:
        with _open(snapshot.absolute().as_uri() + "?mode=ro", uri=True) as db:
            problem = _not_the_stand_ins(db)
    except sqlite3.DatabaseError as error:
        raise AddonError(f"{snapshot}: not a readable SQLite database ({error}); save the snapshot again") from None
    if problem:
        raise AddonError(f"{snapshot}: not a search stand-in's database ({problem}); save the snapshot again")


def _file(folder: Path, meta: Mapping[str, Any]) -> Path:
    name = meta.get("file")
    if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
        raise AddonError(f"{folder}: its search entry names no file ({name!r}); save the snapshot again")
    return folder / name


def load(ctx: Context, folder: Path, meta: Mapping[str, Any]) -> str:
    """(After `verify`.) The stand-in's database replaced by the snapshot's (its server restarted); the copy
    is checked again where it lands, beside the server's, before the swap. On docker, the server's indices
    replaced by the snapshot's once they have been built whole under temporary names (the module's
    docstring says what that guarantees)."""
    if _backend(ctx) == "docker":
        return _load_dump(ctx, folder, meta)
    current = _database(ctx)
    snapshot = _file(folder, meta)
    current.parent.mkdir(parents=True, exist_ok=True)
    scratch = current.with_name(f".{current.name}.{secrets.token_hex(4)}.load")
    try:
        os.close(os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        with _open(snapshot.absolute().as_uri() + "?mode=ro", uri=True) as source, _open(scratch) as copy:
            source.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")  # no -wal beside it to carry along
            problem = _not_the_stand_ins(copy)
            indices, documents = (0, 0) if problem else _counts(copy)
        if problem:
            raise AddonError(f"{snapshot}: not a search stand-in's database ({problem}); save the snapshot again")

        def swap() -> None:
            os.replace(scratch, current)
            # the old database's write-ahead log, if its server left one, must not be applied to the new one
            for leftover in ("-wal", "-shm"):
                current.with_name(current.name + leftover).unlink(missing_ok=True)

        ctx.restart(swap)
    except sqlite3.DatabaseError as error:
        raise AddonError(f"{snapshot}: not a readable SQLite database ({error}); save the snapshot again") from None
    except OSError as error:
        raise AddonError(
            f"{current}: could not be replaced ({error.strerror or error}); check the folder's space and permissions"
        ) from None
    finally:
        scratch.unlink(missing_ok=True)
    return f"{indices} index(es), {documents} document(s) loaded (the search server restarted to open them)"


def _not_the_stand_ins(db: sqlite3.Connection) -> str | None:
    """What makes this database not one the stand-in wrote, or None."""
    checked = db.execute("PRAGMA quick_check").fetchall()
    if checked != [("ok",)]:
        return f"quick_check: {checked[0][0]}"
    expected = sqlite3.connect(":memory:")
    try:
        expected.executescript(SCHEMA)
        for table in _TABLES:
            want = expected.execute(f"PRAGMA table_info({table})").fetchall()
            have = db.execute(f"PRAGMA table_info({table})").fetchall()
            if have != want:
                return f"its table {table} is {'missing' if not have else 'not as the stand-in makes it'}"
    finally:
        expected.close()
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    for (n,) in db.execute("SELECT n FROM text_fields"):
        if f"fts_{n}" not in tables:
            return f"the full-text table fts_{n} is missing"
    return None


def _counts(db: sqlite3.Connection) -> tuple[int, int]:
    return db.execute("SELECT count(*) FROM indices").fetchone()[0], db.execute("SELECT count(*) FROM docs").fetchone()[
        0
    ]


@contextlib.contextmanager
def _open(target: str | Path, uri: bool = False) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(target, uri=uri, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


def _database(ctx: Context) -> Path:
    return ctx.state_dir / "addons" / ctx.name / "data" / DATABASE


def _backend(ctx: Context) -> str:
    return "docker" if ctx.record.get("backend") == "docker" else "native"


def _same_backend(ctx: Context, snapshot: Path, meta: Mapping[str, Any]) -> None:
    """A snapshot loads into an add-on on the backend it was saved from: the two keep different files."""
    saved = "docker" if meta.get("backend") == "docker" else "native"
    if saved != _backend(ctx):
        raise AddonError(
            f"{snapshot}: a snapshot of a search add-on on the {saved} backend, and {ctx.name} runs on the "
            f"{_backend(ctx)} one, whose snapshots are other files; load it into an app whose add-on runs on {saved}"
        )


# -- docker: the indices and documents through the REST API -----------------------------------------------


@dataclass(frozen=True)
class Dump:
    """A snapshot's NDJSON file, read and checked whole."""

    path: Path
    version: str  # the server's that saved it
    indices: tuple[Mapping[str, Any], ...]  # {"index", "mappings", "settings", "aliases"}
    documents: tuple[Mapping[str, Any], ...]  # {"doc": its index, "id", "source"[, "routing"]}


def _save_dump(ctx: Context, folder: Path) -> dict[str, Any]:
    version = _server_version(ctx)
    names = _indices(ctx)
    target = folder / f"{ctx.name}.ndjson"
    digest = hashlib.sha256()
    documents = 0
    out = os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")  # the user's only
    try:
        with out:

            def put(line: Mapping[str, Any]) -> None:
                data = _line(line)
                digest.update(data)
                out.write(data)

            put({DUMP_HEADER: DUMP_FORMAT, "version": version})
            for name in names:
                put({"index": name, **_definition(ctx, name)})
            for hit in _documents(ctx, names):
                routing = {"routing": hit["_routing"]} if hit.get("_routing") is not None else {}
                put({"doc": hit["_index"], "id": hit["_id"], "source": hit.get("_source", {}), **routing})
                documents += 1
            out.write(_line({"end": {"indices": len(names), "documents": documents, "sha256": digest.hexdigest()}}))
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return {
        "format": DUMP_FORMAT,
        "backend": "docker",
        "file": target.name,
        "server_version": version,
        "indices": len(names),
        "documents": documents,
    }


def _line(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _server_version(ctx: Context) -> str:
    version = _json(ctx, "GET", "").get("version", {}).get("number")
    if not isinstance(version, str):
        raise AddonError(f"{ctx.name}: its server's `GET /` names no version; is it Elasticsearch?")
    return version


def _indices(ctx: Context) -> list[str]:
    """The server's open, visible indices (not its hidden or system ones)."""
    rows = _json(ctx, "GET", "_cat/indices?format=json&expand_wildcards=open")
    return sorted(str(row["index"]) for row in rows if not str(row["index"]).startswith("."))


def _definition(ctx: Context, name: str) -> dict[str, Any]:
    found = _json(ctx, "GET", urllib.parse.quote(name))[name]
    settings = found.get("settings", {}).get("index", {})
    return {
        "mappings": found.get("mappings", {}),
        "settings": {key: settings[key] for key in SETTINGS if key in settings},
        "aliases": found.get("aliases", {}),
    }


def _documents(ctx: Context, names: Sequence[str]) -> Iterator[Mapping[str, Any]]:
    """Every document of those indices, as search hits, from one view of them (a scroll's)."""
    if not names:
        return
    wanted = set(names)  # `_all` may hold an index made since they were listed
    query = {"size": PAGE, "sort": ["_doc"]}
    page = _json(ctx, "POST", f"_all/_search?scroll={SCROLL}", query)
    scroll = page.get("_scroll_id")
    if scroll is None:  # a server without scroll (dynosim's stand-in): all of them in one page, one read
        total = page["hits"]["total"]["value"]
        if total > len(page["hits"]["hits"]):
            if total > WINDOW:
                raise AddonError(
                    f"{ctx.name}: holds {total} documents, and its server pages through at most {WINDOW} without "
                    "scroll, which it lacks; run it on Elasticsearch (DYNOSIM_SEARCH_IMAGE) to snapshot it"
                )
            page = _json(ctx, "POST", "_all/_search", {**query, "size": total})
        yield from (hit for hit in page["hits"]["hits"] if hit["_index"] in wanted)
        return
    try:
        while page["hits"]["hits"]:
            yield from (hit for hit in page["hits"]["hits"] if hit["_index"] in wanted)
            page = _json(ctx, "POST", "_search/scroll", {"scroll": SCROLL, "scroll_id": scroll})
            scroll = page.get("_scroll_id", scroll)
    finally:
        with contextlib.suppress(AddonError):  # it would expire on its own
            _json(ctx, "DELETE", "_search/scroll", {"scroll_id": [scroll]})


def _read_dump(path: Path, meta: Mapping[str, Any]) -> Dump:
    """The snapshot's file, once its format, checksum and layout are checked; AddonError when not whole."""
    check_format(meta, path, "search", DUMP_FORMAT)
    data = read_snapshot(path)
    damaged = AddonError(
        f"{path}: damaged or not a dynosim search snapshot (its checksum or layout is wrong); save the snapshot again"
    )
    body, _, last = data.removesuffix(b"\n").rpartition(b"\n")
    try:
        end = json.loads(last)["end"]
        if data != body + b"\n" + last + b"\n" or hashlib.sha256(body + b"\n").hexdigest() != end["sha256"]:
            raise damaged
        header, *lines = (json.loads(line) for line in body.split(b"\n"))
        if header.get(DUMP_HEADER) != DUMP_FORMAT or not isinstance(header.get("version"), str):
            raise damaged
        indices = tuple(line for line in lines if "index" in line)
        documents = tuple(line for line in lines if "doc" in line)
        names = {index["index"] for index in indices}
        if (
            len(indices) + len(documents) != len(lines)
            or (len(indices), len(documents)) != (end["indices"], end["documents"])
            or len(names) != len(indices)
            or not all(all(isinstance(i[key], dict) for key in ("mappings", "settings", "aliases")) for i in indices)
            or not all(
                d["doc"] in names and isinstance(d["id"], str) and isinstance(d["source"], dict) for d in documents
            )
        ):
            raise damaged
    except (ValueError, KeyError, TypeError, AttributeError):  # not JSON, or JSON of another shape
        raise damaged from None
    return Dump(path, header["version"], indices, documents)


def _check_version(ctx: Context, path: Path, saved: str) -> None:
    """A server reads the indices of its own major version (Elasticsearch's rule for its data too)."""
    running = _server_version(ctx)
    major = saved.partition(".")[0]
    if major != running.partition(".")[0]:
        raise AddonError(
            f"{path}: saved from a search server {saved}, and {ctx.name}'s is {running}, of another major "
            f"version; load it into one of version {major} (DYNOSIM_SEARCH_IMAGE)"
        )


def _load_dump(ctx: Context, folder: Path, meta: Mapping[str, Any]) -> str:
    snapshot = _file(folder, meta)
    _same_backend(ctx, snapshot, meta)
    dump = _read_dump(snapshot, meta)
    _check_version(ctx, snapshot, dump.version)
    # the copies' aliases are renamed too: under the snapshot's names they would show the app the copies
    token = secrets.token_hex(4)
    aliases = sorted({alias for index in dump.indices for alias in index["aliases"]})
    scratch = {index["index"]: f"dynosim-load-{token}-{n}" for n, index in enumerate(dump.indices)}
    scratch |= {alias: f"dynosim-load-{token}-alias-{n}" for n, alias in enumerate(aliases)}
    try:
        _build(ctx, dump, scratch)
    except AddonError as error:
        raise AddonError(f"{snapshot}: not loaded, {ctx.name} unchanged: {error}") from None
    finally:
        for index in dump.indices:
            with contextlib.suppress(AddonError):  # one never made
                _json(ctx, "DELETE", urllib.parse.quote(scratch[index["index"]]))  # its aliases with it
    earlier = _indices(ctx)
    try:
        for name in earlier:
            _json(ctx, "DELETE", urllib.parse.quote(name))
        _build(ctx, dump, {name: name for name in scratch})
    except AddonError as error:
        raise AddonError(
            f"{error} (as the add-on's indices were replaced, after the snapshot loaded whole under temporary "
            "names: it holds part of it; load it again, or reset it)"
        ) from None
    return (
        f"{len(dump.indices)} index(es), {len(dump.documents)} document(s) loaded, the earlier "
        f"{len(earlier)} index(es) deleted (built and counted under temporary names first)"
    )


def _build(ctx: Context, dump: Dump, names: Mapping[str, str]) -> None:
    """The snapshot's indices and their aliases made under `names` (the snapshot's name -> the one to make),
    its documents bulk-indexed and refreshed, then counted; AddonError when the server refuses any of it."""
    for index in dump.indices:
        body: dict[str, Any] = {"mappings": index["mappings"]}
        if index["settings"]:
            body["settings"] = {"index": index["settings"]}
        if index["aliases"]:  # an empty one is left out: servers without aliases (the stand-in) refuse the key
            body["aliases"] = {names[alias]: spec for alias, spec in index["aliases"].items()}
        _json(ctx, "PUT", urllib.parse.quote(names[index["index"]]), body)
    batch: list[bytes] = []
    size = 0
    for n, doc in enumerate(dump.documents, 1):
        action: dict[str, Any] = {"_index": names[doc["doc"]], "_id": doc["id"]}
        if doc.get("routing") is not None:
            action["routing"] = doc["routing"]
        batch += [_line({"index": action}), _line(doc["source"])]
        size += len(batch[-2]) + len(batch[-1])
        if len(batch) >= 2 * PAGE or size >= BULK_BYTES or n == len(dump.documents):
            _bulk(ctx, dump.path, b"".join(batch))
            batch, size = [], 0
    wanted = collections.Counter(doc["doc"] for doc in dump.documents)
    for index in dump.indices:
        name = urllib.parse.quote(names[index["index"]])
        _json(ctx, "POST", f"{name}/_refresh")
        have = _json(ctx, "GET", f"{name}/_count")["count"]
        want = wanted[index["index"]]
        if have != want:
            raise AddonError(
                f"{dump.path}: the index {index['index']} holds {have} document(s) once loaded, not the "
                f"snapshot's {want}; check the add-on's log, then load it again"
            )


def _bulk(ctx: Context, path: Path, body: bytes) -> None:
    answer = _json(ctx, "POST", "_bulk", body=body, content_type="application/x-ndjson")
    if answer.get("errors"):
        item = next(v for item in answer["items"] for v in item.values() if "error" in v)
        error = item["error"]
        raise AddonError(
            f"{path}: the search server refused document {item.get('_id')!r} of {item.get('_index')} "
            f"({error.get('type')}: {error.get('reason')}) as it loaded"
        )


def _json(
    ctx: Context, method: str, path: str, value: Any = None, body: bytes | None = None, content_type: str = ""
) -> Any:
    if value is not None:
        body, content_type = json.dumps(value).encode(), "application/json"
    return json.loads(_http(ctx, method, path, body, content_type) or b"null")


def _http(ctx: Context, method: str, path: str, body: bytes | None = None, content_type: str = "") -> bytes:
    base = next(value for value in ctx.attachment.config_vars.values() if value.startswith("http://"))
    parts = urllib.parse.urlsplit(base)
    request = urllib.request.Request(f"http://{parts.hostname}:{parts.port}/{path}", data=body, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    if parts.username:
        login = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as error:
        raise AddonError(f"{ctx.name}: its search server refused {method} /{path} ({_reason(error)})") from None
    except OSError as error:
        raise AddonError(f"{ctx.name}: the search add-on did not answer ({error})") from None


def _reason(error: urllib.error.HTTPError) -> str:
    """An Elasticsearch error's type and reason, else the HTTP status."""
    try:
        cause = json.loads(error.read())["error"]
        return f"{error.code} {cause['type']}: {cause['reason']}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"HTTP {error.code}"


KIND = Kind(reset=reset, save=save, load=load, verify=verify)
