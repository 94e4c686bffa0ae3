"""Snapshots of a running app (tests/apps/clean_app with Postgres and Redis) on both add-on backends:
saved and loaded together (the add-ons' data, config vars, releases), through the Python API and the
CLI; and the bad snapshots, each one line, the app's data untouched."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import CACHE_DIR, remove_app_containers, run_dynosim

import dynosim
from dynosim.errors import DynosimError

pytestmark = pytest.mark.timeout(300)

APP = Path(__file__).parent / "apps" / "clean_app"


@pytest.fixture
def app_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="dynosim-snap-")) / "app"  # short: the control socket's path
    shutil.copytree(APP, folder)
    yield folder
    remove_app_containers(folder / ".dynosim")
    shutil.rmtree(folder.parent, ignore_errors=True)


@pytest.fixture
def app(app_dir: Path, addon_backend: str) -> Iterator[dynosim.App]:
    running = dynosim.App(
        app_dir, addons=["heroku-postgresql", "heroku-redis"], addons_backend=addon_backend, cache_dir=CACHE_DIR
    )
    running.start()
    yield running
    running.stop()


def state(app: dynosim.App) -> dict[str, Any]:
    response = app.get("/")
    assert response.status == 200, response.text
    return dict(response.json())  # type: ignore[arg-type]


def test_a_snapshot_brings_back_the_data_the_config_and_the_releases(app: dynosim.App) -> None:
    for body in ("one", "two"):
        app.get(f"/add?body={body}")
    app.config_set({"GREETING": "hello"})
    saved = app.snapshot_save("before")
    assert [a["name"].split("-")[0] for a in saved["addons"]] == ["postgresql", "redis"]
    assert saved["config_vars"] == ["GREETING"] and saved["size"] > 0
    releases_at_save = [r["version"] for r in app.releases()]

    app.get("/add?body=three")
    app.config_set({"GREETING": "changed", "EXTRA": "1"})
    assert state(app)["notes"] == ["one", "two", "three"]

    done = app.snapshot_load("before")

    after = state(app)
    assert {k: after[k] for k in ("notes", "plans", "hits")} == {
        "notes": ["one", "two"],
        "plans": ["free", "pro"],
        "hits": 2,
    }
    config = app.config()
    assert config["GREETING"] == "hello" and "EXTRA" not in config
    # the history as saved: its current release (GREETING=hello) runs again, the dynos restarted onto it
    assert [r["version"] for r in app.releases()] == releases_at_save
    assert done["release"] == f"v{releases_at_save[0]}, every dyno restarted onto it"
    assert [s["name"] for s in app.snapshots()] == ["before"]
    # loading it again: the data again, and no restart (the dynos run the release it names)
    app.get("/add?body=four")
    again = app.snapshot_load("before")
    assert state(app)["notes"] == ["one", "two"]
    assert again["release"] == f"v{releases_at_save[0]}, as running: no dyno restarted"


def test_the_cli_lists_saves_loads_and_deletes(app: dynosim.App, app_dir: Path) -> None:
    app.get("/add?body=kept")
    saved = run_dynosim(app_dir, "snapshot:save", "nightly")
    assert saved.returncode == 0 and saved.stdout.startswith("Saving snapshot nightly... done,"), saved.stderr
    listed = run_dynosim(app_dir, "snapshots", "--json")
    assert [s["name"] for s in json.loads(listed.stdout)] == ["nightly"]
    app.get("/add?body=lost")
    loaded = run_dynosim(app_dir, "snapshot:load", "nightly")
    assert loaded.returncode == 0, loaded.stderr
    assert state(app)["notes"] == ["kept"]
    deleted = run_dynosim(app_dir, "snapshot:delete", "nightly")
    assert deleted.returncode == 0 and deleted.stdout.strip() == "Deleted snapshot nightly"
    assert "No snapshots" in run_dynosim(app_dir, "snapshots").stdout
    with psycopg.connect(app.config()["DATABASE_URL"]) as conn:  # its template database went with it
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'dynosim_snapshot_%'").fetchone() == (
            0,
        )


def one_line(error: pytest.ExceptionInfo[DynosimError], *words: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message


def test_bad_snapshots_are_refused_in_one_line_and_nothing_changes(app: dynosim.App, app_dir: Path) -> None:
    app.get("/add?body=current")
    app.snapshot_save("good")
    with pytest.raises(DynosimError) as exists:
        app.snapshot_save("good")
    one_line(exists, "snapshot 'good' exists", "snapshot:delete good")
    with pytest.raises(DynosimError) as missing:
        app.snapshot_load("nosuch")
    one_line(missing, "no snapshot 'nosuch'", "snapshots: good")
    with pytest.raises(DynosimError) as badname:
        app.snapshot_save("../escape")
    one_line(badname, "is not a snapshot name")

    folder = app_dir / ".dynosim" / "snapshots" / "good"
    manifest = json.loads((folder / "snapshot.json").read_text())
    # made of another app's add-ons
    other = folder.with_name("other")
    shutil.copytree(folder, other)
    changed = {**manifest, "addons": [{**a, "name": a["name"] + "x"} for a in manifest["addons"]]}
    (other / "snapshot.json").write_text(json.dumps(changed))
    with pytest.raises(DynosimError) as foreign:
        app.snapshot_load("other")
    one_line(foreign, "snapshot 'other' holds", "this app has")
    # a dump cut short
    dump = next(folder.glob("postgresql-*.dump"))
    dump.write_bytes(dump.read_bytes()[:200])
    with pytest.raises(DynosimError) as corrupt:
        app.snapshot_load("good")
    one_line(corrupt, dump.name, "not a whole pg_dump -Fc file")
    # made by another Postgres major version
    older = {**manifest, "addons": [{**a, "meta": {**a["meta"], "pg_major": 9}} for a in manifest["addons"]]}
    (folder / "snapshot.json").write_text(json.dumps(older))
    with pytest.raises(DynosimError) as version:
        app.snapshot_load("good")
    one_line(version, "made by PostgreSQL 9")
    # a manifest that is not JSON
    (folder / "snapshot.json").write_text("{not json")
    with pytest.raises(DynosimError) as unreadable:
        app.snapshot_load("good")
    one_line(unreadable, "missing or corrupt", "snapshot:delete good")

    assert state(app)["notes"] == ["current"]  # through all of it
    assert [s["name"] for s in app.snapshots()] == ["other"]  # the corrupt one is not listed


def test_a_snapshot_whose_template_database_is_gone_is_restored_from_its_dump(app_dir: Path) -> None:
    from dynosim.addons.services.postgres_native import SUPERUSER

    app = dynosim.App(
        app_dir, addons=["heroku-postgresql", "heroku-redis"], addons_backend="native", cache_dir=CACHE_DIR
    )
    app.start()
    try:
        app.get("/add?body=saved")
        app.snapshot_save("portable")
        record = next(
            r
            for r in json.loads((app_dir / ".dynosim" / "addons.json").read_text())["addons"]
            if r["service"] == "postgres"
        )
        admin = f"postgresql://{SUPERUSER}:{record['admin_password']}@127.0.0.1:{record['port']}/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:  # as a new server would be: no template on it
            [(template,)] = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'dynosim_snapshot_%'")
            conn.execute(f'ALTER DATABASE "{template}" IS_TEMPLATE false')
            conn.execute(f'DROP DATABASE "{template}"')
        app.get("/add?body=after")
        done = app.snapshot_load("portable")
        postgres = next(what for name, what in done.items() if name.startswith("postgresql-"))
        assert postgres.startswith("restored from postgresql-") and "template database was gone" in postgres
        assert state(app)["notes"] == ["saved"]
    finally:
        app.stop()
