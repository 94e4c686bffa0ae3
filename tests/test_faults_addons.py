"""The add-on fault kinds on both backends, seen as the app's own clients see them (psycopg, redis-py
against the add-on's URL): addon-outage and addon-restart (the real connection errors, then the server
back on its port), addon-latency (slower round trips only while it is on), redis-oom (Redis's own OOM
error on writes, reads served), addon-failover (a new port, new config vars, a new release, every dyno
restarted). Every acknowledged write made before and during a fault is read back after it."""

from __future__ import annotations

import random
import time
import urllib.parse
from pathlib import Path

import psycopg
import pytest
import redis
from conftest import make_app, remove_app_containers, run_dynosim
from test_faults import one_line_error

from dynosim import api
from dynosim.faults.client import AppFaults

ADDONS = ("--addon", "heroku-postgresql", "--addon", "heroku-redis")


def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, ssl_cert_reqs=None, socket_timeout=10)  # its certificate is self-signed


def _start(dynosim, tmp_path: Path, backend: str):
    app = make_app(tmp_path)
    run = dynosim(app, *ADDONS, "--addons", backend)
    run.wait_for(r"web\.1.*State changed from starting to up", timeout=180)
    return app, run


def _port(url: str) -> int:
    return urllib.parse.urlsplit(url).port or 0


def _rows(url: str) -> list[int]:
    with psycopg.connect(url, connect_timeout=10) as conn:
        return [n for (n,) in conn.execute("SELECT n FROM acked ORDER BY n")]


def _insert(url: str, *numbers: int) -> None:
    with psycopg.connect(url, connect_timeout=10, autocommit=True) as conn:
        for n in numbers:
            conn.execute("INSERT INTO acked VALUES (%s)", (n,))


def test_outage_restart_and_oom_refuse_clients_with_the_real_errors_and_keep_every_write(
    tmp_path: Path, dynosim, addon_backend: str
) -> None:
    app, run = _start(dynosim, tmp_path, addon_backend)
    try:
        config = api.config(app)
        db, kv = config["DATABASE_URL"], config["REDIS_URL"]
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("CREATE TABLE acked (n int PRIMARY KEY)")
        _insert(db, 1, 2)
        _redis(kv).set("before", "1")
        faults = AppFaults(app)

        # addon-outage on Postgres, from the CLI: down, the real error, back on its port
        added = run_dynosim(app, "faults:add", "addon-outage", "--target", "heroku-postgresql", "--for", "3s")
        assert added.returncode == 0, added.stderr
        run.wait_for(r"dynosim\[faults\]: f1 addon-outage on heroku-postgresql for 3s started")
        run.wait_for(r"dynosim\[faults\]: f1: heroku-postgresql \(postgresql-[a-z]+-\d+\) is down \(fast shutdown")
        with pytest.raises(psycopg.OperationalError, match=r"connection .* failed: Connection refused"):
            psycopg.connect(db, connect_timeout=5)
        _redis(kv).set("during-pg-outage", "1")  # the other add-on is untouched
        run.wait_for(rf"dynosim\[faults\]: f1: heroku-postgresql \(.*\) is up again on port {_port(db)}, same data", 30)
        run.wait_for(r"dynosim\[faults\]: f1 addon-outage on heroku-postgresql for 3s ended \(over")
        _insert(db, 3)
        assert _rows(db) == [1, 2, 3]

        # addon-outage on Redis, from the API, as a context manager, right after a burst of writes
        burst = _redis(kv).pipeline(transaction=False)
        for i in range(500):
            burst.set(f"burst:{i}", i)
        assert all(burst.execute())
        with faults.addon_outage("heroku-redis"):
            run.wait_for(r"dynosim\[faults\]: f2: heroku-redis \(redis-[a-z]+-\d+\) is down \(SIGTERM")
            with pytest.raises(redis.ConnectionError):
                _redis(kv).get("before")
        run.wait_for(rf"dynosim\[faults\]: f2: heroku-redis \(.*\) is up again on port {_port(kv)}, same data")
        assert _redis(kv).mget("before", "during-pg-outage") == [b"1", b"1"]
        assert _redis(kv).mget([f"burst:{i}" for i in range(500)]) == [str(i).encode() for i in range(500)]

        # addon-restart: an open connection is dropped, the next one works at once, same data
        held = psycopg.connect(db, autocommit=True)
        held.execute("INSERT INTO acked SELECT generate_series(100, 299)")  # committed just before
        began = time.monotonic()
        faults.addon_restart("heroku-postgresql")
        took = time.monotonic() - began
        assert took < 30, took  # a docker container's restart included; natively well under a second
        run.wait_for(r"dynosim\[faults\]: f3 addon-restart on heroku-postgresql ended \(done")
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
        held.close()
        _insert(db, 4)
        assert _rows(db) == [1, 2, 3, 4, *range(100, 300)]

        # redis-oom: writes get Redis's own error, reads are served, the old limits come back
        client = _redis(kv)
        limit = client.config_get("maxmemory")["maxmemory"]
        policy = client.config_get("maxmemory-policy")["maxmemory-policy"]
        with faults.redis_oom("heroku-redis"):
            run.wait_for(r"dynosim\[faults\]: f4: heroku-redis \(.*\) is full")
            with pytest.raises(redis.exceptions.OutOfMemoryError) as refused:
                client.set("during-oom", "x")
            # the server's own "OOM command not allowed…": redis-py keeps the words, drops the code for the class
            assert str(refused.value) == "command not allowed when used memory > 'maxmemory'."
            assert client.get("before") == b"1"
        run.wait_for(r"dynosim\[faults\]: f4: heroku-redis \(.*\): maxmemory \d+ and [a-z-]+ again, as before")
        assert client.config_get("maxmemory")["maxmemory"] == limit
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == policy
        client.set("after-oom", "1")
        assert client.mget("before", "during-pg-outage", "during-oom", "after-oom") == [b"1", b"1", None, b"1"]
        assert "Traceback" not in run.output()
        assert run.stop() == 0
    finally:
        remove_app_containers(app / ".dynosim")


