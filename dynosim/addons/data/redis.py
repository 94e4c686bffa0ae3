"""Redis's data: reset to empty (FLUSHALL), as a new Key-Value Store is after a release phase that wrote
nothing to it; a release phase that does write to Redis should write it again (Redis has no cheap copy).

Snapshots are key by key (DUMP and RESTORE), which needs neither the server's files nor a restart, so
they are the same on both backends and the app's connections stay open. A snapshot is `<add-on>.keys`:

    b"dynosim-redis-keys 1\\n"
    per key:  >HqII (database, PTTL in ms or -1, key length, payload length), the key, its DUMP payload
    the end:  >HqII (0xFFFF, number of keys, 0, 0), then the SHA-256 of every byte before it

Save: each database INFO keyspace lists, SCANned; each batch of keys DUMPed with its PTTL in one MULTI,
so a key's value and TTL agree. The whole is not one instant (Redis has no cheap one): a key written
meanwhile is in it as it was before or after. TTLs are kept as they were left, not as deadlines: a key
loaded a day later has as long to live as it had when saved.

Load: the file read and checked whole first (its checksum; its databases within the server's; the
server's version, since a DUMP payload loads into the Redis that wrote it or a newer one of its major
version), then one MULTI/EXEC: FLUSHALL, and per database SELECT and its RESTOREs. Any refusal before
EXEC discards the transaction, nothing changed; the app sees the old keys or the new, never a mix. The
plan's maxmemory is lifted for that transaction alone (its queued payloads sit beside the keys they
replace, and a Redis near its limit would refuse them), then set back.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import struct
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from dynosim.addons.data.base import Context, Kind, check_format, read_snapshot
from dynosim.addons.services.redis import ReplyError, Session, call
from dynosim.errors import AddonError

FORMAT = 1
HEADER = b"dynosim-redis-keys %d\n" % FORMAT
RECORD = struct.Struct(">HqII")
END = 0xFFFF  # a database number no server has: the record that ends the keys
DIGEST = hashlib.sha256().digest_size
SCAN_COUNT = 1000  # keys a SCAN round trip asks for, and so a MULTI of DUMPs holds
BATCH = 1000  # commands a load sends before reading their replies


@dataclass(frozen=True)
class Key:
    db: int
    pttl: int  # ms left, -1: none
    name: bytes
    payload: bytes  # DUMP's: the value in the server's RDB encoding, its RDB version, a CRC64


def _address(ctx: Context) -> tuple[int, str, bool]:
    url = urllib.parse.urlsplit(ctx.url())
    assert url.port is not None
    return url.port, urllib.parse.unquote(url.password or ""), url.scheme == "rediss"


def reset(ctx: Context) -> str:
    port, password, tls = _address(ctx)
    call(port, password, [("FLUSHALL",)], tls)
    return "every key deleted (FLUSHALL)"


def save(ctx: Context, folder: Path) -> dict[str, Any]:
    """Every key of every database into `<folder>/<add-on>.keys`; the server's version, for load."""
    path = folder / f"{ctx.name}.keys"
    with Session(*_address(ctx)) as redis:
        version = _info(redis, "server")["redis_version"]
        count, rdb_version = 0, 0
        with _private(path) as out:
            digest = hashlib.sha256()

            def write(chunk: bytes) -> None:
                digest.update(chunk)
                out.write(chunk)

            write(HEADER)
            for db in _databases(redis):
                for key in _keys(redis, db):
                    write(RECORD.pack(db, key.pttl, len(key.name), len(key.payload)) + key.name + key.payload)
                    rdb_version = max(rdb_version, int.from_bytes(key.payload[-10:-8], "little"))
                    count += 1
            write(RECORD.pack(END, count, 0, 0))
            out.write(digest.digest())
    meta: dict[str, Any] = {"format": FORMAT, "file": path.name, "redis_version": version, "keys": count}
    if count:
        meta["rdb_version"] = rdb_version
    return meta


