"""Snapshots of Redis's, the search stand-in's and the SMTP sink's data (dynosim/addons/data/): saved
while the add-on serves, changed, loaded back, and the data is as it was; a damaged file or a server
that cannot take it is refused in one line, the data left as it is. Real servers, official clients:
redis-py and plain HTTP for search (on both backends), smtplib for the sink."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import smtplib
import sqlite3
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import need_docker, remove_app_containers

from dynosim.addons import AddonRequest, Addons
from dynosim.addons import data as addon_data
from dynosim.addons.catalogue import Attachment
from dynosim.addons.data import redis as redis_data
from dynosim.addons.data import search as search_data
from dynosim.addons.data import smtp as smtp_data
from dynosim.addons.data.base import Context
from dynosim.addons.search.index import SCHEMA
from dynosim.addons.smtp import list_mail
from dynosim.errors import AddonError

pytestmark = pytest.mark.timeout(180)

REDIS = AddonRequest("heroku-redis")
SEARCH = AddonRequest("searchbox")
MAILGUN = AddonRequest("mailgun")


def verified_load(data: Any, ctx: Any, folder: Path, meta: Mapping[str, Any]) -> str:
    """As snapshot:load calls a service's module: `verify` (before any add-on loads), then `load`."""
    data.verify(ctx, folder, meta)
    return str(data.load(ctx, folder, meta))


