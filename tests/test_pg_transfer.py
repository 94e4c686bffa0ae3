"""`dynosim pg:pull` and `pg:push` as a user types them: the app's Postgres add-on (on both backends) on one
side, and on the other a second, real Postgres standing for the user's own (initdb + pg_ctl in a temp
folder, reached through PGHOST/PGPORT/PGUSER as a local database name, or by URL), with the real client
tools and Heroku's rules about targets and output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CACHE_DIR, DynosimRun, free_port, make_app, ok, one_line_error, remove_app_containers

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(shutil.which("pg_dump") is None, reason="needs pg_dump (apt-get install postgresql-client)"),
]

AS_USER = ["unshare", "--user", "--map-user=1000", "--map-group=1000", "--"] if os.geteuid() == 0 else []
SCHEMA = """
CREATE TABLE items (id int PRIMARY KEY, digest text NOT NULL);
CREATE TABLE events (id int PRIMARY KEY, item_id int NOT NULL REFERENCES items, kind text);
CREATE INDEX events_item ON events (item_id);
INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 500) g;
INSERT INTO events SELECT g, g, 'k' || (g % 3) FROM generate_series(1, 500) g;
"""
COUNTS = "SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM events), (SELECT sum(length(digest)) FROM items)"
OWNERS = (
    "SELECT string_agg(tablename || '=' || (tableowner = current_user)::text, ',' ORDER BY tablename)"
    " FROM pg_tables WHERE schemaname = 'public'"
)
TABLES = "SELECT count(*) FROM pg_stat_user_tables"


@dataclass
class LocalPostgres:
    """The user's own Postgres: a throwaway cluster whose superuser is `local`, trusted over TCP."""

    folder: Path
    port: int
    bindir: Path

    def env(self, user: str = "local") -> dict[str, str]:
        return {"PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGUSER": user}

    def url(self, database: str, host: str = "127.0.0.1", user: str = "local") -> str:
        return f"postgres://{user}@{host}:{self.port}/{database}"

    def psql(self, database: str, sql: str) -> str:
        done = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql],
            env={**os.environ, **self.env()}, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def databases(self) -> set[str]:
        return set(self.psql("postgres", "SELECT datname FROM pg_database").split())


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    from dynosim.addons.backends.native import NativeBackend
    from dynosim.addons.services.postgres_native import find_binaries

    backend = NativeBackend(lambda _: None)
    bins = find_binaries(backend)
    backend.close()
    folder = tmp_path_factory.mktemp("localpg")
    data, port = folder / "data", free_port()

    def tool(*argv: str) -> None:
        subprocess.run([*AS_USER, *argv], check=True, capture_output=True, cwd=folder)

    tool(bins["initdb"], "-D", str(data), "-U", "local", "--auth=trust", "--no-sync", "-E", "UTF8")
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={folder}"
    tool(bins["pg_ctl"], "start", "-w", "-s", "-D", str(data), "-l", str(folder / "log"), "-o", options)
    try:
        yield LocalPostgres(folder, port, bins.bindir)
    finally:
        tool(bins["pg_ctl"], "stop", "-w", "-s", "-m", "immediate", "-D", str(data))


@pytest.fixture
def app(tmp_path: Path, addon_backend: str) -> Iterator[Path]:
    folder = make_app(tmp_path)
    ok(cli(folder, "addons:create", "heroku-postgresql", "--backend", addon_backend))
    yield folder
    if addon_backend == "docker":
        remove_app_containers(folder / ".dynosim")


def cli(app: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`dynosim ARGS` in the app's folder, with the user's libpq environment `env`."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    full.update(DYNOSIM_CACHE_DIR=str(CACHE_DIR), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "dynosim", *args], cwd=app, env=full, capture_output=True, text=True, timeout=180,
        check=False,
    )  # fmt: skip


def addon_sql(app: Path, sql: str) -> str:
    """A query on the add-on as the app's role (pg:psql, as a user would)."""
    return ok(cli(app, "pg:psql", "--", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql)).strip()


def addon_name(app: Path) -> str:
    [row] = json.loads(ok(cli(app, "addons", "--json")))
    return str(row["name"])


def colour(app: Path) -> str:
    [row] = json.loads(ok(cli(app, "addons", "--json")))
    return next(v for v in row["config_vars"] if v.startswith("HEROKU_POSTGRESQL_")).removesuffix("_URL")