def test_addon_latency_slows_every_round_trip_only_while_it_is_on(tmp_path: Path, dynosim, addon_backend: str) -> None:
    app, run = _start(dynosim, tmp_path, addon_backend)
    try:
        config = api.config(app)
        db, kv = config["DATABASE_URL"], config["REDIS_URL"]
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("CREATE TABLE acked (n int PRIMARY KEY)")
        _insert(db, 1)

        def round_trip(conn: psycopg.Connection) -> float:
            began = time.monotonic()
            conn.execute("SELECT 1").fetchone()
            return time.monotonic() - began

        with AppFaults(app).addon_latency("heroku-postgresql", 0.3):
            run.wait_for(r"dynosim\[faults\]: f1: heroku-postgresql \(.*\) is up again on port \d+, .*behind the proxy")
            run.wait_for(r"dynosim\[faults\]: f1: heroku-postgresql \(.*\): a proxy on port \d+ adds 300 ms")
            with psycopg.connect(db, autocommit=True, connect_timeout=30) as conn:
                assert min(round_trip(conn) for _ in range(3)) >= 0.3
                conn.execute("INSERT INTO acked VALUES (2)")
            assert AppFaults(app).active()[0]["latency"] == 0.3
        run.wait_for(r"dynosim\[faults\]: f1 addon-latency on heroku-postgresql \+300ms ended \(removed")
        with psycopg.connect(db, autocommit=True) as conn:
            assert min(round_trip(conn) for _ in range(3)) < 0.1
        assert _rows(db) == [1, 2]

        # on Redis from the CLI, off by itself after --for: a GET over rediss:// waits too
        client = _redis(kv)
        client.set("k", "v")
        added = run_dynosim(
            app, "faults:add", "addon-latency", "--target", "REDIS_URL", "--latency", "200ms", "--for", "20s"
        )
        assert added.returncode == 0, added.stderr
        run.wait_for(r"dynosim\[faults\]: f2: heroku-redis \(.*\): a proxy on port \d+ adds 200 ms")
        slow = _redis(kv)
        slow.ping()
        began = time.monotonic()
        assert slow.get("k") == b"v"
        assert time.monotonic() - began >= 0.2
        slow.set("during", "1")
        assert run_dynosim(app, "faults:clear").returncode == 0
        run.wait_for(r"dynosim\[faults\]: f2 addon-latency on REDIS_URL \+200ms for 20s ended \(cleared")
        assert _redis(kv).mget("k", "during") == [b"v", b"1"]

        # with --probability, the share of connections its seed picks as they open; the others at full speed
        AppFaults(app).addon_latency("heroku-redis", 0.2, probability=0.5, seed=3)
        run.wait_for(r"dynosim\[faults\]: f3: heroku-redis \(.*\): a proxy on port \d+ adds 200 ms")
        picks = random.Random(3)
        expected = [picks.random() < 0.5 for _ in range(6)]
        slowed = []
        for _ in range(6):
            client = _redis(kv)
            client.ping()  # the connection, opened
            began = time.monotonic()
            client.ping()
            slowed.append(time.monotonic() - began >= 0.2)
            client.close()
        assert slowed == expected and any(expected) and not all(expected)
        assert run.stop() == 0
    finally:
        remove_app_containers(app / ".dynosim")