@pytest.fixture
def state_dir() -> Iterator[Path]:
    app = Path(tempfile.mkdtemp(prefix="dynosim-snapshot-"))
    state = app / ".dynosim"
    yield state
    remove_app_containers(state)
    shutil.rmtree(app, ignore_errors=True)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A snapshot being written: an empty folder."""
    made = tmp_path / "snapshot.tmp"
    made.mkdir()
    return made


def quiet(_: str) -> None:
    pass


def context_of(addons: Addons, state_dir: Path, attachment: Attachment) -> tuple[Context, list[str]]:
    """The add-on's Context, its restart as the snapshot orchestration's; and a list of what restarted."""
    restarts: list[str] = []

    def restart(between: Callable[[], None]) -> None:
        addons.stop_server(attachment.name)
        try:
            between()
        finally:
            addons.start_server(attachment.name)
        restarts.append(attachment.name)

    return addon_data.context(state_dir, attachment, restart), restarts


def one_line(error: pytest.ExceptionInfo[AddonError], *words: str) -> str:
    text = str(error.value)
    assert "\n" not in text and "Traceback" not in text, text
    for word in words:
        assert word in text, text
    return text


# --- Redis: key by key, on both backends ---------------------------------------------------------------


def redis_client(attachment: Attachment, db: int = 0) -> redis.Redis:
    url = attachment.config_vars["REDIS_URL"]
    return redis.Redis.from_url(url, db=db, ssl_cert_reqs=None)  # a certificate no client trusts, as on Heroku


BINARY = bytes(range(256)) + b"\x00\xff\r\n$*"


def write_redis_data(r0: redis.Redis, r1: redis.Redis) -> None:
    r0.set("session:1", "alice", ex=300)
    r0.set("session:2", "bob", px=90_000)
    r0.set("counter", 41)
    r0.incr("counter")
    r0.hset("user:1", mapping={"name": "Alice", "plan": "hobby"})
    r0.rpush("queue", "a", "b", "c")
    r0.sadd("tags", "x", "y")
    r0.zadd("board", {"alice": 3, "bob": 7})
    r0.set(b"bin\x00\xffkey", BINARY)
    r1.set("db1:only", "here", ex=600)
    r1.rpush("db1:list", *[str(n) for n in range(300)])


def redis_contents(r: redis.Redis) -> dict[bytes, tuple[bytes, Any, int]]:
    """Every key of a database: its type, its value, its TTL in ms (-1: none)."""
    found: dict[bytes, tuple[bytes, Any, int]] = {}
    read: dict[bytes, Callable[[bytes], Any]] = {
        b"string": r.get,
        b"hash": r.hgetall,
        b"list": lambda key: r.lrange(key, 0, -1),
        b"set": r.smembers,
        b"zset": lambda key: r.zrange(key, 0, -1, withscores=True),
    }
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        value = read[kind](key)
        found[key] = (kind, value, r.pttl(key))
    return found


def same_but_ttls(before: dict[bytes, tuple[bytes, Any, int]], after: dict[bytes, tuple[bytes, Any, int]]) -> None:
    assert {k: v[:2] for k, v in after.items()} == {k: v[:2] for k, v in before.items()}
    for key, (_, _, ttl) in before.items():
        if ttl < 0:
            assert after[key][2] == -1, key
        else:
            assert abs(after[key][2] - ttl) < 1000, (key, ttl, after[key][2])


def test_redis_keys_come_back_exactly_with_their_ttls(addon_backend: str, state_dir: Path, folder: Path) -> None:
    with Addons(state_dir, [REDIS], backend=addon_backend, say=quiet) as addons:
        [kvs] = addons.start()
        ctx, restarts = context_of(addons, state_dir, kvs)
        r0, r1, r2 = redis_client(kvs, 0), redis_client(kvs, 1), redis_client(kvs, 2)
        write_redis_data(r0, r1)
        before = redis_contents(r0), redis_contents(r1)
        client_id = r0.client_id()  # a connection of the app's, kept through save and load

        meta = redis_data.save(ctx, folder)
        assert [p.name for p in folder.iterdir()] == [f"{kvs.name}.keys"]
        assert (folder / f"{kvs.name}.keys").stat().st_mode & 0o777 == 0o600
        assert meta["format"] == 1 and meta["file"] == f"{kvs.name}.keys" and meta["keys"] == 10
        assert meta["redis_version"] == r0.info("server")["redis_version"]
        assert meta["rdb_version"] >= 9
        json.dumps(meta)

        r0.flushall()
        r0.set("counter", 1)
        r0.set("new:key", "gone after the load")
        r2.set("db2:key", "gone too")
        time.sleep(0.5)  # the TTLs come back as they were saved, not as they are now
        said = verified_load(redis_data, ctx, folder, meta)
        assert said.startswith("10 key(s) loaded into 2 database(s)"), said

        same_but_ttls(before[0], redis_contents(r0))
        same_but_ttls(before[1], redis_contents(r1))
        assert r2.dbsize() == 0
        assert r0.get(b"bin\x00\xffkey") == BINARY
        assert r0.client_id() == client_id and restarts == []


def test_redis_refuses_a_damaged_file_or_another_version_and_changes_nothing(
    addon_backend: str, state_dir: Path, folder: Path
) -> None:
    with Addons(state_dir, [REDIS], backend=addon_backend, say=quiet) as addons:
        [kvs] = addons.start()
        ctx, _ = context_of(addons, state_dir, kvs)
        r0 = redis_client(kvs)
        write_redis_data(r0, redis_client(kvs, 1))
        meta = redis_data.save(ctx, folder)
        r0.flushall()
        r0.set("current", "data")
        path = folder / meta["file"]
        whole = path.read_bytes()

        def refused(*words: str, meta: dict[str, Any] = meta) -> None:
            with pytest.raises(AddonError) as error:
                verified_load(redis_data, ctx, folder, meta)
            one_line(error, *words)
            assert r0.keys("*") == [b"current"] and redis_client(kvs, 1).dbsize() == 0

        damaged = bytearray(whole)
        damaged[len(whole) // 2] ^= 0x01
        path.write_bytes(bytes(damaged))
        refused(str(path), "damaged", "save it again")
        path.write_bytes(whole[:-100])  # cut short
        refused(str(path), "damaged")
        path.write_bytes(b"")
        refused(str(path), "damaged")
        path.write_bytes(whole)

        running = meta["redis_version"]
        major, minor, _ = (int(n) for n in running.split("."))
        refused(f"saved from Redis {major - 1}.2.4", running, meta={**meta, "redis_version": f"{major - 1}.2.4"})
        refused(f"Redis {major}.{minor + 1}.0", meta={**meta, "redis_version": f"{major}.{minor + 1}.0"})
        refused("format 2", meta={**meta, "format": 2})
        refused("names no file", meta={**meta, "file": "../elsewhere.keys"})

        path.unlink()
        refused(str(path), "missing")

        # a patch release of the same minor version takes it
        path.write_bytes(whole)
        assert "10 key(s)" in verified_load(redis_data, ctx, folder, {**meta, "redis_version": f"{major}.{minor}.0"})


def test_redis_refuses_keys_in_a_database_the_server_lacks(state_dir: Path, folder: Path) -> None:
    with Addons(state_dir, [REDIS], backend="native", say=quiet) as addons:
        [kvs] = addons.start()
        ctx, _ = context_of(addons, state_dir, kvs)
        r15 = redis_client(kvs, 15)
        r15.set("last", "db")
        meta = redis_data.save(ctx, folder)
        r15.set("current", "data")
        # the same file, its key moved to database 16, as a server configured with more would have saved it
        path = folder / meta["file"]
        keys = redis_data.read_keys(path)
        rewritten = redis_data.HEADER
        for key in keys:
            rewritten += redis_data.RECORD.pack(16, key.pttl, len(key.name), len(key.payload)) + key.name + key.payload
        rewritten += redis_data.RECORD.pack(redis_data.END, len(keys), 0, 0)
        path.write_bytes(rewritten + hashlib.sha256(rewritten).digest())
        with pytest.raises(AddonError) as error:
            verified_load(redis_data, ctx, folder, meta)
        one_line(error, str(path), "database 16", "databases 17")
        assert sorted(r15.keys("*")) == [b"current", b"last"]


def test_redis_10000_keys_with_and_without_expiry_save_and_load_back(state_dir: Path, folder: Path) -> None:
    with Addons(state_dir, [REDIS], backend="native", say=quiet) as addons:
        [kvs] = addons.start()
        ctx, _ = context_of(addons, state_dir, kvs)
        r0 = redis_client(kvs)
        with r0.pipeline(transaction=False) as pipe:
            for n in range(10_000):
                pipe.set(f"key:{n}", f"value {n}" * 4, ex=3600 if n % 2 else None)
            pipe.execute()
        meta = redis_data.save(ctx, folder)
        r0.flushall()
        verified_load(redis_data, ctx, folder, meta)
        assert meta["keys"] == 10_000 and r0.dbsize() == 10_000
        assert r0.get("key:9999") == b"value 9999" * 4 and 3598_000 < r0.pttl("key:9999") <= 3600_000
        assert r0.get("key:9998") == b"value 9998" * 4 and r0.pttl("key:9998") == -1


def test_redis_near_its_plans_maxmemory_loads_back_and_keeps_its_limit(state_dir: Path, folder: Path) -> None:
    with Addons(state_dir, [REDIS], backend="native", say=quiet) as addons:
        [kvs] = addons.start()
        ctx, _ = context_of(addons, state_dir, kvs)
        r0 = redis_client(kvs)
        limit = int(r0.config_get("maxmemory")["maxmemory"])
        assert limit > 0
        with r0.pipeline(transaction=False) as pipe:
            for n in range(int(limit * 0.85) // 1100):
                pipe.set(f"key:{n}", "x" * 1000)
            pipe.execute()
        assert r0.info("memory")["used_memory"] > limit * 0.8
        meta = redis_data.save(ctx, folder)
        r0.set("key:0", "changed")
        verified_load(redis_data, ctx, folder, meta)
        assert r0.dbsize() == meta["keys"] and r0.get("key:0") == b"x" * 1000
        assert int(r0.config_get("maxmemory")["maxmemory"]) == limit
        assert r0.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"


# --- search: the stand-in's SQLite file (native), its indices over the REST API (docker) ----------------


def es(attachment: Attachment, method: str, path: str, body: Any = None, ndjson: bytes | None = None) -> Any:
    url = attachment.config_vars["SEARCHBOX_URL"]
    login, _, address = url.removeprefix("http://").rpartition("@")
    request = urllib.request.Request(
        f"http://{address}/{path}",
        method=method,
        data=ndjson if ndjson is not None else None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/x-ndjson" if ndjson is not None else "application/json"},
    )
    if login:
        request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def titles(attachment: Attachment, index: str, query: str, field: str = "title") -> list[str]:
    found = es(attachment, "POST", f"{index}/_search", {"query": {"match": {field: query}}, "size": 100})
    return sorted(hit["_source"]["title"] for hit in found["hits"]["hits"])


def tagged(attachment: Attachment, index: str, tag: str) -> list[str]:
    """A keyword field's exact value, not its words."""
    found = es(attachment, "POST", f"{index}/_search", {"query": {"term": {"tag": tag}}, "size": 100})
    return sorted(hit["_source"]["title"] for hit in found["hits"]["hits"])


