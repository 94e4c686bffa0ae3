"""An add-on whose config vars change while the app runs (a credential rotation): the run makes a new
release by the add-on and restarts every dyno onto it, as Heroku does."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from conftest import make_app

from dynosim import api
from dynosim.addons import STATE_FILE


def _env(port: int) -> dict[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        return dict(json.load(response)["env"])


def test_a_changed_addon_record_is_a_new_release_by_the_addon_and_every_dyno_restarts(tmp_path: Path, dynosim) -> None:
    app = make_app(tmp_path)
    run = dynosim(app, "--addon", "heroku-redis", "--addons", "native")
    run.wait_for(r"web\.1.*State changed from starting to up", timeout=120)
    before = _env(run.port)["REDIS_URL"]

    # what a rotation does to the record: a new password (the server is not asked here)
    state = app / ".dynosim" / STATE_FILE
    data = json.loads(state.read_text())
    [record] = [r for r in data["addons"] if r["service"] == "redis"]
    record["password"] = "p" + "0" * 63
    state.write_text(json.dumps(data))

    applied = api.addon_changed(app, record["name"], "Update REDIS by heroku-redis", "heroku-redis@addons.heroku.com")
    assert applied.live and applied.value is not None
    run.wait_for(r"app\[api\]: Update REDIS by heroku-redis by user heroku-redis@addons\.heroku\.com")
    run.wait_for(r"web\.1.*State changed from starting to up", after_last=True, timeout=60)
    after = _env(run.port)["REDIS_URL"]
    assert after != before and ":p" + "0" * 63 + "@" in after
    [latest, *_] = api.releases(app)
    assert latest["version"] == applied.value and latest["description"] == "Update REDIS by heroku-redis"
    assert api.config(app)["REDIS_URL"] == after
    assert run.stop() == 0


def test_without_a_run_the_change_waits_for_the_next_one(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    assert api.addon_changed(app, "redis-none-00000", "Update REDIS by heroku-redis", "x") == api.Applied(None, False)
