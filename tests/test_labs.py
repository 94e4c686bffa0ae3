"""`dynosim labs:enable runtime-dyno-metadata`: from the next release, every dyno knows its app, release and self."""

from __future__ import annotations

import json
import re

from conftest import run_dynosim
from test_deploy import committed_app
from test_rollback import UP, env

METADATA = [
    "HEROKU_APP_ID",
    "HEROKU_APP_NAME",
    "HEROKU_DYNO_ID",
    "HEROKU_RELEASE_CREATED_AT",
    "HEROKU_RELEASE_VERSION",
    "HEROKU_SLUG_COMMIT",
    "HEROKU_SLUG_DESCRIPTION",
]
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def restarted(run, version: int) -> None:
    """Both web dynos up again on release `version`, in whichever order they restart."""
    run.wait_for(rf"app\[api\]: Release v{version} created", after_last=True)
    for _ in range(2):
        run.wait_for(r"heroku\[web\.[12]\]: State changed from starting to up", after_last=True)


def test_runtime_dyno_metadata_from_the_next_release(tmp_path, dynosim):
    app = committed_app(tmp_path)
    listed = run_dynosim(app, "labs")
    assert listed.returncode == 0 and "[ ] runtime-dyno-metadata" in listed.stdout
    enabled = run_dynosim(app, "labs:enable", "runtime-dyno-metadata")
    assert enabled.returncode == 0 and "Enabling runtime-dyno-metadata for ⬢ app... done" in enabled.stdout
    assert "[+] runtime-dyno-metadata" in run_dynosim(app, "labs").stdout

    run = dynosim(app, "--formation", "web=2")
    run.wait_for(UP)
    run.wait_for(r"heroku\[web\.2\]: State changed from starting to up")
    seen = {}
    for _ in range(20):  # the router spreads requests over both dynos
        values = env(run.port)
        seen[values["DYNO"]] = values
        if len(seen) == 2:
            break
    first, second = seen["web.1"], seen["web.2"]
    commit = json.loads(run_dynosim(app, "releases", "--json").stdout)[0]["commit"]
    assert all(name in first for name in METADATA)
    assert re.fullmatch(UUID, first["HEROKU_APP_ID"]) and first["HEROKU_APP_ID"] == second["HEROKU_APP_ID"]
    assert re.fullmatch(UUID, first["HEROKU_DYNO_ID"]) and first["HEROKU_DYNO_ID"] != second["HEROKU_DYNO_ID"]
    assert first["HEROKU_APP_NAME"] == "app" and first["HEROKU_RELEASE_VERSION"] == "v1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first["HEROKU_RELEASE_CREATED_AT"])
    assert first["HEROKU_SLUG_COMMIT"] == commit and len(commit) == 40
    assert first["HEROKU_SLUG_DESCRIPTION"] == f"Deploy {commit[:7]}"

    app_id = first["HEROKU_APP_ID"]
    assert run_dynosim(app, "config:set", "A=1").returncode == 0  # v2, still on: the same app id
    restarted(run, 2)
    later = env(run.port)
    assert (later["HEROKU_RELEASE_VERSION"], later["HEROKU_APP_ID"]) == ("v2", app_id)

    assert run_dynosim(app, "labs:disable", "runtime-dyno-metadata").returncode == 0
    assert "HEROKU_APP_ID" in env(run.port)  # the running release keeps them until the next one
    assert run_dynosim(app, "config:set", "A=2").returncode == 0
    restarted(run, 3)
    assert not any(name in env(run.port) for name in METADATA)
    assert run.stop() == 0


def test_an_unknown_feature(tmp_path):
    app = committed_app(tmp_path)
    result = run_dynosim(app, "labs:enable", "preboot-all-the-things")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "'preboot-all-the-things' is not a feature dynosim knows; known: runtime-dyno-metadata" in result.stderr
    assert not (app / ".dynosim" / "labs.json").exists()