def verify(ctx: Context, folder: Path, meta: Mapping[str, Any]) -> None:
    """That the snapshot's keys can be loaded here (format, the whole file and its checksum, this server's
    version and databases), before any add-on of the snapshot loads."""
    path = _snapshot_file(folder, meta)
    check_format(meta, path, "Redis", FORMAT)
    keys = read_keys(path)
    with Session(*_address(ctx)) as redis:
        _check_version(path, str(meta.get("redis_version")), _info(redis, "server")["redis_version"])
        databases = int(_config(redis, "databases"))
    beyond = sorted({key.db for key in keys if key.db >= databases})
    if beyond:
        raise AddonError(
            f"{path}: has keys in database {beyond[0]}, and this Redis has {databases} (0 to {databases - 1}); "
            f"load it into a Redis configured with `databases {beyond[-1] + 1}` or more"
        )


def load(ctx: Context, folder: Path, meta: Mapping[str, Any]) -> str:
    """(After `verify`.) The add-on's keys replaced by the snapshot's, in one transaction."""
    path = _snapshot_file(folder, meta)
    keys = read_keys(path)
    address = _address(ctx)
    with Session(*address) as redis:
        commands: list[tuple[str | bytes, ...]] = [("MULTI",), ("FLUSHALL",)]
        selected = None
        for key in sorted(keys, key=lambda k: k.db):
            if key.db != selected:
                commands.append(("SELECT", str(key.db)))
                selected = key.db
            ttl = 0 if key.pttl < 0 else max(key.pttl, 1)  # 0 would make a key about to expire persistent
            commands.append(("RESTORE", key.name, str(ttl), key.payload, "REPLACE"))
        commands.append(("EXEC",))
        # the queued RESTOREs take memory beside the keys they replace: a Redis near its plan's maxmemory
        # would refuse them all (OOM); its limit is lifted for the transaction alone
        limit = _config(redis, "maxmemory")
        redis.send([("CONFIG", "SET", "maxmemory", "0")])
        try:
            done = _transaction(redis, path, commands)
        finally:
            port, password, tls = address
            call(port, password, [("CONFIG", "SET", "maxmemory", limit)], tls)  # on a connection of its own
        used = int(_info(redis, "memory")["used_memory"])
    refused = [
        (words, reply) for words, reply in zip(commands[1:-1], done, strict=True) if isinstance(reply, ReplyError)
    ]
    if refused:
        words, reply = refused[0]
        raise AddonError(
            f"{path}: Redis refused {' '.join(repr(word) for word in words[:2])} ({reply}) as the load ran: the "
            f"add-on holds part of the snapshot ({len(refused)} command(s) failed); reset it or load it again"
        )
    loaded = len({key.db for key in keys})
    over = f"; it now uses {used} bytes, more than its plan's maxmemory ({limit})" if 0 < int(limit) < used else ""
    return f"{len(keys)} key(s) loaded into {loaded} database(s), the earlier keys deleted (one MULTI/EXEC){over}"


def read_keys(path: Path) -> list[Key]:
    """Every key of a snapshot file, once its checksum and layout are checked; AddonError when not whole."""
    data = read_snapshot(path)
    damaged = AddonError(
        f"{path}: damaged or not a dynosim Redis snapshot (its checksum or layout is wrong); save it again"
    )
    body = memoryview(data)[:-DIGEST]
    if not data.startswith(HEADER) or len(data) < len(HEADER) + RECORD.size + DIGEST:
        raise damaged
    if hashlib.sha256(body).digest() != data[-DIGEST:]:
        raise damaged
    keys: list[Key] = []
    at = len(HEADER)
    while at + RECORD.size <= len(body):
        db, pttl, name_size, payload_size = RECORD.unpack_from(body, at)
        at += RECORD.size
        if db == END:
            if pttl != len(keys) or at != len(body):
                raise damaged
            return keys
        if at + name_size + payload_size > len(body) or payload_size < 10 or pttl < -1:
            raise damaged
        name, payload = bytes(body[at : at + name_size]), bytes(body[at + name_size : at + name_size + payload_size])
        keys.append(Key(db, pttl, name, payload))
        at += name_size + payload_size
    raise damaged


