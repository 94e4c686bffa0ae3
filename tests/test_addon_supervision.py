"""A killed add-on server is recovered (issue 22): a real run of a writer dyno (trials/data_loss.py's app)
with native heroku-postgresql and heroku-redis; each server SIGKILLed as the user did, then the lines on
the log stream, the server back on the same port with every acknowledged write, the app writing again
through the same URL, and `dynosim addons` saying it crashed and was restarted. A server that cannot start
gets the crash back-off, not a busy loop, and the run still stops on SIGTERM. And the data-loss trial,
once."""

from __future__ import annotations

import json
import re
import signal
import sys
from datetime import datetime
from pathlib import Path

import psutil
import psycopg
import pytest
import redis
from conftest import ROOT, DynosimRun, need_docker, remove_app_containers, run_dynosim

from dynosim import api
from dynosim.control import request

if str(ROOT) not in sys.path:  # the trials are the repo's, no package's: `pytest` run from elsewhere
    sys.path.insert(0, str(ROOT))
from trials import data_loss

pytestmark = pytest.mark.timeout(420)

ADDONS = ("--addons", "native", "--addon", "heroku-postgresql", "--addon", "heroku-redis")
UP = r"heroku\[worker\.1\]: State changed from starting to up"


def _app(tmp_path: Path) -> Path:
    return data_loss.make_app(tmp_path / "app")


def _acked(lines: list[str], kind: str) -> set[str]:
    return {m[1] for line in lines if (m := re.search(rf"app\[worker\.1\]: ACK {kind} (\S+)$", line))}


def _server(app: Path, addon: str) -> dict[str, object]:
    done = run_dynosim(app, "addons", "--json")
    assert done.returncode == 0, done.stderr
    row = next(row for row in json.loads(done.stdout) if row["addon"] == addon)
    assert row["server"] is not None, row
    return dict(row["server"])


def _wait_acks(run: DynosimRun, kind: str, count: int) -> None:
    """Until the writer has acknowledged `count` writes of `kind` after the last line waited for."""
    for _ in range(count):
        run.wait_for(rf"app\[worker\.1\]: ACK {kind} ", 60, after_last=True)


def test_killed_postgres_and_redis_come_back_on_the_same_url_with_every_acknowledged_write(
    tmp_path: Path, dynosim: type[DynosimRun]
) -> None:
    app = _app(tmp_path)
    run = dynosim(app, *ADDONS, "--crash-backoff-scale", "0.001")
    run.wait_for(UP, timeout=240)
    config = api.config(app)
    db_url, kv_url = config["DATABASE_URL"], config["REDIS_URL"]
    _wait_acks(run, "pg", 20)

    # Postgres: the postmaster SIGKILLed, mid-writes
    server = _server(app, "heroku-postgresql")
    assert server["state"] == "up" and server["restarts"] == 0
    postmaster = psutil.Process(int(server["pid"]))  # type: ignore[call-overload]
    assert postmaster.name() == "postgres"
    name = server["name"]
    port = int(db_url.rsplit(":", 1)[1].split("/")[0])
    postmaster.send_signal(signal.SIGKILL)
    run.wait_for(
        rf"app\[heroku-postgres\]: heroku-postgresql \({name}\): the server exited unexpectedly \(killed by SIGKILL\); "
        rf"its clients' connections are lost\. Starting it again on port {port} with the same data, which PostgreSQL "
        "recovers from its WAL",
        after_last=True,
    )
    run.wait_for(
        rf"app\[heroku-postgres\]: heroku-postgresql \({name}\): the server is up again on port {port} in \d+ ms, "
        r"same data and credentials \(restarted once this run\)",
        60,
        after_last=True,
    )
    acked_before = _acked(run.drain(), "pg")
    run.wait_for(r"app\[worker\.1\]: ACK pg ", 60, after_last=True)  # the app's next connection, same URL
    assert api.config(app)["DATABASE_URL"] == db_url
    with psycopg.connect(db_url, connect_timeout=10) as conn:
        present = {row for (row,) in conn.execute("SELECT id FROM acked")}
    assert acked_before and acked_before <= present, sorted(acked_before - present)[:5]
    server = _server(app, "heroku-postgresql")
    assert (server["state"], server["crashes"], server["restarts"]) == ("up", 1, 1)
    assert server["last_exit"] == "killed by SIGKILL" and server["pid"] != postmaster.pid
    listing = run_dynosim(app, "addons")
    assert listing.returncode == 0, listing.stderr
    assert re.search(rf"heroku-postgresql \({name}\).*up \(restarted after 1 crash\)", listing.stdout), listing.stdout

    # Redis: the same, its append-only file as the plan has it
    _wait_acks(run, "redis", 20)
    server = _server(app, "heroku-redis")
    name = server["name"]
    client = redis.Redis.from_url(kv_url, ssl_cert_reqs=None, socket_timeout=10)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    client.close()
    psutil.Process(int(server["pid"])).send_signal(signal.SIGKILL)  # type: ignore[call-overload]
    run.wait_for(
        rf"app\[heroku-redis\]: heroku-redis \({name}\): the server exited unexpectedly \(killed by SIGKILL\).* "
        "which Redis reloads from its append-only file",
        after_last=True,
    )
    run.wait_for(rf"app\[heroku-redis\]: heroku-redis \({name}\): the server is up again on port", 60, after_last=True)
    acked_before = _acked(run.drain(), "redis")
    run.wait_for(r"app\[worker\.1\]: ACK redis ", 60, after_last=True)
    client = redis.Redis.from_url(kv_url, ssl_cert_reqs=None, socket_timeout=10)
    pipe = client.pipeline(transaction=False)
    keys = sorted(acked_before)
    for key in keys:
        pipe.exists(f"acked:{key}")
    missing = [key for key, there in zip(keys, pipe.execute(), strict=True) if not there]
    client.close()
    assert keys and not missing, missing[:5]
    assert _server(app, "heroku-redis")["restarts"] == 1

    # ps's data: each add-on's server after the dynos
    rows = request(app / ".dynosim", "ps", addons=True)
    servers = {row["addon"]: row for row in rows if row["type"] == "addon"}
    assert servers["heroku-postgresql"]["describe"] == "up (restarted after 1 crash)"
    assert servers["heroku-redis"]["restarts"] == 1
    assert all(row["type"] != "addon" for row in request(app / ".dynosim", "ps"))  # the dynos alone, as before
    shown = run_dynosim(app, "ps").stdout
    assert "=== add-on servers (2)" in shown, shown
    assert re.search(r"^postgresql-[a-z]+-\d+ \(heroku-postgresql\): up \(restarted after 1 crash\)$", shown, re.M)
    assert "=== worker (Standard-1X)" in shown
    assert run.stop() == 0


