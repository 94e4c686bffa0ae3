"""`App.reset()` and the `dynosim_clean` fixture: a real app (tests/apps/clean_app: a release phase
that migrates and seeds, a web dyno holding one Postgres and one Redis connection from boot) on both
add-on backends, and an inner pytest session under xdist using the fixtures as a suite would."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from conftest import CACHE_DIR, remove_app_containers

import dynosim
from dynosim.errors import DynosimError

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(300)

APP = Path(__file__).parent / "apps" / "clean_app"


@pytest.fixture
def app_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="dynosim-clean-")) / "app"  # short: the control socket's path
    shutil.copytree(APP, folder)
    yield folder
    remove_app_containers(folder / ".dynosim")
    shutil.rmtree(folder.parent, ignore_errors=True)


def started(app_dir: Path, backend: str) -> dynosim.App:
    app = dynosim.App(
        app_dir, addons=["heroku-postgresql", "heroku-redis"], addons_backend=backend, cache_dir=CACHE_DIR
    )
    app.start()
    return app


def notes(app: dynosim.App) -> dict[str, Any]:
    response = app.get("/")
    assert response.status == 200, response.text
    return dict(response.json())  # type: ignore[arg-type]


def test_reset_returns_the_add_ons_to_after_the_release_phase_and_the_dyno_keeps_its_connections(
    app_dir: Path, addon_backend: str
) -> None:
    app = started(app_dir, addon_backend)
    try:
        assert notes(app) == {"notes": [], "plans": ["free", "pro"], "hits": 0, "connections": 1}
        for body in ("one", "two", "three"):
            assert app.get(f"/add?body={body}").status == 200
        with psycopg.connect(app.config()["DATABASE_URL"], autocommit=True) as conn:  # a table the test made
            conn.execute("CREATE TABLE scratch (v int)")
            conn.execute("INSERT INTO scratch VALUES (1), (2)")
            conn.execute("UPDATE plans SET name = 'changed' WHERE name = 'free'")
        assert notes(app)["notes"] == ["one", "two", "three"] and notes(app)["hits"] == 3
        pid_before = {row["name"]: row["since"] for row in app.ps()}

        done = app.reset()

        assert sorted(name.split("-")[0] for name in done) == ["postgresql", "redis"]
        postgres = next(what for name, what in done.items() if name.startswith("postgresql-"))
        assert postgres == "3 table(s) emptied, 1 given back their rows from after the release phase"
        # the same web.1, its one database connection still working: nothing restarted or reconnected
        assert notes(app) == {"notes": [], "plans": ["free", "pro"], "hits": 0, "connections": 1}
        assert {row["name"]: row["since"] for row in app.ps()} == pid_before
        assert app.get("/add?body=again").json() == {"id": 1, "hits": 1}  # the sequence rewound
        with psycopg.connect(app.config()["DATABASE_URL"]) as conn:
            assert conn.execute("SELECT count(*) FROM scratch").fetchone() == (0,)
        app.logs.wait_for(r"dynosim\[reset\]: postgresql-\S+: 3 table\(s\) emptied")
        # the run's kept psql session outlives a restart of the server (Heroku Postgres maintenance)
        app.faults.addon_restart("heroku-postgresql")
        app.logs.wait_for(r"dynosim\[faults\]: .*addon-restart", timeout=30)
        deadline = time.monotonic() + 30
        while app.get("/add?body=after-maintenance").status != 200:  # the server back, the app reconnected
            assert time.monotonic() < deadline
            time.sleep(0.2)
        app.reset()
        assert notes(app)["notes"] == []
    finally:
        app.stop()
    # nothing of the run is left: its kept psql session ended with it
    assert not [child for child in psutil.Process().children(recursive=True) if child.name() == "psql"]


def test_a_reset_without_its_baseline_says_so_and_changes_nothing(app_dir: Path) -> None:
    app = started(app_dir, "native")
    try:
        app.get("/add?body=kept")
        for baseline in (app_dir / ".dynosim" / "reset").glob("postgresql-*.json"):
            baseline.unlink()
        with pytest.raises(DynosimError) as refused:
            app.reset()
        message = str(refused.value)
        assert "\n" not in message and "no baseline to reset to yet" in message
        assert notes(app)["notes"] == ["kept"]
    finally:
        app.stop()


SUITE = """
import pytest


@pytest.fixture(scope="session")
def app(dynosim_app_session):
    return dynosim_app_session("app", addons=["heroku-postgresql", "heroku-redis"], addons_backend="native")


