"""The search stand-in's data (SearchBox's Elasticsearch): reset to no index, through its own REST API;
snapshots of its SQLite file, `<add-on folder>/data/search.sqlite3`.

Save: SQLite's backup API, in one step, copies the database as one read transaction saw it, while the
server goes on writing (it keeps the file in WAL mode: a reader never blocks it); the copy is made a
single self-contained file (journal mode DELETE). Load: the snapshot's file copied beside the server's,
checked there (SQLite's quick_check, the stand-in's tables and columns, each text field's FTS5 table),
then swapped in by rename while the server is stopped: it opens its database only at start.

On the docker backend the add-on is Elasticsearch itself, whose data is its own: snapshots refuse it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import sqlite3
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dynosim.addons.data.base import Context, Kind
from dynosim.addons.search.index import SCHEMA
from dynosim.addons.search.server import DATABASE
from dynosim.errors import AddonError

FORMAT = 1
_TABLES = ("meta", "indices", "docs", "text_fields")


def reset(ctx: Context) -> str:
    indices = json.loads(_http(ctx, "GET", "_cat/indices?format=json"))
    for index in indices:
        _http(ctx, "DELETE", urllib.parse.quote(str(index["index"])))
    return f"{len(indices)} index(es) deleted"


def save(ctx: Context, folder: Path) -> dict[str, Any]:
    """A consistent copy of the stand-in's database into `<folder>/<add-on>.sqlite3`."""
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
    """That the snapshot's file is there and is the stand-in's database (read in place, read-only)."""
    _database(ctx)  # the docker backend's Elasticsearch is refused here, before any add-on loads
    snapshot = _file(folder, meta)
    if meta.get("format") != FORMAT:
        raise AddonError(
            f"{snapshot}: a search snapshot of format {meta.get('format')!r}, this dynosim reads format {FORMAT}; "
            "load it with the dynosim that saved it, or save it again"
        )
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
    is checked again where it lands, beside the server's, before the swap."""
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
    if ctx.record.get("backend") == "docker":
        raise AddonError(
            f"{ctx.name}: runs Elasticsearch on the docker backend, whose data snapshots do not take; "
            f"to snapshot it, create it again on the native backend (`dynosim addons:destroy {ctx.name}`, "
            "then `dynosim run --addons native`)"
        )
    return ctx.state_dir / "addons" / ctx.name / "data" / DATABASE


def _http(ctx: Context, method: str, path: str) -> bytes:
    base = next(value for value in ctx.attachment.config_vars.values() if value.startswith("http://"))
    parts = urllib.parse.urlsplit(base)
    request = urllib.request.Request(f"http://{parts.hostname}:{parts.port}/{path}", method=method)
    if parts.username:
        login = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return bytes(response.read())
    except OSError as error:
        raise AddonError(f"{ctx.name}: the search add-on did not answer ({error})") from None


KIND = Kind(reset=reset, save=save, load=load, verify=verify)
