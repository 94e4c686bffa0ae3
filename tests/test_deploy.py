"""Deploys: `dynosim deploy` and `dynosim run --watch` roll a running app onto a new commit."""

from __future__ import annotations

import json
import subprocess
import urllib.request

from conftest import make_app, run_dynosim


def git(app, *args: str) -> None:
    subprocess.run(["git", "-C", str(app), *args], check=True, capture_output=True)


def committed_app(tmp_path):
    app = make_app(tmp_path, procfile="web: python server.py\n")
    (app / "VERSION").write_text("one\n")
    git(app, "init", "-q")
    git(app, "-c", "user.email=dev@example.com", "-c", "user.name=dev", "add", "-A")
    git(app, "-c", "user.email=dev@example.com", "-c", "user.name=dev", "commit", "-qm", "one")
    return app


def commit(app, version: str) -> None:
    (app / "VERSION").write_text(version + "\n")
    git(app, "-c", "user.email=dev@example.com", "-c", "user.name=dev", "commit", "-qam", version)


def version(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/read/VERSION", timeout=10) as response:
        return response.read().decode().strip()


def test_deploy_rolls_the_running_app_onto_the_new_commit(tmp_path, dynosim):
    app = committed_app(tmp_path)
    run = dynosim(app)
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    assert version(run.port) == "one"
    commit(app, "two")
    result = run_dynosim(app, "deploy")
    assert result.returncode == 0, result.stderr
    assert "-----> Building source (Deploy " in result.stdout and "Released v2" in result.stdout
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up", after_last=True)
    assert version(run.port) == "two"
    releases = json.loads(run_dynosim(app, "releases", "--json").stdout)
    assert [r["version"] for r in releases] == [2, 1]
    assert run.stop() == 0


def test_a_failing_release_phase_keeps_the_running_release(tmp_path, dynosim):
    app = committed_app(tmp_path)
    run = dynosim(app)
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    (app / "Procfile").write_text("release: python release.py 3\nweb: python server.py\n")
    commit(app, "broken")
    result = run_dynosim(app, "deploy")
    assert result.returncode == 1 and "release phase failed" in result.stderr
    assert version(run.port) == "one"  # still the old release
    assert run.stop() == 0


def test_watch_deploys_each_new_commit(tmp_path, dynosim):
    app = committed_app(tmp_path)
    run = dynosim(app, "--watch")
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    commit(app, "three")
    run.wait_for(r"app\[api\]: Build started by user", timeout=30)
    run.wait_for(r"app\[api\]: Release v2 created by user", timeout=60)
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up", after_last=True)
    assert version(run.port) == "three"
    assert run.stop() == 0


def test_deploy_without_a_run_or_without_commits(tmp_path):
    app = make_app(tmp_path)
    git(app, "init", "-q")
    no_run = run_dynosim(app, "deploy")
    assert no_run.returncode == 2 and "no dynosim run is active" in no_run.stderr


def test_deploy_from_a_repository_with_no_commits_is_refused(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="web: python server.py\n")
    git(app, "init", "-q")
    run = dynosim(app, "--dirty")  # a run of the working tree is possible, a deploy of HEAD is not
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    result = run_dynosim(app, "deploy")
    assert result.returncode == 1 and "no commits" in result.stderr and "Traceback" not in result.stderr
    assert run.stop() == 0