def test_addon_failover_moves_the_server_changes_the_url_and_restarts_every_dyno(
    tmp_path: Path, dynosim, addon_backend: str
) -> None:
    app, run = _start(dynosim, tmp_path, addon_backend)
    try:
        config = api.config(app)
        db, kv = config["DATABASE_URL"], config["REDIS_URL"]
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute("CREATE TABLE acked (n int PRIMARY KEY)")
        _insert(db, 1, 2)
        _redis(kv).set("acked", "1")
        version = api.releases(app)[0]["version"]

        AppFaults(app).addon_failover("heroku-postgresql")
        run.wait_for(r"dynosim\[faults\]: f1: heroku-postgresql \(.*\): a standby is promoted, on port \d+")
        run.wait_for(r"app\[api\]: Update DATABASE by heroku-postgresql by user heroku-postgresql@addons\.heroku\.com")
        run.wait_for(r"web\.1.*State changed from starting to up", after_last=True, timeout=60)
        moved = api.config(app)["DATABASE_URL"]
        run.wait_for(rf"dynosim\[faults\]: f1: heroku-postgresql \(.*\) is up again on port {_port(moved)}, same data")
        assert moved != db and moved.rsplit(":", 1)[0] == db.rsplit(":", 1)[0]  # same credentials, another port
        assert api.config(app)["HEROKU_POSTGRESQL_" + _color(config) + "_URL"] == moved
        [latest, *_] = api.releases(app)
        assert latest["version"] == version + 1 and latest["description"] == "Update DATABASE by heroku-postgresql"
        with pytest.raises(psycopg.OperationalError, match="Connection refused"):  # who cached the old URL
            psycopg.connect(db, connect_timeout=5)
        assert _rows(moved) == [1, 2]
        _insert(moved, 3)

        AppFaults(app).addon_failover("heroku-redis")
        run.wait_for(r"app\[api\]: Update REDIS by heroku-redis by user heroku-redis@addons\.heroku\.com")
        new_kv = api.config(app)["REDIS_URL"]
        assert new_kv != kv
        with pytest.raises(redis.ConnectionError):
            _redis(kv).get("acked")
        assert _redis(new_kv).get("acked") == b"1"
        assert run.stop() == 0

        # the next run starts them where the failover left them, with every write
        run = dynosim(app, *ADDONS, "--addons", addon_backend)
        run.wait_for(r"web\.1.*State changed from starting to up", timeout=180)
        assert api.config(app)["DATABASE_URL"] == moved
        assert _rows(moved) == [1, 2, 3]
        assert run.stop() == 0
    finally:
        remove_app_containers(app / ".dynosim")


def _color(config: dict[str, str]) -> str:
    [name] = [k for k in config if k.startswith("HEROKU_POSTGRESQL_") and k.endswith("_URL")]
    return name.removeprefix("HEROKU_POSTGRESQL_").removesuffix("_URL")


def test_a_target_or_kind_that_does_not_fit_is_one_line_and_nothing_changes(tmp_path: Path, dynosim) -> None:
    app, run = _start(dynosim, tmp_path, "native")
    db = api.config(app)["DATABASE_URL"]
    one_line_error(
        run_dynosim(app, "faults:add", "redis-oom", "--target", "heroku-postgresql"),
        "redis-oom acts on heroku-redis add-ons",
        "is heroku-postgresql",
    )
    one_line_error(
        run_dynosim(app, "faults:add", "addon-outage", "--target", "heroku-kafka"),
        'the running app has no add-on "heroku-kafka"',
        "heroku-postgresql (postgresql-",
    )
    one_line_error(run_dynosim(app, "faults:add", "addon-restart", "--target", "web"), 'no add-on "web"')
    one_line_error(run_dynosim(app, "faults:add", "addon-failover"), "needs --target")
    one_line_error(
        run_dynosim(app, "faults:add", "addon-latency", "--target", "heroku-redis"),
        "addon-latency needs --latency, like --latency 200ms",
    )
    one_line_error(
        run_dynosim(app, "faults:add", "addon-outage", "--target", "heroku-redis", "--probability", "0.5"),
        "addon-outage takes no --probability",
    )
    assert "dynosim[faults]" not in run.output()
    with psycopg.connect(db, connect_timeout=5) as conn:  # never stopped
        assert conn.execute("SELECT 1").fetchone() == (1,)

    # one fault at a time on an add-on's server
    assert run_dynosim(app, "faults:add", "addon-outage", "--target", "heroku-redis").returncode == 0
    run.wait_for(r"dynosim\[faults\]: f1: heroku-redis \(.*\) is down")
    one_line_error(
        run_dynosim(app, "faults:add", "addon-latency", "--target", "heroku-redis", "--latency", "1s"),
        "another fault has redis-",
        "its server is stopped",
    )
    one_line_error(run_dynosim(app, "faults:add", "redis-oom", "--target", "heroku-redis"), "its server is stopped")
    assert run_dynosim(app, "faults:remove", "f1").returncode == 0
    run.wait_for(r"dynosim\[faults\]: f1: heroku-redis \(.*\) is up again")

    # a run stopped during an outage puts the server back first, then stops it as every run's end does
    assert run_dynosim(app, "faults:add", "addon-outage", "--target", "heroku-postgresql").returncode == 0
    assert run.stop() == 0
    assert "dynosim[faults]: f2 addon-outage on heroku-postgresql ended (cleared" in run.output()
    assert "Traceback" not in run.output()
    run = dynosim(app, *ADDONS, "--addons", "native")
    run.wait_for(r"web\.1.*State changed from starting to up", timeout=180)
    with psycopg.connect(db, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert run.stop() == 0
