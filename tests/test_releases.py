"""Releases say what happened, as `heroku releases` does: a failed release phase, config changes."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request

from conftest import make_app, run_dynosim


def git(app, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(app), "-c", "user.email=dev@example.com", "-c", "user.name=dev", *args],
        check=True,
        capture_output=True,
    )


def commit(app, procfile: str) -> None:
    (app / "Procfile").write_text(procfile)
    git(app, "add", "-A")
    git(app, "commit", "-qm", procfile)


def releases(app) -> list[tuple[int, str, str, bool]]:
    rows = json.loads(run_dynosim(app, "releases", "--json").stdout)
    return [(r["version"], r["description"], r["status"], r["current"]) for r in rows]


def test_a_failed_release_phase_is_a_failed_release_and_the_previous_one_stays_current(tmp_path, dynosim):
    app = make_app(tmp_path)
    git(app, "init", "-q")
    git(app, "config", "user.email", "dev@example.com")  # who `by user …` names
    commit(app, "release: python release.py 0\nweb: python server.py\n")
    run = dynosim(app)
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    commit(app, "release: python release.py 3\nweb: python server.py\n")
    failed = run_dynosim(app, "deploy")
    assert failed.returncode == 1
    assert failed.stderr.endswith("exited with status 3; v1 still serves, as on Heroku when a release command fails\n")
    assert "no dyno was started" not in failed.stderr
    with urllib.request.urlopen(f"http://127.0.0.1:{run.port}/", timeout=10) as response:
        assert json.loads(response.read())["dyno"] == "web.1"  # still serving
    deploy = run.wait_for(r"app\[api\]: Deploy ([0-9a-f]{7}) by user", after_last=True).group(1)
    first = releases(app)[1][1]
    assert first.startswith("Deploy ") and first != f"Deploy {deploy}"
    assert releases(app) == [(2, f"Deploy {deploy}", "failed", False), (1, first, "succeeded", True)]
    listing = run_dynosim(app, "releases").stdout.splitlines()
    assert listing[0] == "=== app Releases - Current: v1"
    assert listing[1].startswith(f"v2  Deploy {deploy} release command failed  dev@example.com  ")
    assert listing[2].startswith("v1  Deploy ") and "release command" not in listing[2]

    # a config change is described as Heroku does, on the release that serves (v1's slug)
    assert run_dynosim(app, "config:set", "FOO=1", "BAR=2").stdout == "Setting FOO, BAR and restarting... done, v3\n"
    run.wait_for(r"app\[api\]: Set FOO, BAR config vars by user dev@example\.com", after_last=True)
    assert run_dynosim(app, "config:unset", "FOO").stdout == "Unsetting FOO and restarting... done, v4\n"
    run.wait_for(r"app\[api\]: Remove FOO config vars by user dev@example\.com", after_last=True)
    assert releases(app)[:2] == [
        (4, "Remove FOO config vars", "succeeded", True),
        (3, "Set FOO, BAR config vars", "succeeded", False),
    ]
    assert run.stop() == 0


def test_a_first_release_whose_release_phase_fails_is_failed_and_none_is_current(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="release: python release.py 2\nweb: python server.py\n")
    run = dynosim(app)
    assert run.proc.wait(60) == 1
    assert re.search(r"exited with status 2; no dyno was started\. Fix it and run again$", run.output(), re.M)
    assert releases(app) == [(1, "Deploy (no git)", "failed", False)]
    listing = run_dynosim(app, "releases").stdout.splitlines()
    assert listing[0] == "=== app Releases"
    assert listing[1].startswith("v1  Deploy (no git) release command failed  ")
