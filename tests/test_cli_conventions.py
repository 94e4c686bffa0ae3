"""The conventions users bring from `heroku local`, honcho and other tools: `run -f` is the Procfile and
`-e` an env file, colour follows NO_COLOR and --no-color, and the old `-f` (the formation) still works."""

from __future__ import annotations

import json
import os
import re
import sys

import pytest
from conftest import CACHE_DIR, free_port, make_app, run_dynosim
from test_cli_errors import assert_one_line_error

COLOUR = re.compile(r"\x1b\[[0-9;]*m")  # an SGR sequence: colour (or bold)


def test_f_names_another_procfile(tmp_path, dynosim):
    app = make_app(tmp_path, Procfile__worker="worker: python worker.py\n")  # the app's own has web, worker, release
    run = dynosim(app, "-f", str(app / "Procfile.worker"))
    run.wait_for(r"heroku\[worker\.1\]: State changed from starting to up")
    assert [row["name"] for row in json.loads(run_dynosim(app, "ps", "--json").stdout)] == ["worker.1"]
    assert run.stop() == 0
    assert "release" not in run.output() and "web.1" not in run.output()


def test_e_names_the_env_file_for_the_run_and_its_config_changes(tmp_path, dynosim):
    app = make_app(
        tmp_path,
        procfile='worker: echo "greeting=$GREETING"; python worker.py\n',
        __env="GREETING=from-dotenv\n",
        __env__test="GREETING=from-env-test\n",
    )
    run = dynosim(app, "--env", ".env.test")
    run.wait_for(r"app\[worker\.1\]: greeting=from-env-test")
    assert run_dynosim(app, "config:get", "GREETING").stdout == "from-env-test\n"
    assert run_dynosim(app, "config:set", "OTHER=1").returncode == 0  # a new release, still from .env.test
    run.wait_for(r"app\[worker\.1\]: greeting=from-env-test", after_last=True)
    assert run.stop() == 0
    assert "from-dotenv" not in run.output()


def test_the_old_f_still_sets_the_formation_with_a_warning(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="worker: python worker.py\n")
    run = dynosim(app, "-f", "worker=2")
    run.wait_for(r"heroku\[worker\.2\]: State changed from starting to up")
    assert run.stop() == 0
    warnings = [line for line in run.lines if line.startswith("dynosim: warning: -f")]
    assert len(warnings) == 1 and "--formation worker=2" in warnings[0]


@pytest.mark.parametrize("flag", ["-f", "-e"])
def test_a_file_that_is_not_there(tmp_path, flag):
    result = run_dynosim(make_app(tmp_path), "run", "--port", str(free_port()), flag, "nosuch")
    assert_one_line_error(result, f"{flag} nosuch: no such file")


def spawn(app, *args: str, no_color: str | None = None):
    pexpect = pytest.importorskip("pexpect")
    env = {**os.environ, "DYNOSIM_CACHE_DIR": str(CACHE_DIR), "TERM": "xterm"}  # a terminal, whatever CI's TERM says
    env.pop("NO_COLOR", None)
    if no_color is not None:
        env["NO_COLOR"] = no_color
    return pexpect.spawn(sys.executable, ["-m", "dynosim", *args], cwd=str(app), env=env, encoding="utf-8", timeout=90)


@pytest.mark.parametrize(("args", "no_color", "coloured"), [
    ((), None, True), ((), "", True), ((), "1", False), (("--no-color",), None, False),
])  # fmt: skip
def test_log_prefixes_are_coloured_on_a_terminal_unless_told_not_to(tmp_path, args, no_color, coloured):
    app = make_app(tmp_path, procfile="worker: python worker.py\n")
    child = spawn(app, *args, "run", "--port", str(free_port()), no_color=no_color)
    child.expect(r"app\[worker\.1\]:\S* worker started")
    shown = child.before + child.after
    child.sendintr()
    child.expect(pytest.importorskip("pexpect").EOF)
    assert bool(COLOUR.search(shown)) is coloured, repr(shown[-300:])


@pytest.mark.parametrize(("args", "no_color", "styled"), [
    ((), None, True), ((), "1", False), (("--no-color",), None, False),
])  # fmt: skip
def test_tables_follow_the_same_switch(tmp_path, args, no_color, styled):
    app = make_app(tmp_path)
    assert run_dynosim(app, "addons:create", "heroku-redis").returncode == 0
    child = spawn(app, *args, "addons", no_color=no_color)
    child.expect(pytest.importorskip("pexpect").EOF)
    assert "heroku-redis" in child.before
    assert bool(COLOUR.search(child.before)) is styled, repr(child.before)
