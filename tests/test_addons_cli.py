"""The add-on commands as a user types them: `dynosim addons:create`, `addons`, `addons:destroy`,
`pg:psql`, `pg:reset`, `redis:cli`, on a copy of the dynolab app, with real servers and real clients.

Add-ons start on the native backend (`--addons native`): a Docker engine may answer here without images.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import psutil
import pytest
from conftest import CACHE_DIR, make_app, ok, one_line_error, run_dynosim

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("psql") is None, reason="needs psql (apt-get install postgresql-client)"),
]
needs_redis_cli = pytest.mark.skipif(
    shutil.which("redis-cli") is None, reason="needs redis-cli (apt-get install redis-tools)"
)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return make_app(tmp_path)


def listing(app: Path) -> list[dict]:
    return json.loads(ok(run_dynosim(app, "addons", "--json")))


def psql(app: Path, sql: str, *extra: str):  # type: ignore[no-untyped-def]
    return run_dynosim(app, "pg:psql", "--addons", "native", *extra, "--", "-X", "-A", "-t", "-c", sql)


def servers_of(app: Path) -> list[psutil.Process]:
    """Add-on servers still running on this app's folder."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
        if str(app / ".dynosim") in text:
            found.append(proc)
    return found


def test_create_list_and_bad_names(app: Path) -> None:
    created = ok(run_dynosim(app, "addons:create", "heroku-postgresql:essential-0", "--as", "DATABASE"))
    lines = created.splitlines()
    assert lines[0] == "Creating heroku-postgresql:essential-0 on ⬢ app... done"
    assert lines[1].startswith("Created postgresql-") and lines[1].endswith(" as DATABASE_URL")
    assert "next `dynosim run`" in created
    name = lines[1].split()[1]

    [row] = listing(app)
    endpoint = row.pop("endpoint")  # provisioned at create, as on Heroku: its port is fixed
    assert endpoint.startswith("127.0.0.1:"), endpoint
    assert row == {
        "name": name, "addon": "heroku-postgresql", "plan": "essential-0", "service": "postgres", "backend": "",
        "attached_as": "DATABASE", "config_vars": ["DATABASE_URL"], "declared_in": "addons:create", "size": None,
    }  # fmt: skip
    table = ok(run_dynosim(app, "addons")).splitlines()
    assert table[0].split() == ["Add-on", "Plan", "Service", "Backend", "Endpoint", "Attached", "as", "Size"]
    assert table[2].split() == [
        "heroku-postgresql",
        f"({name})",
        "essential-0",
        "postgres",
        "(next",
        "run)",
        endpoint,
        "DATABASE_URL",
        "-",
    ]

    one_line_error(
        run_dynosim(app, "addons:create", "nosuch"), 'unknown add-on "nosuch"', "heroku-postgresql", "mailgun"
    )
    one_line_error(run_dynosim(app, "addons:create", "heroku-postgresql"), "already attached as DATABASE", "--as")
    one_line_error(
        run_dynosim(app, "addons:create", "heroku-redis", "--as", "database"), "already attached as DATABASE"
    )
    assert len(listing(app)) == 1  # the refused ones left nothing behind

    # app.json's add-ons are listed too, and their attachment names are taken.
    (app / "app.json").write_text(json.dumps({"addons": [{"plan": "heroku-redis", "as": "CACHE"}]}))
    assert [(r["addon"], r["attached_as"], r["declared_in"]) for r in listing(app)] == [
        ("heroku-redis", "CACHE", "app.json"),
        ("heroku-postgresql", "DATABASE", "addons:create"),
    ]  # fmt: skip (in the order a run starts them)
    one_line_error(
        run_dynosim(app, "addons:create", "heroku-redis", "--as", "CACHE"), "already attached as CACHE", "app.json"
    )