# --- pg:pull ----------------------------------------------------------------------------------------


def test_pull_creates_the_local_database_and_refuses_one_that_exists(app: Path, local: LocalPostgres) -> None:
    addon_sql(app, SCHEMA)
    expected = addon_sql(app, COUNTS)
    name = addon_name(app)
    target = f"pulled_{os.getpid()}_{app.parent.name[-4:]}".lower()

    pulled = cli(app, "pg:pull", "DATABASE", target, env=local.env())
    assert ok(pulled).splitlines() == [f"Pulling {name} to {target}", "Pulling complete."]
    verbose = pulled.stderr.splitlines()  # the tools' --verbose lines, as Heroku's CLI shows them
    assert 'pg_dump: dumping contents of table "public.items"' in verbose
    assert 'pg_restore: creating TABLE "public.items"' in verbose
    assert local.psql(target, COUNTS) == expected
    assert local.psql(target, OWNERS) == "events=true,items=true"  # --no-owner: the local user's tables

    local.psql(target, "DELETE FROM events WHERE id > 250")
    again = cli(app, "pg:pull", "DATABASE", target, env=local.env())
    one_line_error(again, f'database "{target}" already exists', f"dropdb {target}")
    assert local.psql(target, "SELECT count(*) FROM events") == "250"  # untouched


def test_pull_by_colour_into_a_localhost_url_excluding_table_data(app: Path, local: LocalPostgres) -> None:
    addon_sql(app, SCHEMA)
    target = f"bycolour_{os.getpid()}_{app.parent.name[-4:]}".lower()
    url = local.url(target, host="localhost")  # localhost: created, as a name is
    ok(cli(app, "pg:pull", colour(app), url, "--exclude-table-data", " events ; nothing_else", env=local.env()))
    assert local.psql(target, "SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM events)") == "500|0"


def test_pull_into_a_remote_url_needs_an_empty_database(app: Path, local: LocalPostgres) -> None:
    addon_sql(app, SCHEMA)
    expected = addon_sql(app, COUNTS)
    empty, full = (f"{kind}_{os.getpid()}_{app.parent.name[-4:]}".lower() for kind in ("empty", "full"))
    local.psql("postgres", f"CREATE DATABASE {empty}")
    local.psql("postgres", f"CREATE DATABASE {full}")
    local.psql(full, "CREATE TABLE mine (x int); INSERT INTO mine VALUES (7)")

    local.psql(empty, "CREATE EXTENSION hstore")  # no tables: still empty, but not the add-on's extensions
    pulled = cli(app, "pg:pull", "DATABASE", local.url(empty))  # 127.0.0.1 is "remote": it must exist, empty
    ok(pulled)
    assert local.psql(empty, COUNTS) == expected
    warning = [line.removeprefix(" ▸    ") for line in pulled.stderr.splitlines() if line.startswith(" ▸    ")]
    assert warning[:4] == ["Extensions in newly created target database differ from existing source database.",
                           "Target extensions:", "hstore", "plpgsql"]  # fmt: skip

    refused = cli(app, "pg:pull", "DATABASE", local.url(full))
    one_line_error(refused, "Remote database is not empty. Please create a new database")
    assert local.psql(full, "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'public'") == "mine"


@pytest.mark.parametrize("addon_backend", ["native"], indirect=True)
def test_a_pull_that_fails_halfway_leaves_no_database_behind(app: Path, local: LocalPostgres) -> None:
    addon_sql(app, SCHEMA)
    # the add-on's superuser adds an extension only a superuser may create; the local user is not one
    from dynosim.addons import AddonRequest, Addons

    addons = Addons(app / ".dynosim", [AddonRequest("heroku-postgresql")], backend="native", say=lambda _: None)
    addons.start()
    try:
        record = json.loads((app / ".dynosim" / "addons.json").read_text())["addons"][0]
        subprocess.run(
            [str(local.bindir / "psql"), "-X", "-h", "127.0.0.1", "-p", str(record["port"]), "-U", "postgres",
             "-d", record["database"], "-c", "CREATE EXTENSION file_fdw"],
            env={**os.environ, "PGPASSWORD": record["admin_password"]}, check=True, capture_output=True,
        )  # fmt: skip
    finally:
        addons.stop()
    user = f"alice{app.parent.name[-4:]}".lower()
    local.psql("postgres", f"CREATE ROLE {user} LOGIN CREATEDB")
    target = f"half_{os.getpid()}_{app.parent.name[-4:]}".lower()

    failed = cli(app, "pg:pull", "DATABASE", target, env=local.env(user))
    one_line_error(failed, "failed", 'permission denied to create extension "file_fdw"', "dropped again")
    assert target not in local.databases()


