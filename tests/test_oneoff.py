"""One-off dynos (`dynosim exec`, Heroku's `heroku run`) run the current release and make no release."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

from conftest import CACHE_DIR, make_app, run_dynosim


def git(app, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(app), "-c", "user.email=dev@example.com", "-c", "user.name=dev", *args],
        check=True,
        capture_output=True,
    )


def commit(app, version: str) -> None:
    (app / "VERSION").write_text(version + "\n")
    git(app, "add", "-A")
    git(app, "commit", "-qm", version)


def versions(app) -> list[int]:
    return [r["version"] for r in json.loads(run_dynosim(app, "releases", "--json").stdout)]


def test_a_one_off_runs_the_running_release_and_makes_no_release(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="web: python server.py\n")
    git(app, "init", "-q")
    commit(app, "one")
    run = dynosim(app)
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    commit(app, "two")  # committed, not deployed: the dynos still run "one"
    (app / "VERSION").write_text("three\n")  # and not even committed
    same = run_dynosim(app, "exec", "cat VERSION")
    assert same.returncode == 0 and same.stdout == "one\n", same.stderr
    dirty = run_dynosim(app, "exec", "--dirty", "-e", "GREETING=hi", 'echo "$GREETING"; cat VERSION')
    assert dirty.returncode == 0 and dirty.stdout == "hi\none\n", dirty.stderr
    assert "--dirty: ignored, a one-off runs the current release's slug (v1)" in dirty.stderr
    assert versions(app) == [1]  # `heroku run` never creates a release, -e or not
    assert run_dynosim(app, "config:get", "GREETING").returncode == 1  # -e was that dyno's alone
    assert run.stop() == 0


def test_with_a_run_active_a_one_off_is_in_ps_and_in_the_logs_while_attached_to_its_terminal(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="web: python server.py\n")
    run = dynosim(app)
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    env = {**os.environ, "DYNOSIM_CACHE_DIR": str(CACHE_DIR)}
    one_off = subprocess.Popen(
        [sys.executable, "-m", "dynosim", "exec", 'read word; echo "got $word"; exit 3'],
        cwd=app,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, rows = time.monotonic() + 60, []
        while not [r for r in rows if r["type"] == "run" and r["state"] == "up"] and time.monotonic() < deadline:
            rows = json.loads(run_dynosim(app, "ps", "--json").stdout)  # the dyno waits on its terminal's stdin
            time.sleep(0.1)
        [row] = [r for r in rows if r["type"] == "run"]
        assert re.fullmatch(r"run\.\d{4}", row["name"]) and row["command"] == 'read word; echo "got $word"; exit 3'
        out, err = one_off.communicate("hello\n", timeout=60)
    finally:
        one_off.kill()
    assert one_off.returncode == 3 and out == "got hello\n"  # its own stdin and stdout, and its exit status
    assert f"up, {row['name']} (standard-1x)" in err
    name = re.escape(row["name"])
    run.wait_for(rf"heroku\[{name}\]: State changed from up to complete")
    logs = run_dynosim(app, "logs", "-n", "1500").stdout
    assert re.search(r"app\[api\]: Starting process with command `read word; .*` by user ", logs)
    shown = [line.split(": ", 1)[1] for line in logs.splitlines() if f"[{row['name']}]" in line]
    assert shown == [  # only start and stop, as Heroku logs an attached one-off: its output is the terminal's
        "State changed from down to starting",
        'Starting process with command `read word; echo "got $word"; exit 3`',
        "State changed from starting to up",
        "Process exited with status 3",
        "State changed from up to complete",
    ]
    assert [r["name"] for r in json.loads(run_dynosim(app, "ps", "--json").stdout)] == ["web.1"]  # gone once it ended
    assert run.stop() == 0


def test_with_no_run_active_a_one_off_runs_the_last_release(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="web: python server.py\ntask: cat VERSION\n")
    git(app, "init", "-q")
    commit(app, "one")
    run = dynosim(app)
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    assert run.stop() == 0
    commit(app, "two")
    (app / ".env").write_text("GREETING=hello\n")
    result = run_dynosim(app, "exec", 'echo "$GREETING"; cat VERSION')
    assert result.returncode == 0 and result.stdout == "hello\none\n", result.stderr
    (app / "Procfile").write_text("web: python server.py\ntask: echo changed\n")
    task = run_dynosim(app, "exec", "task")  # a Procfile type is the release's command, not the folder's
    assert task.returncode == 0 and task.stdout == "one\n", task.stderr
    assert versions(app) == [1]


def test_before_the_first_release_a_one_off_builds_but_releases_nothing(tmp_path):
    app = make_app(tmp_path, procfile="web: python server.py\n")
    (app / "VERSION").write_text("working tree\n")
    result = run_dynosim(app, "exec", "cat VERSION")
    assert result.returncode == 0 and result.stdout == "working tree\n", result.stderr
    assert "the app has no release yet: this one-off runs a build of it that is not released" in result.stderr
    assert versions(app) == []
    assert run_dynosim(app, "releases").stdout == "app has no releases.\n"


def test_run_with_a_command_points_at_exec(tmp_path):
    app = make_app(tmp_path)
    result = run_dynosim(app, "run", "python", "worker.py", "--once")
    assert result.returncode == 2
    assert result.stderr == (
        "dynosim: error: `dynosim run` runs the Procfile and takes no command; a one-off command "
        "is `dynosim exec python worker.py --once` (Heroku's `heroku run`)\n"
    )
    assert not (app / ".dynosim" / "releases.json").exists()
