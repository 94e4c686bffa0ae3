"""Heroku Postgres plans as Heroku enforces them, on the real server of both backends: a plan Heroku does
not have is refused before anything is written; the app's role gets the plan's connection limit (the
21st connection on essential-0 gets Postgres' own refusal); past the plan's storage the database is
Over Plan Capacity, then restricted to one connection with READ, DELETE and TRUNCATE, until it is back under.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from conftest import CACHE_DIR, free_port, make_app, remove_app_containers, run_dynosim

from dynosim import api
from dynosim.addons import AddonRequest, Addons

pytestmark = pytest.mark.timeout(180)
RESTRICTED = "Over Plan Capacity: Access Restricted"
ACTION_REQUIRED = "Over Plan Capacity: Action Required"


def dynosim_cli(app: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dynosim", *args],
        cwd=app,
        env={**os.environ, "DYNOSIM_CACHE_DIR": str(CACHE_DIR), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dynosim: error: "), result.stderr
    return lines[0]


# --- plans --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plan", "said"),
    [
        ("heroku-postgresql:hobby-dev", "heroku-postgresql:hobby-dev: The hobby-dev plan has reached end-of-life"),
        ("heroku-postgresql:mini", "The mini plan has reached end-of-life; use heroku-postgresql:essential-0"),
        ("heroku-postgresql:essential-9", 'heroku-postgresql has no plan "essential-9"; give one of its plans: '),
    ],
)
def test_addons_create_refuses_a_plan_heroku_does_not_have(tmp_path: Path, plan: str, said: str) -> None:
    app = make_app(tmp_path, procfile="web: python server.py\n")
    line = one_error_line(run_dynosim(app, "addons:create", plan))
    assert said in line and "essential-0, essential-1, essential-2, standard-0" in line, line
    assert not (app / ".dynosim" / "addons.json").exists()


def test_run_refuses_app_json_plan_heroku_retired_before_anything_is_written(tmp_path: Path) -> None:
    app = make_app(tmp_path, procfile="web: python server.py\n", app__json='{"addons": ["heroku-postgresql:basic"]}')
    line = one_error_line(dynosim_cli(app, "run", "--addons", "native", "--port", str(free_port())))
    assert "heroku-postgresql:basic: The basic plan has reached end-of-life" in line, line
    assert not (app / ".dynosim" / "addons.json").exists()
    assert not (app / ".dynosim" / "releases.json").exists()


def test_a_malformed_storage_override_is_refused_at_start(tmp_path: Path) -> None:
    app = make_app(tmp_path, procfile="web: python server.py\n", app__json='{"addons": ["heroku-postgresql"]}')
    result = dynosim_cli(
        app, "run", "--addons", "native", "--port", str(free_port()), env={"DYNOSIM_POSTGRES_STORAGE_LIMIT": "lots"}
    )
    line = one_error_line(result)
    assert "DYNOSIM_POSTGRES_STORAGE_LIMIT='lots' is not a size; write it like 10MB or 1GB" in line, line
    assert not (app / ".dynosim" / "addons.json").exists()


# --- the connection limit -----------------------------------------------------------------------------


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "app" / ".dynosim"
    yield state
    remove_app_containers(state)


def url_of(addons: Addons) -> str:
    (attachment,) = addons.start()
    return attachment.config_vars["DATABASE_URL"].replace("postgres://", "postgresql://", 1)


def record_of(state_dir: Path) -> dict[str, object]:
    (record,) = json.loads((state_dir / "addons.json").read_text())["addons"]
    return dict(record)


def superuser_url(state_dir: Path) -> str:
    record = record_of(state_dir)
    return f"postgresql://postgres:{record['admin_password']}@127.0.0.1:{record['port']}/postgres"


def test_the_21st_connection_on_essential_0_gets_postgres_refusal(state_dir: Path, addon_backend: str) -> None:
    with Addons(state_dir, [AddonRequest("heroku-postgresql:essential-0")], backend=addon_backend) as addons:
        url = url_of(addons)
        user = str(record_of(state_dir)["user"])
        held = [psycopg.connect(url, connect_timeout=10) for _ in range(20)]
        try:
            with pytest.raises(psycopg.OperationalError, match=f'FATAL:  too many connections for role "{user}"'):
                psycopg.connect(url, connect_timeout=10)
            with psycopg.connect(superuser_url(state_dir), connect_timeout=10) as admin:  # dynosim's own: not counted
                limit = admin.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
                assert limit == (20,)
        finally:
            for conn in held:
                conn.close()

    # a plan change takes effect at the next start: essential-2 allows 40
    with Addons(state_dir, [AddonRequest("heroku-postgresql:essential-2")], backend=addon_backend) as addons:
        url = url_of(addons)
        held = [psycopg.connect(url, connect_timeout=10) for _ in range(21)]
        for conn in held:
            conn.close()
        assert record_of(state_dir)["plan"] == "heroku-postgresql:essential-2"


# --- the storage limit ----------------------------------------------------------------------------------


def test_over_its_storage_the_database_is_restricted_until_back_under(
    state_dir: Path, addon_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DYNOSIM_POSTGRES_STORAGE_LIMIT", "10MB")
    monkeypatch.setenv("DYNOSIM_POSTGRES_CAPACITY_GRACE", "1h")
    said: list[str] = []
    with Addons(state_dir, [AddonRequest("heroku-postgresql")], backend=addon_backend, say=said.append) as addons:
        url = url_of(addons)
        assert record_of(state_dir)["capacity"]["status"] == "Available"  # type: ignore[index]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE big (v text)")  # 1 kB rows: below TOAST's threshold, so not compressed
            conn.execute("INSERT INTO big SELECT repeat('x', 1000) FROM generate_series(1, 5000)")

        now = datetime.now(UTC)
        (line,) = addons.check_capacity(now)
        assert f"{ACTION_REQUIRED}: the database uses " in line and "of the 10.0 MB essential-0 allows" in line, line
        assert record_of(state_dir)["capacity"]["status"] == ACTION_REQUIRED  # type: ignore[index]
        assert addons.check_capacity(now + timedelta(minutes=30)) == []  # said once
        app = psycopg.connect(url, autocommit=True)
        app.execute("INSERT INTO big VALUES ('still allowed')")

        (line,) = addons.check_capacity(now + timedelta(hours=1, seconds=1))  # past the enforcement date
        assert f"{RESTRICTED}: the database uses " in line, line
        assert record_of(state_dir)["capacity"]["status"] == RESTRICTED  # type: ignore[index]
        with pytest.raises(psycopg.OperationalError):
            app.execute("SELECT 1")  # its sessions were ended
        app = psycopg.connect(url, autocommit=True)
        user = str(record_of(state_dir)["user"])
        with pytest.raises(psycopg.OperationalError, match=f'too many connections for role "{user}"'):
            psycopg.connect(url, connect_timeout=10)  # one connection
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for table big"):
            app.execute("INSERT INTO big VALUES ('refused')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for table big"):
            app.execute("UPDATE big SET v = 'refused'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for schema public"):
            app.execute("CREATE TABLE more (n int)")
        assert app.execute("SELECT count(*) FROM big").fetchone() == (5001,)
        app.execute("DELETE FROM big WHERE v = 'still allowed'")
        app.execute("TRUNCATE big")

        (line,) = addons.check_capacity(now + timedelta(hours=2))
        assert "Available: the database is back within its plan's storage" in line, line
        assert record_of(state_dir)["capacity"]["status"] == "Available"  # type: ignore[index]
        app.execute("INSERT INTO big VALUES ('allowed again')")
        app.execute("CREATE TABLE more (n int)")
        psycopg.connect(url, connect_timeout=10).close()  # the plan's 20 again
        app.close()


def test_a_restricted_database_stays_restricted_across_a_restart(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DYNOSIM_POSTGRES_STORAGE_LIMIT", "10MB")
    monkeypatch.setenv("DYNOSIM_POSTGRES_CAPACITY_GRACE", "0s")
    with Addons(state_dir, [AddonRequest("heroku-postgresql")], backend="native") as addons:
        url = url_of(addons)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE big AS SELECT repeat('x', 1000) AS v FROM generate_series(1, 5000)")
        (line,) = addons.check_capacity(datetime.now(UTC))
        assert RESTRICTED in line, line
    said: list[str] = []
    with Addons(state_dir, [AddonRequest("heroku-postgresql")], backend="native", say=said.append) as addons:
        url = url_of(addons)
        assert any(f"{RESTRICTED}: the database uses " in line for line in said), said
        with psycopg.connect(url, autocommit=True) as app:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for table big"):
                app.execute("INSERT INTO big VALUES ('refused')")


def test_a_run_says_over_capacity_on_the_log_stream(tmp_path: Path, dynosim) -> None:  # type: ignore[no-untyped-def]
    app = make_app(tmp_path, procfile="web: python server.py\n", app__json='{"addons": ["heroku-postgresql"]}')
    env = {"DYNOSIM_POSTGRES_STORAGE_LIMIT": "10MB", "DYNOSIM_POSTGRES_CAPACITY_GRACE": "20s"}
    run = dynosim(app, "--addons", "native", "--clock-speed", "10", env=env)  # a check a second, 2 s of grace
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    url = api.config(app)["DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE big AS SELECT repeat('x', 1000) AS v FROM generate_series(1, 5000)")
    run.wait_for(rf"app\[heroku-postgres\]: heroku-postgresql \(postgresql-\S+\): {ACTION_REQUIRED}: ", timeout=30)
    run.wait_for(rf"app\[heroku-postgres\]: heroku-postgresql \(postgresql-\S+\): {RESTRICTED}: ", timeout=30)
    (record,) = json.loads((app / ".dynosim" / "addons.json").read_text())["addons"]
    assert record.get("capacity", {}).get("status", "Available") == RESTRICTED  # what pg:info prints
    assert run.stop() == 0


def test_addons_create_help_names_the_plans(tmp_path: Path) -> None:
    result = run_dynosim(tmp_path, "addons:create", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "heroku-postgresql:essential-0 (the default), essential-1, essential-2, standard-0…10" in text, text
