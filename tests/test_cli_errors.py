"""Bad input to `dynosim run`: one clear line, a non-zero exit, no traceback, nothing left running."""

from __future__ import annotations

import socket

import psutil
import pytest
from conftest import free_port, make_app, run_dynosim


def assert_one_line_error(result, *needles: str) -> None:
    assert result.returncode != 0, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("dynosim: error: ")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert "Traceback" not in result.stdout + result.stderr


def assert_nothing_left(app) -> None:
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline", "cwd"])
        if str(app) in " ".join(p.info["cmdline"] or []) or str(app) == (p.info["cwd"] or "")
    ]
    assert not leftovers


def run(app, *args: str):
    return run_dynosim(app, "run", "--port", str(free_port()), *args)


def test_no_procfile(tmp_path):
    app = make_app(tmp_path)
    (app / "Procfile").unlink()
    assert_one_line_error(run(app), "no Procfile", "web:")


def test_procfile_without_a_process_type(tmp_path):
    app = make_app(tmp_path, procfile="# nothing here\nweb:\n")
    assert_one_line_error(run(app), "Procfile", "no process type")


def test_unparseable_and_duplicate_lines_are_warned_about_with_their_line(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="web: python crash.py\n!!garbage!!\nweb: python server.py\n")
    session = dynosim(app)
    session.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    assert session.stop() == 0
    out = session.output()
    assert "Procfile:2:" in out and "Procfile:3:" in out
    assert "Starting process with command `python server.py`" in out  # the last one wins, as on Heroku


def test_unknown_type_in_formation(tmp_path):
    assert_one_line_error(run(make_app(tmp_path), "--formation", "wrker=1"), '"wrker"', "web, worker")


def test_malformed_formation(tmp_path):
    assert_one_line_error(run(make_app(tmp_path), "--formation", "web:2"), "--formation", "TYPE=COUNT")


def test_dotenv_line_that_does_not_parse(tmp_path):
    app = make_app(tmp_path, __env="GOOD=1\nthis is not an assignment\n")
    assert_one_line_error(run(app), ".env:2")


def test_app_json_that_is_not_json(tmp_path):
    app = make_app(tmp_path, app__json='{"formation": {"web": {"quantity": 1}},}\n')
    assert_one_line_error(run(app), "app.json:1", "JSON")


def test_app_json_with_wrong_types(tmp_path):
    app = make_app(tmp_path, app__json='{"formation": {"web": {"quantity": "two"}}}\n')
    assert_one_line_error(run(app), "app.json", "formation.web.quantity")


def test_a_dependency_that_does_not_install(tmp_path):
    app = make_app(tmp_path, requirements__txt="dynosim-no-such-package-anywhere==9.9.9\n")
    result = run(app)
    assert_one_line_error(result, "pip", "dynosim-no-such-package-anywhere")
    assert_nothing_left(app)


def test_a_port_that_is_taken(tmp_path):
    app = make_app(tmp_path)
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_dynosim(app, "run", "--port", str(port))
    assert_one_line_error(result, f"port {port} is taken", "--port")
    assert_nothing_left(app)


@pytest.mark.parametrize("value", ["abc", "99999"])
def test_a_bad_port_in_the_environment(tmp_path, monkeypatch, value):
    monkeypatch.setenv("PORT", value)
    result = run_dynosim(make_app(tmp_path), "run")
    assert_one_line_error(result, "PORT=")


def test_a_second_run_in_the_same_app_is_refused(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="worker: python worker.py\n")
    first = dynosim(app)
    first.wait_for(r"app\[worker\.1\]: worker started")
    assert_one_line_error(run(app), "another dynosim run", "stop it first")
    assert first.stop() == 0


def test_a_nul_byte_in_a_config_value_is_refused_with_its_file_and_line(tmp_path):
    # no environment variable can carry one: it was a traceback from the dyno's spawn (issue 22)
    app = make_app(tmp_path, __env="GOOD=1\nBAD=a\x00b\n")
    assert_one_line_error(run(app), ".env:2: BAD's value holds a NUL byte", "remove it")
    (app / ".env").unlink()
    (app / "app.json").write_text('{"env": {"SECRET": {"value": "x\\u0000y"}}}')
    assert_one_line_error(run(app), "app.json: env.SECRET.value holds a NUL byte")
    assert_nothing_left(app)


def test_a_formation_past_herokus_scaling_limits_is_refused_before_a_dyno_starts(tmp_path):
    app = make_app(tmp_path, procfile="web: python server.py\nworker: python worker.py\n")
    assert_one_line_error(run(app, "--formation", "web=99999"), "100000 dynos in all", "limits an app to 100 dynos")
    assert_one_line_error(run(app, "--formation", "worker=11", "--size", "performance-m"), "worker=11", "to 10 at most")
    assert_one_line_error(run(app, "--formation", "web=2", "--size", "eco"), "web=2", "one per process type")
    assert_nothing_left(app)