# --- pg:push ----------------------------------------------------------------------------------------


def test_push_fills_the_empty_addon_as_the_apps_role(app: Path, local: LocalPostgres) -> None:
    source = f"source_{os.getpid()}_{app.parent.name[-4:]}".lower()
    local.psql("postgres", f"CREATE DATABASE {source}")
    local.psql(source, SCHEMA)
    name = addon_name(app)

    pushed = cli(app, "pg:push", source, "DATABASE", env=local.env())
    assert ok(pushed).splitlines() == [f"Pushing {source} to {name}", "Pushing complete."]
    assert addon_sql(app, COUNTS) == local.psql(source, COUNTS)
    assert addon_sql(app, OWNERS) == "events=true,items=true"  # the app owns what was pushed

    again = cli(app, "pg:push", local.url(source), "DATABASE")
    one_line_error(again, "Remote database is not empty.", "dynosim pg:reset DATABASE --confirm app")
    assert addon_sql(app, "SELECT count(*) FROM items") == "500"


@pytest.mark.parametrize("addon_backend", ["native"], indirect=True)
def test_pull_and_push_use_the_running_apps_server(app: Path, local: LocalPostgres, dynosim: type[DynosimRun]) -> None:
    run = dynosim(app, "--addons", "native")
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up", timeout=120)
    source = f"live_{os.getpid()}_{app.parent.name[-4:]}".lower()
    local.psql("postgres", f"CREATE DATABASE {source}")
    local.psql(source, SCHEMA)

    pushed = cli(app, "pg:push", source, "DATABASE", env=local.env())
    ok(pushed)
    assert "for this session" not in pushed.stderr  # the run's own server, not one started for the copy
    pulled = cli(app, "pg:pull", "DATABASE", f"{source}_back", env=local.env())
    ok(pulled)
    assert "for this session" not in pulled.stderr
    assert local.psql(f"{source}_back", COUNTS) == local.psql(source, COUNTS)
    assert run.stop() == 0


@pytest.mark.parametrize("addon_backend", ["native"], indirect=True)
def test_a_push_that_fails_halfway_leaves_the_addon_empty(app: Path, local: LocalPostgres) -> None:
    source = f"superuser_{os.getpid()}_{app.parent.name[-4:]}".lower()
    local.psql("postgres", f"CREATE DATABASE {source}")
    local.psql(source, SCHEMA + "CREATE EXTENSION file_fdw;")  # the app's role may not create it

    failed = cli(app, "pg:push", source, "DATABASE", env=local.env())
    one_line_error(failed, 'permission denied to create extension "file_fdw"', "is empty, as before")
    assert addon_sql(app, TABLES) == "0"


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize("addon_backend", ["native"], indirect=True)
def test_bad_input_is_one_line_and_changes_nothing(app: Path, local: LocalPostgres) -> None:
    before = local.databases()
    one_line_error(cli(app, "pg:pull", "NOPE", "newdb", env=local.env()), 'no add-on "NOPE"', "dynosim addons")
    one_line_error(cli(app, "pg:pull", "DATABASE", "postgres://local@127.0.0.1:1/x"), "does not answer",
                   "Connection refused", "check the URL")  # fmt: skip
    one_line_error(cli(app, "pg:push", "postgres://u:secret@127.0.0.1:1/x", "DATABASE"), "does not answer")
    assert "secret" not in cli(app, "pg:push", "postgres://u:secret@127.0.0.1:1/x", "DATABASE").stderr
    one_line_error(cli(app, "pg:push", "nosuchdb", "DATABASE", env=local.env()), '"nosuchdb" does not exist')
    nobody = local.url("postgres", user="nobody")
    one_line_error(cli(app, "pg:push", nobody, "DATABASE"), "refused the connection", 'role "nobody" does not')
    one_line_error(cli(app, "pg:pull", "DATABASE", "postgres://host:5432"), "is not a database URL")
    one_line_error(cli(app, "pg:push", "x", "REDIS", env=local.env()), 'no add-on "REDIS"')
    assert local.databases() == before
    assert addon_sql(app, TABLES) == "0"