def _keys(redis: Session, db: int) -> Iterator[Key]:
    """The keys of one database, SCANned (each once), with their payloads and TTLs."""
    redis.send([("SELECT", str(db))])
    seen: set[bytes] = set()
    cursor = b"0"
    while True:
        reply = _one(redis, ("SCAN", cursor, "COUNT", str(SCAN_COUNT)))
        assert isinstance(reply, list) and isinstance(reply[0], bytes)
        cursor, found = reply[0], reply[1]
        names = [name for name in found if name not in seen]
        seen.update(names)
        if names:
            replies = redis.send(
                [("MULTI",), *[(word, name) for name in names for word in ("DUMP", "PTTL")], ("EXEC",)]
            )
            done = replies[-1]
            assert isinstance(done, list)
            for name, payload, pttl in zip(names, done[::2], done[1::2], strict=True):
                if isinstance(payload, ReplyError):
                    raise payload
                if isinstance(payload, bytes) and isinstance(pttl, int) and pttl != -2:  # else gone since SCAN
                    yield Key(db, pttl, name, payload)
        if cursor == b"0":
            return


def _databases(redis: Session) -> list[int]:
    """The databases holding keys now (INFO keyspace: `db1:keys=3,expires=1,avg_ttl=0`)."""
    return sorted(int(name.removeprefix("db")) for name in _info(redis, "keyspace"))


def _info(redis: Session, section: str) -> dict[str, str]:
    text = _one(redis, ("INFO", section))
    assert isinstance(text, bytes)
    lines = (line.partition(":") for line in text.decode().splitlines() if ":" in line and not line.startswith("#"))
    return {name: value for name, _, value in lines}


def _config(redis: Session, name: str) -> str:
    reply = _one(redis, ("CONFIG", "GET", name))
    assert isinstance(reply, list) and isinstance(reply[1], bytes)
    return reply[1].decode()


def _one(redis: Session, command: Sequence[str | bytes]) -> object:
    return redis.send([command])[0]


def _transaction(redis: Session, path: Path, commands: Sequence[Sequence[str | bytes]]) -> list[object]:
    """EXEC's replies, one per command between MULTI and EXEC. An error while queuing (an out-of-memory
    server) raises, and closing the connection then discards the transaction: nothing changed."""
    replies: list[object] = []
    try:
        for start in range(0, len(commands), BATCH):
            replies += redis.send(commands[start : start + BATCH])
    except ReplyError as error:
        raise AddonError(
            f"{path}: Redis refused the load, nothing changed ({error}); see its log, then try again"
        ) from None
    done = replies[-1]
    if not isinstance(done, list):
        raise AddonError(f"{path}: Redis discarded the load, nothing changed ({done!r}); try again")
    return done


def _check_version(path: Path, saved: str, running: str) -> None:
    """A DUMP payload's RDB version is its server's: a newer minor version reads an older's, never the reverse;
    across major versions dynosim does not try."""
    was, now = _major_minor(saved), _major_minor(running)
    if was is None or now is None or was[0] != now[0] or now < was:
        raise AddonError(
            f"{path}: saved from Redis {saved}, and this add-on runs Redis {running}, which cannot take its keys "
            f"(DUMP payloads load into the same major version, as new or newer); load it into a Redis "
            f"{saved.split('.', maxsplit=1)[0]}.x of at least {saved} (DYNOSIM_REDIS_IMAGE, or redis-server on PATH)"
        )


def _major_minor(version: str) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else None


def _snapshot_file(folder: Path, meta: Mapping[str, Any]) -> Path:
    name = meta.get("file")
    if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
        raise AddonError(f"{folder}: its Redis entry names no file ({name!r}); save the snapshot again")
    return folder / name


@contextlib.contextmanager
def _private(path: Path) -> Iterator[BinaryIO]:
    """A new file of the user's only (0600) from its first byte, synced: a snapshot holds the app's data."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        try:
            yield out
        except BaseException:  # not half a snapshot's file left in it
            path.unlink(missing_ok=True)
            raise
        out.flush()
        os.fsync(out.fileno())


KIND = Kind(reset=reset, save=save, load=load, verify=verify)
