"""Faults on demand: switched on and off in a running app over its control socket, each said on the log
stream; a bad request is one line and leaves the app untouched."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import make_app, one_line_error, run_dynosim

from dynosim.errors import FaultError
from dynosim.faults import FaultRequest, parse_duration, parse_probability


def test_dyno_crash_kills_the_dyno_and_herokus_crash_policy_restarts_it(tmp_path: Path, dynosim) -> None:
    app = make_app(tmp_path)
    run = dynosim(app, "--formation", "web=2")
    run.wait_for(r"web\.2.*State changed from starting to up", timeout=120)
    run.wait_for(r"web\.1.*State changed from starting to up", timeout=60)

    added = run_dynosim(app, "faults:add", "dyno-crash", "--target", "web.1", "--seed", "7")
    assert added.returncode == 0, added.stderr
    assert re.fullmatch(r"Adding dyno-crash on web\.1\.\.\. done, f1 \(seed 7\)\n", added.stdout)
    run.wait_for(r"dynosim\[faults\]: f1 dyno-crash on web\.1 started \(seed 7\)")
    run.wait_for(r"dynosim\[faults\]: f1: SIGKILL to web\.1 \(pid \d+\)")
    run.wait_for(r"heroku\[web\.1\]: Process exited with status 137")
    run.wait_for(r"heroku\[web\.1\]: State changed from up to crashed")
    run.wait_for(r"heroku\[web\.1\]: State changed from crashed to starting")
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    assert "web.2: Process exited" not in run.output() and "heroku[web.2]: Process exited" not in run.output()
    listed = run_dynosim(app, "faults", "--json")
    assert json.loads(listed.stdout) == []  # a one-shot fault is over once it struck
    assert run.stop() == 0


def test_bad_requests_are_one_line_and_the_app_runs_on(tmp_path: Path, dynosim) -> None:
    app = make_app(tmp_path)
    run = dynosim(app)
    run.wait_for(r"web\.1.*State changed from starting to up", timeout=120)
    one_line_error(
        run_dynosim(app, "faults:add", "dyno-explode", "--target", "web"),
        'unknown fault kind "dyno-explode"',
        "dyno-crash",
    )
    one_line_error(
        run_dynosim(app, "faults:add", "dyno-crash", "--target", "web.9"), 'no dyno or process type "web.9"', "web.1"
    )
    one_line_error(run_dynosim(app, "faults:add", "dyno-crash"), "needs --target")
    one_line_error(
        run_dynosim(app, "faults:add", "dyno-crash", "--target", "web", "--probability", "2"),
        "--probability",
        "outside 0..1",
    )
    one_line_error(
        run_dynosim(app, "faults:add", "dyno-crash", "--target", "web", "--for", "ten"),
        "--for",
        '"ten" is not a duration',
    )
    one_line_error(run_dynosim(app, "faults:remove", "f9"), "no fault f9 is on")
    assert "dynosim[faults]" not in run.output()
    assert "heroku[web.1]: State changed from up" not in run.output()  # web.1 was never touched
    assert run.stop() == 0


def test_without_a_run_faults_say_so(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    done = run_dynosim(app, "faults:add", "dyno-crash", "--target", "web")
    assert done.returncode == 2
    one_line_error(done, "no dynosim run is active", "start one with `dynosim run`")


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10.0), ("200ms", 0.2), ("2m", 120.0), ("1.5", 1.5), (3, 3.0)])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text, "--for") == seconds


def test_plan_entries_are_checked_naming_where() -> None:
    with pytest.raises(FaultError, match=r'faults\[0\]: unknown field "latancy"'):
        FaultRequest.from_json({"kind": "router-latency", "latancy": "1s"}, "faults[0]")
    with pytest.raises(FaultError, match=r"faults\[1\]: probability: 1.5 is outside 0..1"):
        FaultRequest.from_json({"kind": "router-error", "probability": 1.5}, "faults[1]")
    with pytest.raises(FaultError, match="is not a probability"):
        parse_probability("often", "--probability")
    request = FaultRequest.from_json({"kind": "addon-outage", "target": "heroku-postgresql", "for": "5s"}, "x")
    assert FaultRequest.from_json(request.as_json(), "x") == request