def index_names(attachment: Attachment) -> list[str]:
    return sorted(row["index"] for row in es(attachment, "GET", "_cat/indices?format=json"))


ARTICLES = {"properties": {"title": {"type": "text"}, "tag": {"type": "keyword"}, "n": {"type": "integer"}}}
LOGS = {"properties": {"title": {"type": "text"}, "tag": {"type": "keyword"}}}
LOG_LINES = 1500  # more than a page of the save's search and one _bulk request of the load


def snapshot_file(backend: str, attachment: Attachment) -> str:
    return f"{attachment.name}.ndjson" if backend == "docker" else f"{attachment.name}.sqlite3"


def test_search_indices_and_documents_come_back(addon_backend: str, state_dir: Path, folder: Path) -> None:
    with Addons(state_dir, [SEARCH], backend=addon_backend, say=quiet) as addons:
        [box] = addons.start()
        ctx, restarts = context_of(addons, state_dir, box)
        es(box, "PUT", "articles", {"mappings": ARTICLES})
        es(box, "PUT", "logs", {"mappings": LOGS})
        for n, (title, tag) in enumerate(
            [("Dyno sleeping", "dynos"), ("Scaling dynos", "Ops Team"), ("Postgres backups", "data")]
        ):
            es(box, "PUT", f"articles/_doc/{n}?refresh=true", {"title": title, "tag": tag, "n": n})
        lines = b"".join(
            json.dumps({"index": {"_index": "logs", "_id": f"line-{n}"}}).encode()
            + b"\n"
            + json.dumps({"title": f"log line {n} été", "tag": "error" if n % 100 == 0 else "info"}).encode()
            + b"\n"
            for n in range(LOG_LINES)
        )
        assert not es(box, "POST", "_bulk?refresh=true", ndjson=lines)["errors"]
        mappings = es(box, "GET", "_mapping")

        meta = search_data.save(ctx, folder)
        name = snapshot_file(addon_backend, box)
        assert [p.name for p in folder.iterdir()] == [name] and meta["file"] == name
        assert (folder / name).stat().st_mode & 0o777 == 0o600
        assert (meta["format"], meta["indices"], meta["documents"]) == (1, 2, 3 + LOG_LINES)
        json.dumps(meta)

        es(box, "DELETE", "articles")
        es(box, "PUT", "other/_doc/1?refresh=true", {"title": "made after the snapshot"})
        es(box, "PUT", "logs/_doc/extra?refresh=true", {"title": "another log line", "tag": "error"})

        said = verified_load(search_data, ctx, folder, meta)
        assert said.startswith(f"2 index(es), {3 + LOG_LINES} document(s) loaded"), said
        assert restarts == ([box.name] if addon_backend == "native" else [])  # docker: over REST, no restart
        assert index_names(box) == ["articles", "logs"]
        assert titles(box, "articles", "postgres dynos") == ["Postgres backups", "Scaling dynos"]  # full text too
        assert tagged(box, "articles", "Ops Team") == ["Scaling dynos"] and tagged(box, "articles", "ops") == []
        assert len(tagged(box, "logs", "error")) == LOG_LINES // 100
        found = es(
            box, "POST", "logs/_search", {"query": {"match": {"title": {"query": "été 1499", "operator": "and"}}}}
        )
        assert [hit["_id"] for hit in found["hits"]["hits"]] == ["line-1499"]
        assert es(box, "GET", "logs/_count")["count"] == LOG_LINES
        assert es(box, "GET", "articles/_doc/2")["_source"] == {"title": "Postgres backups", "tag": "data", "n": 2}
        assert es(box, "GET", "_mapping") == mappings
        # and it goes on taking writes
        es(box, "PUT", "articles/_doc/9?refresh=true", {"title": "Dynos after the load", "tag": "dynos"})
        assert "Dynos after the load" in titles(box, "articles", "dynos")