@pytest.mark.parametrize("body", ["a", "b", "c", "d", "e", "f"])
def test_each_test_sees_only_its_own_note(app, dynosim_clean, body):
    assert app.get(f"/add?body={body}").json() == {"id": 1, "hits": 1}
    assert app.get("/").json() == {"notes": [body], "plans": ["free", "pro"], "hits": 1, "connections": 1}
"""


def test_dynosim_clean_under_xdist_one_app_per_worker(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DYNOSIM_CACHE_DIR", str(CACHE_DIR))
    shutil.copytree(APP, pytester.path / "app")
    short = Path(tempfile.mkdtemp(prefix="dynosim-clean-"))
    try:
        pytester.makepyfile(test_suite=SUITE)
        result = pytester.runpytest_subprocess("-n", "2", f"--basetemp={short / 'inner'}")
        result.assert_outcomes(passed=6)
    finally:
        shutil.rmtree(short, ignore_errors=True)


SEEDED_RELEASE = """
import os
import psycopg

with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS kinds (id serial PRIMARY KEY, name text NOT NULL, pad text)")
    conn.execute("CREATE TABLE IF NOT EXISTS colours (id serial PRIMARY KEY, name text NOT NULL)")
    conn.execute("CREATE TABLE IF NOT EXISTS shapes (id serial PRIMARY KEY, kind int REFERENCES kinds (id), name text)")
    conn.execute("CREATE TABLE IF NOT EXISTS events (id bigserial PRIMARY KEY, body text)")
    if conn.execute("SELECT count(*) FROM kinds").fetchone() == (0,):
        conn.execute("INSERT INTO kinds (name) VALUES ('round'), ('square')")
        conn.execute("INSERT INTO colours (name) VALUES ('red'), ('blue')")
        conn.execute("INSERT INTO shapes (kind, name) VALUES (1, 'circle'), (2, 'box')")
"""


def test_a_reset_puts_back_tables_changed_only_by_an_update_or_a_delete_and_rewinds_sequences() -> None:
    """Tables a reset finds as the baseline had them are left alone (their rows not rewritten); any change
    (an UPDATE, a DELETE, rows past the size where TRUNCATE empties a table, which takes the seeded tables
    referencing it along) is put back, and a sequence only advanced is rewound."""
    folder = Path(tempfile.mkdtemp(prefix="dynosim-seeded-")) / "app"
    folder.mkdir()
    (folder / "Procfile").write_text("release: python release.py\nweb: python -m http.server $PORT\n")
    (folder / "requirements.txt").write_text("psycopg[binary]>=3.1\n")
    (folder / "release.py").write_text(SEEDED_RELEASE)
    app = dynosim.App(folder, addons=["heroku-postgresql"], addons_backend="native", cache_dir=CACHE_DIR)
    app.start()

    def rows(conn: psycopg.Connection[Any], table: str) -> list[tuple[Any, ...]]:
        return conn.execute(f"SELECT id, name FROM {table} ORDER BY id").fetchall()

    try:
        with psycopg.connect(app.config()["DATABASE_URL"], autocommit=True) as conn:
            seeded = {table: rows(conn, table) for table in ("kinds", "colours", "shapes")}
            colours_xmin = conn.execute("SELECT xmin::text FROM colours ORDER BY id").fetchall()
            conn.execute("UPDATE kinds SET name = 'oval' WHERE id = 1")  # only an UPDATE
            conn.execute("DELETE FROM shapes WHERE id = 2")  # only a DELETE
            conn.execute("SELECT nextval('events_id_seq'), nextval('events_id_seq')")  # only the sequence

            assert list(app.reset().values()) == [
                "2 table(s) emptied, 2 given back their rows from after the release phase"
            ]

            assert {table: rows(conn, table) for table in seeded} == seeded
            assert conn.execute("SELECT xmin::text FROM colours ORDER BY id").fetchall() == colours_xmin
            assert conn.execute("INSERT INTO events (body) VALUES ('x') RETURNING id").fetchone() == (1,)
            # kinds past a megabyte: emptied by TRUNCATE … CASCADE, which empties shapes (unchanged) too
            conn.execute("INSERT INTO kinds (name, pad) SELECT 'big', repeat('x', 1000) FROM generate_series(1, 2000)")
            assert list(app.reset().values()) == [
                "2 table(s) emptied, 2 given back their rows from after the release phase"
            ]
            assert {table: rows(conn, table) for table in seeded} == seeded
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (0,)
    finally:
        app.stop()
        shutil.rmtree(folder.parent, ignore_errors=True)
