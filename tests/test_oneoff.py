"""One-off dynos (`dynosim exec`, Heroku's `heroku run`) run the current release and make no release."""
from __future__ import annotations

import json
import subprocess

from conftest import make_app, run_dynosim


def git(app, *args: str) -> None:
    subprocess.run(["git", "-C", str(app), "-c", "user.email=dev@example.com", "-c", "user.name=dev", *args],
                   check=True, capture_output=True)


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
    assert result.stderr == ("dynosim: error: `dynosim run` runs the Procfile and takes no command; a one-off command "
                             "is `dynosim exec python worker.py --once` (Heroku's `heroku run`)\n")
    assert not (app / ".dynosim" / "releases.json").exists()
