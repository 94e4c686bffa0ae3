"""The Python API and the pytest plugin, used as a test suite would use them."""

from __future__ import annotations

import re
import time

import pytest
from conftest import CACHE_DIR, FIXTURES

import dynosim
from dynosim.errors import DynosimError


def test_the_fixture_runs_an_app_and_restarts_it_on_a_fresh_filesystem(dynosim_app):
    app = dynosim_app(FIXTURES / "dynolab", formation="web=1,worker=1", cache_dir=CACHE_DIR)
    assert app.dynos() == {"web.1": "up", "worker.1": "up"}
    body = app.get("/", headers={"X-Request-Id": "a-client-request-id-1234"}).json()
    assert body["dyno"] == "web.1"
    # through Heroku's router: its headers reach the dyno
    assert body["env"]["PORT"] != str(app.port)
    headers = {k.lower(): v for k, v in body["headers"].items()}
    assert headers["x-request-id"] == "a-client-request-id-1234" and headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-for"] == "127.0.0.1" and headers["x-forwarded-port"] == "80"
    assert headers["via"] == "1.1 vegur" and abs(int(headers["x-request-start"]) / 1000 - time.time()) < 60
    app.logs.wait_for(
        r'heroku\[router\]: at=info method=GET path="/" .*request_id=a-client-request-id-1234 .*dyno=web\.1 .*status=200'
    )
    app.get("/write/notes.txt")
    assert app.get("/read/notes.txt").text == "written by web.1"
    assert app.restart("web.1") == ["web.1"]
    assert app.get("/read/notes.txt").text == "missing"
    app.logs.wait_for(r"dynosim\[web\.1\]: the restart discards 1 file\(s\)")
    assert [loss.path for loss in app.ephemeral.losses] == ["notes.txt"]


def test_exec_cycle_and_logs(dynosim_app):
    app = dynosim_app(FIXTURES / "dynolab", formation="web=1,worker=0", cache_dir=CACHE_DIR)
    status, output = app.exec("echo $DYNO; exit 3")
    assert status == 3 and re.fullmatch(r"run\.\d{4}", output)
    started = time.time()
    app.get("/sqlite/app.db")
    writes: list = []
    while not writes and time.time() - started < 1.0:  # in the ledger within a second
        writes = [w for w in app.ephemeral.writes if w.path.endswith("app.db")]
        time.sleep(0.01)
    assert writes and writes[0].dyno == "web.1" and writes[0].time - started < 1.0
    assert app.cycle("web") == ["web.1"]
    line = app.logs.wait_for(r"SQLite database: app\.db")
    assert line.source == "dynosim" and line.dyno == "web.1"
    assert app.logs.search(r"heroku\[web\.1\]: Cycling")


def test_two_apps_from_one_folder_do_not_collide(dynosim_app):
    first = dynosim_app(FIXTURES / "dynolab", formation="web=1,worker=0", cache_dir=CACHE_DIR)
    second = dynosim_app(FIXTURES / "dynolab", formation="web=1,worker=0", cache_dir=CACHE_DIR)
    assert first.port != second.port
    first.get("/write/mine.txt")
    assert second.get("/read/mine.txt").text == "missing"


def test_a_forwarded_port_mode_that_does_not_exist_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(DynosimError, match=r"^forwarded_port is '443': use one of heroku, public$"):
        dynosim.App(tmp_path, forwarded_port="443")
    assert list(tmp_path.iterdir()) == []  # nothing made


def test_the_app_offers_every_operation_of_the_cli(dynosim_app):
    app = dynosim_app(FIXTURES / "dynolab", formation="web=1,worker=0", cache_dir=CACHE_DIR)
    assert app.scale({"worker": 1})["worker"] == 1
    assert app.dynos() == {"web.1": "up", "worker.1": "up"}
    version = app.config_set({"GREETING": "hi"})
    assert app.config()["GREETING"] == "hi" and app.get("/").json()["env"]["GREETING"] == "hi"
    [latest, *_] = app.releases()
    assert (latest["version"], latest["description"], latest["current"]) == (version, "Set GREETING config vars", True)
    assert app.config_unset("GREETING") == version + 1 and "GREETING" not in app.get("/").json()["env"]
    assert app.maintenance(True) is True and app.get("/").status == 503
    assert app.maintenance(False) is False and app.get("/").status == 200
    assert app.resize({"web": "standard-2x"})["web"] == "standard-2x"
    assert app.get("/").json()["env"]["DYNO_RAM"] == "1024"
    assert [row["name"] for row in app.ps()] == ["web.1", "worker.1"]
    with pytest.raises(DynosimError, match=r"^no dyno or process type 'clock' is running$"):
        app.restart("clock")
    status, name = app.exec("echo $DYNO")  # by the CLI's path: the run's one-off, in its logs
    assert status == 0 and re.fullmatch(r"run\.\d{4}", name)
    app.logs.wait_for(r"app\[api\]: Starting process with command `echo \$DYNO` by user ")
    app.logs.wait_for(rf"heroku\[{name}\]: State changed from up to complete")
