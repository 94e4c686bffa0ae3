"""Heroku Key-Value Store as operated: each plan's limits on the real Redis server (memory, clients, idle
timeout, eviction policy), redis:info, redis:maxmemory, redis:timeout, redis:credentials [--reset], on
both backends, seen through redis-py as an app sees them."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from conftest import make_app, ok, one_line_error, remove_app_containers, run_dynosim

from dynosim import api
from dynosim.addons import STATE_FILE, Addons, app_requests
from dynosim.addons.plans import redis_plan
from dynosim.app import load_app

MB = 1024**2


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    folder = make_app(tmp_path)
    yield folder
    remove_app_containers(folder / ".dynosim")


@contextmanager
def started(app: Path, backend: str) -> Iterator[str]:
    """The app's add-ons started as a run starts them; the REDIS_URL."""
    state = app / ".dynosim"
    requests = app_requests(load_app(app).manifest.addons, state)
    with Addons(state, requests, backend=backend, say=lambda _: None) as addons:
        [attachment] = addons.start()
        yield attachment.config_vars["REDIS_URL"]


def client(url: str) -> redis.Redis:
    if url.startswith("rediss://"):
        return redis.Redis.from_url(url, ssl_cert_reqs=None)  # Heroku's certificates are self-signed too
    return redis.Redis.from_url(url)


def connected_clients(url: str) -> int:
    return int(client(url).info("clients")["connected_clients"])


def test_heroku_plans_and_their_numbers() -> None:
    # devcenter.heroku.com/articles/heroku-redis-technical-characterization
    mini = redis_plan("heroku-redis:mini")
    assert (mini.maxmemory, mini.clients, mini.timeout, mini.policy) == (25 * MB, 20, 300, "noeviction")
    assert redis_plan("heroku-key-value-store") == mini
    assert (redis_plan("heroku-redis:premium-4").maxmemory, redis_plan("heroku-redis:premium-4").clients) == (
        750 * MB,
        700,
    )
    assert redis_plan("heroku-redis:shield-14").clients == 65000


def test_a_plan_heroku_does_not_have_is_one_line_and_nothing_is_written(app: Path) -> None:
    one_line_error(run_dynosim(app, "addons:create", "heroku-redis:premium-6"), 'no plan "premium-6"', "mini")
    one_line_error(run_dynosim(app, "addons:create", "heroku-key-value-store:hobby-dev"), "end-of-life", "mini")
    assert not (app / ".dynosim" / STATE_FILE).exists()
    (app / "app.json").write_text(json.dumps({"addons": ["heroku-redis:huge"]}))
    one_line_error(run_dynosim(app, "config"), 'no plan "huge"')


def test_mini_refuses_writes_past_25_mb_and_a_21st_client(app: Path, addon_backend: str) -> None:
    ok(run_dynosim(app, "addons:create", "heroku-redis:mini", "--backend", addon_backend))
    with started(app, addon_backend) as url:
        writer = client(url)
        with pytest.raises(redis.exceptions.OutOfMemoryError) as refused:
            for i in range(40):  # 40 MB into 25
                writer.set(f"key:{i}", b"x" * MB)
        # the server's own words (redis-py drops the OOM code): "OOM command not allowed when used memory > 'maxmemory'."
        assert str(refused.value) == "command not allowed when used memory > 'maxmemory'."
        assert 15 <= writer.dbsize() < 25
        writer.close()

        # Over rediss://, as on Heroku, Redis turns the 21st client away before the TLS handshake, so it
        # cannot say why (networking.c: "for TLS connections … nothing is written and the connection will
        # just drop"): the client sees the connection close, as an EOF or, when the close finds the client's
        # handshake unread, a reset. Over plain redis:// it says (the next test).
        held = fill_clients(url)
        with pytest.raises(redis.exceptions.ConnectionError, match=r"EOF|Connection reset by peer"):
            client(url).ping()
        assert held[0].info("stats")["rejected_connections"] == 1
        held.pop().close()
        assert client(url).ping() is True  # the 20th place is free again
        for one in held:
            one.close()


def test_a_21st_client_over_plain_redis_gets_the_servers_words(app: Path, addon_backend: str) -> None:
    (app / "app.json").write_text(json.dumps({"addons": [{"plan": "heroku-redis:mini", "options": {"tls": False}}]}))
    with started(app, addon_backend) as url:
        held = fill_clients(url)
        with pytest.raises(redis.exceptions.ConnectionError, match=r"^max number of clients reached$"):
            client(url).ping()
        for one in held:
            one.close()


def fill_clients(url: str) -> list[redis.Redis]:
    """mini's 20 connections, each in use. Heroku's connection limit is the server's maxclients, so every
    client counts (its own monitoring's too: not found); dynosim's readiness probe has hung up by now,
    and this waits until the server has seen it go."""
    deadline = time.monotonic() + 5
    while connected_clients(url) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    held = [client(url) for _ in range(20)]
    for one in held:
        one.ping()
    return held


