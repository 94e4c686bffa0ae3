"""An add-on exists from `addons:create`, as on Heroku: its config vars are set at once (`config:get`,
`config`, `addons`, `dynosim.api`), and every later run serves that same URL, so a value copied into
another config var keeps working. app.json's add-ons are provisioned at the first look at the config.

Add-ons start on the native backend (`--addons native`): a Docker engine may answer here without images.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import psycopg
import pytest
from conftest import make_app, run_dynosim

from dynosim import api

pytestmark = pytest.mark.timeout(180)


def ok(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.stdout + result.stderr
    return str(result.stdout)


def search_answers(url: str) -> None:
    """The Elasticsearch stand-in answers its root document at `url`."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert "version" in json.loads(response.read())


def env_of(port: int) -> dict[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        return dict(json.loads(response.read())["env"])


def test_searchbox_url_is_set_at_create_and_served_by_every_run(tmp_path: Path, dynosim) -> None:  # type: ignore[no-untyped-def]
    app = make_app(tmp_path, procfile="web: python server.py\n")
    created = ok(run_dynosim(app, "addons:create", "searchbox"))
    assert "Its config vars are set" in created
    url = ok(run_dynosim(app, "config:get", "SEARCHBOX_URL")).strip()
    assert url.startswith("http://127.0.0.1:"), url
    ssl_url = ok(run_dynosim(app, "config:get", "SEARCHBOX_SSL_URL")).strip()
    assert ssl_url.startswith("https://127.0.0.1:"), ssl_url

    # `dynosim config` lists the add-on's vars beside the user's, as `heroku config` does
    ok(run_dynosim(app, "config:set", f"ELASTICSEARCH_URL={url}"))
    listed = ok(run_dynosim(app, "config")).splitlines()
    assert listed[0] == "=== app Config Vars"
    assert any(line.split() == ["SEARCHBOX_URL:", url] for line in listed), listed
    assert any(line.split() == ["ELASTICSEARCH_URL:", url] for line in listed), listed
    assert api.config(app)["SEARCHBOX_URL"] == url
    (row,) = json.loads(ok(run_dynosim(app, "addons", "--json")))
    assert row["endpoint"] == url.removeprefix("http://")
    assert row["backend"] == ""  # chosen at its first start

    for _ in range(2):  # every run serves the URL fixed at create
        run = dynosim(app, "--addons", "native")
        run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
        env = env_of(run.port)
        assert env["SEARCHBOX_URL"] == url
        assert env["ELASTICSEARCH_URL"] == url
        search_answers(env["ELASTICSEARCH_URL"])
        assert ok(run_dynosim(app, "config:get", "SEARCHBOX_URL")).strip() == url
        assert run.stop() == 0
    assert json.loads(ok(run_dynosim(app, "addons", "--json")))[0]["backend"] == "native"  # recorded at its first start
    assert ok(run_dynosim(app, "config:get", "SEARCHBOX_URL")).strip() == url


@pytest.mark.skipif(shutil.which("pg_ctl") is None and shutil.which("psql") is None, reason="needs PostgreSQL")
def test_postgres_url_from_create_connects_on_every_run(tmp_path: Path, dynosim) -> None:  # type: ignore[no-untyped-def]
    app = make_app(tmp_path, procfile="web: python server.py\n")
    ok(run_dynosim(app, "addons:create", "heroku-postgresql"))
    values = api.config(app)
    url = values["DATABASE_URL"]
    assert url.startswith("postgres://u") and "@127.0.0.1:" in url, url
    (color_var,) = [name for name in values if name.startswith("HEROKU_POSTGRESQL_")]
    assert values[color_var] == url
    for number in range(2):
        run = dynosim(app, "--addons", "native")
        run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
        assert env_of(run.port)["DATABASE_URL"] == url
        with psycopg.connect(url, connect_timeout=10) as conn:
            if number == 0:
                conn.execute("CREATE TABLE kept (n int)")
                conn.execute("INSERT INTO kept VALUES (7)")
            assert conn.execute("SELECT n FROM kept").fetchone() == (7,)
        assert run.stop() == 0


def test_app_json_addons_are_provisioned_at_the_first_config_look(tmp_path: Path, dynosim) -> None:  # type: ignore[no-untyped-def]
    app = make_app(tmp_path, procfile="web: python server.py\n", app__json='{"addons": ["searchbox"]}')
    (row,) = json.loads(ok(run_dynosim(app, "addons", "--json")))
    assert row["endpoint"].startswith("127.0.0.1:"), row
    url = ok(run_dynosim(app, "config:get", "SEARCHBOX_URL")).strip()
    assert url == f"http://{row['endpoint']}"
    assert ok(run_dynosim(app, "config:get", "SEARCHBOX_URL")).strip() == url  # stable, not made anew
    run = dynosim(app, "--addons", "native")
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    assert env_of(run.port)["SEARCHBOX_URL"] == url
    search_answers(url)
    assert run.stop() == 0