def test_search_refuses_a_damaged_snapshot_and_changes_nothing(
    addon_backend: str, state_dir: Path, folder: Path
) -> None:
    with Addons(state_dir, [SEARCH], backend=addon_backend, say=quiet) as addons:
        [box] = addons.start()
        ctx, restarts = context_of(addons, state_dir, box)
        es(box, "PUT", "articles", {"mappings": ARTICLES})
        es(box, "PUT", "articles/_doc/1?refresh=true", {"title": "kept", "tag": "a", "n": 1})
        meta = search_data.save(ctx, folder)
        path = folder / meta["file"]
        whole = path.read_bytes()
        es(box, "PUT", "articles/_doc/2?refresh=true", {"title": "also kept", "tag": "b", "n": 2})

        def refused(*words: str) -> None:
            with pytest.raises(AddonError) as error:
                verified_load(search_data, ctx, folder, meta)
            one_line(error, str(path), *words)
            assert titles(box, "articles", "kept") == ["also kept", "kept"] and restarts == []
            assert index_names(box) == ["articles"]

        path.write_bytes(whole[: len(whole) // 2])
        refused("save")
        path.write_bytes(b"not a snapshot at all\n" * 100)
        refused("save the snapshot again")
        path.unlink()
        refused("missing")

        path.write_bytes(whole)
        assert verified_load(search_data, ctx, folder, meta).startswith("1 index(es), 1 document(s)")
        assert titles(box, "articles", "kept") == ["kept"]


def test_search_refuses_what_is_not_its_database_and_keeps_serving(state_dir: Path, folder: Path) -> None:
    with Addons(state_dir, [SEARCH], backend="native", say=quiet) as addons:
        [box] = addons.start()
        ctx, restarts = context_of(addons, state_dir, box)
        es(box, "PUT", "articles/_doc/1?refresh=true", {"title": "kept"})
        meta = search_data.save(ctx, folder)
        path = folder / meta["file"]
        whole = path.read_bytes()
        es(box, "PUT", "articles/_doc/2?refresh=true", {"title": "also kept"})

        def refused(*words: str, meta: dict[str, Any] = meta) -> None:
            with pytest.raises(AddonError) as error:
                verified_load(search_data, ctx, folder, meta)
            one_line(error, *words)
            assert titles(box, "articles", "kept") == ["also kept", "kept"] and restarts == []
            leftovers = [p.name for p in (state_dir / "addons" / box.name / "data").iterdir() if ".load" in p.name]
            assert leftovers == []

        path.write_bytes(b"not a database at all" * 100)
        refused(str(path), "not a readable SQLite database", "save the snapshot again")
        path.write_bytes(whole[: len(whole) // 2])
        refused(str(path))
        path.unlink()
        with sqlite3.connect(path) as other:
            other.execute("CREATE TABLE docs (id INTEGER)")
        refused(str(path), "not a search stand-in's database", "its table meta is missing")
        path.unlink()
        with sqlite3.connect(path) as other:  # the stand-in's tables, but one of them of another shape
            other.executescript(SCHEMA.replace("source TEXT NOT NULL", "body BLOB"))
        refused(str(path), "its table docs is not as the stand-in makes it")
        path.unlink()
        refused(str(path), "missing")
        path.write_bytes(whole)
        with sqlite3.connect(path) as damaged:
            damaged.execute("DROP TABLE fts_1")
        refused(str(path), "fts_1 is missing")
        path.write_bytes(whole)
        refused("format 2", meta={**meta, "format": 2})

        assert verified_load(search_data, ctx, folder, meta).startswith("1 index(es), 1 document(s)")
        assert titles(box, "articles", "kept") == ["kept"]


def rewritten(path: Path, change: Callable[[list[dict[str, Any]]], None]) -> None:
    """The dump's lines changed and its checksum made right again: a whole file of other content."""
    *lines, _ = [json.loads(line) for line in path.read_bytes().splitlines()]
    change(lines)
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    counts = {"indices": sum("index" in line for line in lines), "documents": sum("doc" in line for line in lines)}
    end = {"end": {**counts, "sha256": hashlib.sha256(body).hexdigest()}}
    path.write_bytes(body + json.dumps(end).encode() + b"\n")


def test_search_on_docker_checks_the_snapshot_on_the_server_before_replacing_anything(
    state_dir: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_docker(monkeypatch)
    with Addons(state_dir, [SEARCH], backend="docker", say=quiet) as addons:
        [box] = addons.start()
        ctx, _ = context_of(addons, state_dir, box)
        es(box, "PUT", "articles", {"mappings": ARTICLES})
        es(box, "PUT", "articles/_doc/1?refresh=true", {"title": "kept", "tag": "a", "n": 1})
        meta = search_data.save(ctx, folder)
        path = folder / meta["file"]
        whole = path.read_bytes()
        header = json.loads(whole.splitlines()[0])
        assert header == {"dynosim-search-dump": 1, "version": es(box, "GET", "")["version"]["number"]}
        assert meta["server_version"] == header["version"] and meta["backend"] == "docker"
        es(box, "PUT", "articles/_doc/2?refresh=true", {"title": "also kept", "tag": "b", "n": 2})

        def refused(*words: str, meta: dict[str, Any] = meta) -> None:
            with pytest.raises(AddonError) as error:
                verified_load(search_data, ctx, folder, meta)
            one_line(error, *words)
            assert titles(box, "articles", "kept") == ["also kept", "kept"]
            assert index_names(box) == ["articles"]  # no index of the load left behind

        flipped = bytearray(whole)
        flipped[whole.index(b"kept")] ^= 0x20  # "Kept": still JSON, no longer its checksum's
        path.write_bytes(bytes(flipped))
        refused(str(path), "damaged", "checksum")
        path.write_bytes(whole)
        refused("format 2", meta={**meta, "format": 2})
        refused("native backend", meta={**{k: v for k, v in meta.items() if k != "backend"}, "format": 1})

        rewritten(path, lambda lines: lines[0].update(version="7.17.0"))
        refused(str(path), "7.17.0", "major version")
        # a whole file the server refuses as it loads (the stand-in has no aliases): refused while the
        # snapshot's indices are still the temporary copies, the add-on's own untouched
        path.write_bytes(whole)
        rewritten(path, lambda lines: lines[1]["aliases"].update({"current": {}}))
        refused(str(path), "not loaded", f"{box.name} unchanged", "dynosim_unsupported", "aliases")

        path.write_bytes(whole)
        assert verified_load(search_data, ctx, folder, meta).startswith("1 index(es), 1 document(s)")
        assert titles(box, "articles", "kept") == ["kept"] and tagged(box, "articles", "a") == ["kept"]


# --- the SMTP sink: its messages ------------------------------------------------------------------------


def send(attachment: Attachment, subject: str) -> None:
    env = attachment.config_vars
    msg = EmailMessage()
    msg["From"] = "Dynolab <hello@dynolab.example>"
    msg["To"] = "customer@example.com"
    msg["Subject"] = subject
    msg.set_content(f"{subject}, in full.")
    with smtplib.SMTP(env["MAILGUN_SMTP_SERVER"], int(env["MAILGUN_SMTP_PORT"]), timeout=10) as smtp:
        smtp.login(env["MAILGUN_SMTP_LOGIN"], env["MAILGUN_SMTP_PASSWORD"])
        assert smtp.send_message(msg) == {}


def mailbox(state_dir: Path, attachment: Attachment) -> dict[str, bytes]:
    mail = state_dir / "addons" / attachment.name / "mail"
    return {path.name: path.read_bytes() for path in sorted(mail.glob("*.eml"))}


def test_mail_comes_back_and_the_sink_keeps_taking_it(state_dir: Path, folder: Path) -> None:
    with Addons(state_dir, [MAILGUN], backend="native", say=quiet) as addons:
        [mailgun] = addons.start()
        ctx, restarts = context_of(addons, state_dir, mailgun)
        send(mailgun, "Welcome")
        send(mailgun, "Your receipt")
        before = mailbox(state_dir, mailgun)
        assert len(before) == 2

        meta = smtp_data.save(ctx, folder)
        assert meta == {"format": 1, "folder": f"{mailgun.name}.mail", "messages": 2}
        assert {p.name: p.read_bytes() for p in (folder / meta["folder"]).iterdir()} == before

        send(mailgun, "After the snapshot")
        (state_dir / "addons" / mailgun.name / "mail" / sorted(before)[0]).unlink()
        said = verified_load(smtp_data, ctx, folder, meta)
        assert said == "2 message(s) loaded in place of the 2 it held", said
        assert mailbox(state_dir, mailgun) == before and restarts == []
        assert [p.name for p in (state_dir / "addons" / mailgun.name).iterdir() if p.name.startswith(".mail")] == []

        send(mailgun, "After the load")  # into the new folder
        assert len(mailbox(state_dir, mailgun)) == 3


def test_mail_the_sink_takes_during_a_load_is_kept(
    state_dir: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Addons(state_dir, [MAILGUN], backend="native", say=quiet) as addons:
        [mailgun] = addons.start()
        ctx, _ = context_of(addons, state_dir, mailgun)
        send(mailgun, "In the snapshot")
        meta = smtp_data.save(ctx, folder)
        send(mailgun, "Replaced by the load")
        copy = shutil.copy2
        sent: list[str] = []

        def copy_while_mail_arrives(source: Any, target: Any) -> Any:
            if not sent:  # the load has listed the mailbox and is copying the snapshot: a message arrives
                send(mailgun, "Sent during the load")
                sent.append("yes")
            return copy(source, target)

        monkeypatch.setattr(shutil, "copy2", copy_while_mail_arrives)
        said = verified_load(smtp_data, ctx, folder, meta)
        assert said.endswith(", 1 captured during the load kept"), said
        subjects = sorted(m.subject for m in list_mail(state_dir))
        assert subjects == ["In the snapshot", "Sent during the load"]


def test_mail_refuses_a_snapshot_folder_of_other_files(state_dir: Path, folder: Path) -> None:
    with Addons(state_dir, [MAILGUN], backend="native", say=quiet) as addons:
        [mailgun] = addons.start()
        ctx, _ = context_of(addons, state_dir, mailgun)
        send(mailgun, "Kept")
        meta = smtp_data.save(ctx, folder)
        send(mailgun, "Also kept")
        before = mailbox(state_dir, mailgun)
        stray = folder / meta["folder"] / "notes.txt"
        stray.write_text("not mail")
        with pytest.raises(AddonError) as error:
            verified_load(smtp_data, ctx, folder, meta)
        one_line(error, str(stray), "not a message dynosim captured")
        stray.unlink()
        shutil.rmtree(folder / meta["folder"])
        with pytest.raises(AddonError) as error:
            verified_load(smtp_data, ctx, folder, meta)
        one_line(error, str(folder / meta["folder"]), "missing")
        assert mailbox(state_dir, mailgun) == before
