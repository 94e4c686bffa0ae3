"""`dynosim releases:rollback`: an old release's slug and config vars as a new release, every dyno restarted."""

from __future__ import annotations

import json
import urllib.request

import redis
from conftest import run_dynosim
from test_deploy import commit, committed_app, version

UP = r"heroku\[web\.1\]: State changed from starting to up"


def env(port: int) -> dict[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        return dict(json.loads(response.read())["env"])


def test_rollback_restores_the_old_slug_and_config_vars(tmp_path, dynosim):
    app = committed_app(tmp_path)
    assert run_dynosim(app, "config:set", "GREETING=one").returncode == 0
    created = run_dynosim(app, "addons:create", "heroku-redis")
    assert created.returncode == 0, created.stderr
    run = dynosim(app)
    run.wait_for(UP)
    store = redis.Redis.from_url(env(run.port)["REDIS_URL"], ssl_cert_reqs=None)
    store.set("visits", "41")
    commit(app, "two")
    assert run_dynosim(app, "deploy").returncode == 0  # v2
    assert run_dynosim(app, "config:set", "GREETING=two").returncode == 0  # v3
    run.wait_for(UP, after_last=True)
    assert version(run.port) == "two" and env(run.port)["GREETING"] == "two"

    result = run_dynosim(app, "releases:rollback", "v1")
    assert result.returncode == 0, result.stderr
    assert "Rolling back ⬢ app to v1... done, v4" in result.stdout
    assert "doesn't add or remove addons" in result.stderr and "release phase" not in result.stderr
    run.wait_for(r"app\[api\]: Rollback to v1 by user", timeout=30)
    run.wait_for(UP, after_last=True)
    assert version(run.port) == "one" and env(run.port)["GREETING"] == "one"
    assert redis.Redis.from_url(env(run.port)["REDIS_URL"], ssl_cert_reqs=None).get("visits") == b"41"  # data kept
    rows = json.loads(run_dynosim(app, "releases", "--json").stdout)
    assert (rows[0]["version"], rows[0]["description"], rows[0]["current"]) == (4, "Rollback to v1", True)
    assert "GREETING=one" in run_dynosim(app, "config", "--shell").stdout
    assert run.stop() == 0

    # HEAD has not moved since: the next run keeps the rollback, as Heroku does until the next push
    again = dynosim(app)
    again.wait_for(UP)
    assert version(again.port) == "one"
    assert [r["version"] for r in json.loads(run_dynosim(app, "releases", "--json").stdout)] == [4, 3, 2, 1]
    assert again.stop() == 0


def test_rollback_past_a_release_phase_warns_and_works_without_a_run(tmp_path, dynosim):
    app = committed_app(tmp_path)
    run = dynosim(app)
    run.wait_for(UP)
    (app / "Procfile").write_text("release: python release.py\nweb: python server.py\n")
    commit(app, "migrated")
    assert run_dynosim(app, "deploy").returncode == 0  # v2, with a release phase
    assert run.stop() == 0

    result = run_dynosim(app, "releases:rollback")  # no run active: recorded for the next one
    assert result.returncode == 0, result.stderr
    assert "Rolling back ⬢ app to v1... done, v3 (the next `dynosim run` starts it)" in result.stdout
    assert "v1 is older than the release phase of v2" in result.stderr
    later = dynosim(app)
    later.wait_for(UP)
    assert version(later.port) == "one"
    assert later.stop() == 0


def test_rollback_to_a_release_that_cannot_be(tmp_path, dynosim):
    app = committed_app(tmp_path)
    run = dynosim(app)
    run.wait_for(UP)
    before = run_dynosim(app, "releases", "--json").stdout
    for argument, message in [("v9", "there is no release v9"), ("twelve", "is not a release; write it as v12")]:
        result = run_dynosim(app, "releases:rollback", argument)
        assert result.returncode != 0 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    first = run_dynosim(app, "releases:rollback")
    assert first.returncode != 0 and "first release; nothing to roll back to" in first.stderr
    assert run_dynosim(app, "releases", "--json").stdout == before  # nothing changed
    assert run.stop() == 0


def test_releases_info_shows_a_release_and_its_config_vars(tmp_path, dynosim):
    app = committed_app(tmp_path)
    assert run_dynosim(app, "config:set", "GREETING=hello world").returncode == 0
    run = dynosim(app)
    run.wait_for(UP)
    assert run_dynosim(app, "config:set", "GREETING=two").returncode == 0
    assert run.stop() == 0
    shown = run_dynosim(app, "releases:info", "v1")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "=== Release v1" and lines[1].startswith("Add-ons:")
    assert lines[3].split() == ["Change:", "Deploy", lines[3].split()[-1]] and lines[4].startswith("When:    20")
    assert "=== v1 Config vars" in lines and "GREETING: hello world" in lines
    assert "GREETING='hello world'" in run_dynosim(app, "releases:info", "1", "--shell").stdout.splitlines()
    current = json.loads(run_dynosim(app, "releases:info", "--json").stdout)
    assert (current["version"], current["description"], current["config_vars"]["GREETING"]) == (
        2,
        "Set GREETING config vars",
        "two",
    )
    missing = run_dynosim(app, "releases:info", "v7")
    assert missing.returncode != 0 and "there is no release v7" in missing.stderr


def test_an_offline_rollback_runs_its_release_phase_in_the_next_run(tmp_path, dynosim):
    app = committed_app(tmp_path)
    (app / "release.py").write_text("print('migrating', open('VERSION').read().strip())\n")
    (app / "Procfile").write_text("release: python release.py\nweb: python server.py\n")
    commit(app, "one")
    run = dynosim(app)
    run.wait_for(UP)
    commit(app, "two")
    assert run_dynosim(app, "deploy").returncode == 0  # v2
    run.wait_for(UP, after_last=True)
    assert run.stop() == 0

    result = run_dynosim(app, "releases:rollback", "v1")
    assert result.returncode == 0, result.stderr
    assert (
        "Rolling back ⬢ app to v1... done, v3 (the next `dynosim run` runs its release phase and starts it)"
        in result.stdout
    )
    assert "release command executing" in run_dynosim(app, "releases").stdout  # pending, not yet current
    later = dynosim(app)
    later.wait_for(r"app\[api\]: Running release v3 commands by user")
    later.wait_for(r"app\[release\.\d+\]: migrating one")
    later.wait_for(UP)
    assert version(later.port) == "one"
    rows = json.loads(run_dynosim(app, "releases", "--json").stdout)
    assert [(r["version"], r["status"], r["current"]) for r in rows][:2] == [
        (3, "succeeded", True),
        (2, "succeeded", False),
    ]
    assert later.stop() == 0


def test_releases_info_shows_the_add_ons_each_release_was_made_with(tmp_path, dynosim):
    app = committed_app(tmp_path)
    first = dynosim(app)
    first.wait_for(UP)
    assert first.stop() == 0  # v1: no add-on
    created = run_dynosim(app, "addons:create", "heroku-redis")
    assert created.returncode == 0, created.stderr
    second = dynosim(app)
    second.wait_for(UP)
    assert second.stop() == 0  # v2: REDIS_URL is new
    name = json.loads(run_dynosim(app, "addons", "--json").stdout)[0]["name"]
    assert name.startswith("redis-")

    def addons_line(release: str) -> str:
        shown = run_dynosim(app, "releases:info", release)
        assert shown.returncode == 0, shown.stderr
        return shown.stdout.splitlines()[1]

    assert addons_line("v2").split() == ["Add-ons:", name]
    assert addons_line("v1").split() == ["Add-ons:"]  # today's add-on is not v1's
    history = app / ".dynosim" / "releases.json"
    entries = json.loads(history.read_text())
    del entries[0]["addons"]  # as an older dynosim wrote it
    history.write_text(json.dumps(entries))
    assert addons_line("v1") == "Add-ons: (not recorded)"