def test_maxmemory_and_timeout_change_the_server_and_every_later_start(app: Path, addon_backend: str) -> None:
    ok(run_dynosim(app, "addons:create", "heroku-redis", "--backend", addon_backend))
    name = json.loads((app / ".dynosim" / STATE_FILE).read_text())["addons"][0]["name"]
    said = ok(run_dynosim(app, "redis:maxmemory", "--addons", addon_backend, "-p", "allkeys-lru"))
    assert said.splitlines() == [
        f"Maxmemory policy for {name} (REDIS_URL) set to allkeys-lru.",
        "allkeys-lru removes less recently used keys first.",
    ]
    said = ok(run_dynosim(app, "redis:timeout", "--addons", addon_backend, "--seconds", "2"))
    assert said.splitlines() == [
        f"Timeout for {name} (REDIS_URL) set to 2 seconds.",
        "Connections to the Redis instance will be stopped after idling for 2 seconds.",
    ]
    info = ok(run_dynosim(app, "redis:info", "--addons", addon_backend)).splitlines()
    assert info[0] == f"=== {name} (REDIS_URL)"
    fields = dict(line.split(":", 1) for line in info[1:])
    assert {k: v.strip() for k, v in fields.items() if k in ("Plan", "Timeout", "Maxmemory")} == {
        "Plan": "Mini",
        "Timeout": "2",
        "Maxmemory": "allkeys-lru",
    }
    assert fields["Version"].strip().startswith(("6.", "7."))

    with started(app, addon_backend) as url:
        writer = client(url)
        for i in range(60):  # 60 MB into 25: the oldest keys go instead of the writes failing
            writer.set(f"key:{i}", b"x" * MB)
        # Redis's LRU is sampled, so which old keys went varies; that 35 or more went does not
        assert writer.exists("key:59") and writer.dbsize() < 25 and writer.info("stats")["evicted_keys"] >= 35

        parts = urllib.parse.urlsplit(url)
        idle = redis.connection.SSLConnection(
            host=parts.hostname, port=parts.port, password=parts.password, ssl_cert_reqs=None
        )
        idle.connect()
        time.sleep(3.5)  # Redis checks idle clients about ten times a second
        with pytest.raises(redis.exceptions.ConnectionError):
            idle.send_command("PING")
            idle.read_response()


def test_bad_input_is_one_line_and_changes_nothing(app: Path) -> None:
    ok(run_dynosim(app, "addons:create", "heroku-redis"))
    before = (app / ".dynosim" / STATE_FILE).read_text()
    one_line_error(run_dynosim(app, "redis:maxmemory", "-p", "lru"), '"lru"', "allkeys-lru", "volatile-ttl")
    one_line_error(run_dynosim(app, "redis:timeout", "-s", "-5"), "--seconds -5", "0 or more")
    one_line_error(run_dynosim(app, "redis:info", "CACHE"), 'no add-on "CACHE"')
    one_line_error(run_dynosim(app, "redis:credentials", "--reset"), "--confirm app")
    one_line_error(run_dynosim(app, "redis:credentials", "--reset", "--confirm", "other"), "did not match app")
    assert (app / ".dynosim" / STATE_FILE).read_text() == before
    assert run_dynosim(app, "redis:timeout", "-s", "soon").returncode == 2  # click's usage error names -s


def test_credentials_reset_without_a_run(app: Path, addon_backend: str) -> None:
    ok(run_dynosim(app, "addons:create", "heroku-redis", "--backend", addon_backend))
    old = ok(run_dynosim(app, "redis:credentials", "--addons", addon_backend)).strip()
    assert old == api.config(app)["REDIS_URL"]
    name = json.loads((app / ".dynosim" / STATE_FILE).read_text())["addons"][0]["name"]
    said = ok(run_dynosim(app, "redis:credentials", "--addons", addon_backend, "--reset", "--confirm", "app"))
    assert said == f"Resetting credentials for {name}\n"
    new = api.config(app)["REDIS_URL"]
    assert new != old and urllib.parse.urlsplit(new).port == urllib.parse.urlsplit(old).port
    with started(app, addon_backend) as url:
        assert url == new and client(new).ping() is True
        with pytest.raises(redis.exceptions.AuthenticationError, match="invalid username-password pair"):
            client(old).ping()


def _env(port: int) -> dict[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        return dict(json.load(response)["env"])


def test_credentials_reset_in_a_running_app_closes_connections_and_restarts_its_dynos(
    app: Path, addon_backend: str, dynosim
) -> None:
    ok(run_dynosim(app, "addons:create", "heroku-redis", "--backend", addon_backend))
    run = dynosim(app, "--addons", addon_backend)
    run.wait_for(r"web\.1.*State changed from starting to up", timeout=120)
    old = _env(run.port)["REDIS_URL"]
    held = redis.connection.SSLConnection(
        host="127.0.0.1", port=urllib.parse.urlsplit(old).port, password=urllib.parse.urlsplit(old).password,
        ssl_cert_reqs=None,
    )  # fmt: skip
    held.connect()

    said = run_dynosim(app, "redis:credentials", "--reset", "--confirm", "app")
    assert ok(said).startswith("Resetting credentials for redis-")
    assert "every dyno restarts with the new REDIS_URL" in said.stderr
    run.wait_for(r"app\[api\]: Update REDIS by heroku-redis by user heroku-redis@addons\.heroku\.com")
    run.wait_for(r"web\.1.*State changed from starting to up", after_last=True, timeout=60)

    with pytest.raises(redis.exceptions.ConnectionError):  # the server closed what the old password opened
        held.send_command("PING")
        held.read_response()
    with pytest.raises(redis.exceptions.AuthenticationError, match="invalid username-password pair"):
        client(old).ping()
    new = _env(run.port)["REDIS_URL"]
    assert new != old and client(new).ping() is True
    assert api.releases(app)[0]["description"] == "Update REDIS by heroku-redis"

    # with the run active, a verb changes the running server at once (and starts nothing: no "Starting")
    said = run_dynosim(app, "redis:timeout", "-s", "7")
    assert ok(said).startswith("Timeout for redis-") and "Starting" not in said.stderr
    assert client(new).config_get("timeout") == {"timeout": "7"}
    assert run.stop() == 0