def test_psql_session_then_destroy_asks_and_keeps_data_until_confirmed(app: Path) -> None:
    ok(run_dynosim(app, "addons:create", "heroku-postgresql", "--as", "DATABASE"))
    made = psql(app, "create table notes (body text); insert into notes values ('kept'); select current_user")
    out = ok(made)
    assert out.splitlines()[-1].startswith("u")  # the app's own role, as DATABASE_URL logs in
    assert "for this session" in made.stderr
    assert servers_of(app) == []  # started for the session, stopped after it

    [row] = listing(app)
    assert row["backend"] == "native" and row["endpoint"].startswith("127.0.0.1:") and row["size"] > 1_000_000
    folder = app / ".dynosim" / "addons" / row["name"]
    assert (folder / "data" / "PG_VERSION").exists()

    one_line_error(
        run_dynosim(app, "addons:destroy", "DATABASE", "--confirm", "not-the-app"),
        "Confirmation not-the-app did not match app. Aborted",
        "nothing was changed",
    )
    one_line_error(run_dynosim(app, "addons:destroy", "DATABASE"), "--confirm app")  # no terminal to ask on
    one_line_error(run_dynosim(app, "addons:destroy", "nosuch", "--confirm", "app"), 'no add-on "nosuch"', row["name"])
    assert folder.exists()
    assert ok(psql(app, "select body from notes")).strip() == "kept"

    gone = ok(run_dynosim(app, "addons:destroy", row["name"], "--confirm", "app"))
    assert gone.strip() == f"Destroying {row['name']} on ⬢ app... done"
    assert not folder.exists()
    assert listing(app) == []
    one_line_error(psql(app, "select 1"), "declares no postgres add-on", "addons:create heroku-postgresql")


def test_destroy_asks_on_a_terminal(app: Path) -> None:
    pexpect = pytest.importorskip("pexpect")
    ok(run_dynosim(app, "addons:create", "heroku-postgresql"))
    env = {**os.environ, "DYNOSIM_CACHE_DIR": str(CACHE_DIR)}
    child = pexpect.spawn(sys.executable, ["-m", "dynosim", "addons:destroy", "postgres"], cwd=str(app), env=env,
                          encoding="utf-8", timeout=30)  # fmt: skip
    child.expect("To proceed, type app or re-run this command with --confirm app")
    child.expect("> ")
    child.sendline("ap")
    child.expect("Confirmation did not match app. Aborted; nothing was changed")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert len(listing(app)) == 1

    child = pexpect.spawn(sys.executable, ["-m", "dynosim", "addons:destroy", "postgres"], cwd=str(app), env=env,
                          encoding="utf-8", timeout=30)  # fmt: skip
    child.expect("> ")
    child.sendline("app")
    child.expect(r"Destroying postgresql-\S+ on ⬢ app\.\.\. done")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert listing(app) == []


def test_pg_reset_empties_the_database_keeping_the_role(app: Path) -> None:
    ok(run_dynosim(app, "addons:create", "heroku-postgresql"))
    ok(psql(app, "create table t (x int)"))
    one_line_error(
        run_dynosim(app, "pg:reset", "--addons", "native", "--confirm", "other"),
        "Confirmation other did not match app. Aborted",
    )
    assert ok(psql(app, "select count(*) from t")).strip() == "0"
    reset = ok(run_dynosim(app, "pg:reset", "--addons", "native", "--confirm", "app"))
    assert reset.startswith("Resetting postgresql-") and reset.strip().endswith("... done")
    assert ok(psql(app, "select to_regclass('t') is null, pg_catalog.pg_get_userbyid(datdba) = current_user "
                        "from pg_database where datname = current_database()")).strip() == "t|t"  # fmt: skip


@needs_redis_cli
def test_redis_cli_passes_its_arguments_and_data_stays(app: Path) -> None:
    ok(run_dynosim(app, "addons:create", "heroku-redis"))
    assert ok(run_dynosim(app, "redis:cli", "--addons", "native", "PING")).strip() == "PONG"
    assert ok(run_dynosim(app, "redis:cli", "--addons", "native", "--", "SET", "greeting", "hello")).strip() == "OK"
    assert ok(run_dynosim(app, "redis:cli", "--addons", "native", "REDIS", "GET", "greeting")).strip() == "hello"
    assert servers_of(app) == []
    one_line_error(run_dynosim(app, "pg:psql"), "declares no postgres add-on")