def test_a_killed_postgres_container_is_started_again_with_its_volume(
    tmp_path: Path, dynosim: type[DynosimRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    need_docker(monkeypatch)
    import docker

    app = _app(tmp_path)
    try:
        run = dynosim(app, "--addons", "docker", *ADDONS[2:], "--crash-backoff-scale", "0.001")
        run.wait_for(UP, timeout=240)
        db_url = api.config(app)["DATABASE_URL"]
        _wait_acks(run, "pg", 20)
        name = _server(app, "heroku-postgresql")["name"]
        client = docker.from_env(timeout=60)
        client.containers.get(f"dynosim-{name}").kill()  # `docker kill`: SIGKILL to its postgres
        client.close()
        run.wait_for(
            rf"app\[heroku-postgres\]: heroku-postgresql \({name}\): the server exited unexpectedly \(its container "
            r"was killed by SIGKILL\)",
            after_last=True,
        )
        run.wait_for(rf"\({name}\): the server is up again on port \d+ in \d+ ms, same data", 120, after_last=True)
        acked = _acked(run.drain(), "pg")
        run.wait_for(r"app\[worker\.1\]: ACK pg ", 60, after_last=True)
        with psycopg.connect(db_url, connect_timeout=10) as conn:
            present = {row for (row,) in conn.execute("SELECT id FROM acked")}
        assert acked and acked <= present, sorted(acked - present)[:5]
        server = _server(app, "heroku-postgresql")
        assert (server["state"], server["restarts"], server["pid"]) == ("up", 1, None)
        assert run.stop() == 0
        assert "exited unexpectedly" not in "\n".join(run.lines[-40:])  # the run's own stop is no crash
    finally:
        remove_app_containers(app / ".dynosim")


def _stamp(line: str) -> float:
    return datetime.fromisoformat(line.split(" ", 1)[0]).timestamp()


def test_a_server_that_cannot_start_gets_the_crash_back_off_and_the_run_still_stops_on_sigterm(
    tmp_path: Path, dynosim: type[DynosimRun]
) -> None:
    app = _app(tmp_path)
    run = dynosim(app, "--addons", "native", "--addon", "heroku-postgresql", "--crash-backoff-scale", "0.002")
    run.wait_for(UP, timeout=240)
    server = _server(app, "heroku-postgresql")
    name = str(server["name"])
    data = app / ".dynosim" / "addons" / name / "data"
    with open(data / "postgresql.conf", "a") as conf:  # every start from now on fails at once, as a real one
        conf.write("this is not a setting\n")
    psutil.Process(int(server["pid"])).send_signal(signal.SIGKILL)  # type: ignore[call-overload]
    run.wait_for(rf"heroku-postgresql \({name}\): the server exited unexpectedly \(killed by SIGKILL\)")
    waits = []
    for _ in range(2):
        found = run.wait_for(
            rf"app\[heroku-postgres\]: heroku-postgresql \({name}\): the server crashed again \(it did not start: "
            r"postgres exited with status 1 while starting: .*configuration file .* contains errors.*\); Heroku's "
            r"crash back-off starts it again in ([\d.]+)s",
            60,
            after_last=True,
        )
        waits.append((_stamp(found.string), float(found[1])))
    assert waits[1][1] == 2 * waits[0][1]  # 10 min, then 20, as a dyno's: 1.2 s and 2.4 s at this scale
    assert waits[1][0] - waits[0][0] >= waits[0][1]  # it waited before trying again: no busy loop
    state = _server(app, "heroku-postgresql")
    assert state["state"] in ("crashed", "starting") and int(state["crashes"]) >= 3 and state["restarts"] == 0  # type: ignore[call-overload]
    listing = run_dynosim(app, "addons")
    assert re.search(rf"\({name}\).*restarting \(crashed \d+ times\)", listing.stdout), listing.stdout

    run.supervisor().send_signal(signal.SIGTERM)  # in the back-off's wait
    assert run.proc.wait(60) == 0
    assert "is up again" not in run.output()
    left = [p for p in psutil.process_iter(["name", "cmdline"]) if str(data) in " ".join(p.info["cmdline"] or [])]
    assert left == []


def test_the_data_loss_trial_loses_no_acknowledged_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_loss, "WORK", tmp_path)
    result = data_loss.run(1, 22)
    assert result.failures == (), result.failures
    assert result.runs == 1 and re.match(r"0 of [\d,]+ acknowledged rows and 0 of [\d,]+ keys lost", result.figure)
    assert "fsync=on, synchronous_commit=on, full_page_writes=on" in result.figure, result.figure