@needs_redis_cli
def test_create_chooses_the_backend_once_and_no_two_addons_share_a_config_var(app: Path) -> None:
    one_line_error(run_dynosim(app, "addons:create", "mailgun", "--backend", "docker"), "mailgun", "drop --backend")
    created = ok(run_dynosim(app, "addons:create", "heroku-redis", "--backend", "native"))
    name = created.splitlines()[1].split()[1]
    # the add-on runs where `addons:create` said, whatever a session's --addons says (no engine needed)
    assert ok(run_dynosim(app, "redis:cli", "--addons", "docker", "PING")).strip() == "PONG"
    [row] = listing(app)
    assert (row["name"], row["backend"]) == (name, "native")

    ok(run_dynosim(app, "addons:create", "heroku-postgresql"))
    [colour_var] = [v for r in listing(app) for v in r["config_vars"] if v.startswith("HEROKU_POSTGRESQL_")]
    clash = colour_var.removesuffix("_URL")
    one_line_error(
        run_dynosim(app, "addons:create", "heroku-redis", "--as", clash), f"already sets {colour_var}", "--as"
    )
    assert len(listing(app)) == 2  # refused: nothing written


def test_a_run_starts_declared_addons_and_the_clients_use_it(app: Path, dynosim) -> None:  # type: ignore[no-untyped-def]
    ok(run_dynosim(app, "addons:create", "heroku-postgresql"))
    ok(run_dynosim(app, "addons:create", "heroku-redis"))
    ok(run_dynosim(app, "addons:create", "mailgun"))
    run = dynosim(app, "--addons", "native")
    run.wait_for(
        r"heroku-postgresql \(postgresql-\S+\): postgres on 127\.0\.0\.1:\d+, native backend; sets DATABASE_URL"
    )
    run.wait_for(r"mailgun \(mailgun-\S+\): smtp on 127\.0\.0\.1:\d+, embedded backend; sets MAILGUN_SMTP_SERVER")
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")

    config = json.loads(ok(run_dynosim(app, "config", "--json")))
    port = config["DATABASE_URL"].rsplit(":", 1)[1].split("/")[0]
    used = psql(app, "select inet_server_port()")
    assert ok(used).strip() == port and "for this session" not in used.stderr  # the running server
    if shutil.which("redis-cli"):
        assert ok(run_dynosim(app, "redis:cli", "PING")).strip() == "PONG"

    one_line_error(
        run_dynosim(app, "addons:destroy", "DATABASE", "--confirm", "app"), "run` is active", "stop it first"
    )
    later = ok(run_dynosim(app, "addons:create", "searchbox"))
    assert "A run is active: the add-on starts with the next `dynosim run`" in later
    rows = {r["attached_as"]: r for r in listing(app)}
    assert rows["DATABASE"]["backend"] == "native" and rows["MAILGUN"]["backend"] == "embedded"
    assert rows["SEARCHBOX"]["backend"] == ""
    assert run.stop() == 0
    assert servers_of(app) == []


def test_a_second_session_uses_the_first_ones_server_and_leaves_it_running(app: Path) -> None:
    """`pg:psql` open in one terminal, `pg:info` in another: the second uses the server the first
    started, and does not stop it under it."""
    import subprocess
    import time

    from dynosim.addons.processes import accepts

    ok(run_dynosim(app, "addons:create", "heroku-postgresql", "--backend", "native"))
    env = {**os.environ, "DYNOSIM_CACHE_DIR": str(CACHE_DIR)}
    first = subprocess.Popen(
        [sys.executable, "-m", "dynosim", "pg:psql", "--", "-X", "-A", "-t", "-c", "select pg_sleep(6), 'slept'"],
        cwd=app, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        port = 0
        for _ in range(300):
            records = json.loads((app / ".dynosim" / "addons.json").read_text())["addons"]
            port = int(records[0].get("port") or 0) if records and records[0].get("backend") else 0
            if port and accepts(port):
                break
            time.sleep(0.1)
        time.sleep(1)  # psql is in its query
        info = ok(run_dynosim(app, "pg:info"))
        assert "Connections:" in info
        out, err = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 0, err
    assert out.strip().endswith("|slept")
    assert servers_of(app) == []  # the first session stopped its server when it ended
