"""pg:backups on the real servers of both backends: capture with pg_dump -Fc, list, info, download,
delete, restore (an id, a dump file, a URL) into a new database swapped in only when whole, a
Heroku-style dump whose owners and grants name roles that do not exist here, retention, and the
daily schedule a running app takes on its clock."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import CACHE_DIR, make_app, ok, one_line_error, remove_app_containers, run_dynosim

from dynosim.addons import AddonRequest, pgtools
from dynosim.addons.manage import Declared, Session

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(shutil.which("pg_dump") is None, reason="needs pg_dump (apt-get install postgresql-client)"),
]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    made = make_app(tmp_path, procfile="web: python server.py\n")
    yield made
    remove_app_containers(made / ".dynosim")


def dyn(app: Path, *args: str):  # type: ignore[no-untyped-def]
    return run_dynosim(app, *args)


def psql(app: Path, sql: str) -> str:
    return ok(run_dynosim(app, "pg:psql", "--", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql)).strip()


def databases(app: Path) -> list[str]:
    """The server's databases but the templates and postgres: the app's, and any leftover."""
    found = psql(app, "select datname from pg_database where datname not in ('postgres', 'template0', 'template1')")
    return found.split()


def create(app: Path, backend: str, plan: str = "heroku-postgresql") -> str:
    out = ok(dyn(app, "addons:create", plan, "--backend", backend))
    return re.search(r"Created (\S+)", out)[1]  # type: ignore[index]


@pytest.fixture
def foreign_dump(app: Path, addon_backend: str) -> Path:
    """A pg_dump -Fc made as Heroku's are: its database owned by a role, its tables granted to another,
    both dropped afterwards, so neither exists where it is restored (the app's own add-on server)."""
    create(app, addon_backend)
    state = app / ".dynosim"
    declared = Declared(AddonRequest("heroku-postgresql"), "app.json")
    dump = app.parent / "heroku.dump"
    with Session(state, declared, None, addon_backend, lambda _: None) as session:
        record = session.record()
        tools = pgtools.tools_for(record)
        admin = pgtools.superuser_target(record)

        def sql(script: str, database: str = "postgres") -> None:
            pgtools.run(tools.command("psql", admin.on(database), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"),
                        script)  # fmt: skip

        sql("CREATE ROLE u4e8heroku LOGIN; CREATE ROLE reader_elsewhere; CREATE DATABASE d9foreign OWNER u4e8heroku;")
        sql(
            """SET ROLE u4e8heroku;
            CREATE TABLE widgets (id serial PRIMARY KEY, name text NOT NULL);
            INSERT INTO widgets (name) VALUES ('gear'), ('sprocket');
            CREATE VIEW widget_names AS SELECT name FROM widgets;
            GRANT SELECT ON widgets, widget_names TO reader_elsewhere;""",
            "d9foreign",
        )
        with open(dump, "wb") as out:
            pgtools.pipe(tools.command("pg_dump", admin.on("d9foreign"), "--format=custom"), out)
        sql("DROP DATABASE d9foreign; DROP ROLE u4e8heroku; DROP ROLE reader_elsewhere;")
    toc = subprocess.run(["pg_restore", "--list", str(dump)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"TABLE public widgets u4e8heroku$", toc, re.M), toc  # owned as Heroku's dumps are
    assert re.search(r"ACL public TABLE widgets u4e8heroku$", toc, re.M), toc  # and its GRANTs kept
    return dump


def app_session(app: Path, backend: str) -> Session:
    declared = Declared(AddonRequest("heroku-postgresql"), "app.json")
    return Session(app / ".dynosim", declared, None, backend, lambda _: None)


# --- capture, list, info, download, delete ----------------------------------------------------------


def test_capture_lists_informs_downloads_and_deletes(app: Path, addon_backend: str) -> None:
    name = create(app, addon_backend)
    assert "No backups. Capture one with dynosim pg:backups:capture" in ok(dyn(app, "pg:backups"))
    psql(app, "create table t (x int); insert into t values (1), (2)")

    captured = ok(dyn(app, "pg:backups:capture"))
    assert f"Starting backup of {name}... done" in captured
    assert captured.strip().endswith("Backing up DATABASE to b001... done")
    dump = app / ".dynosim" / "backups" / "b001.dump"
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert dump.read_bytes().startswith(b"PGDMP")  # pg_dump's custom format
    assert [p.name for p in dump.parent.iterdir() if p.name.endswith(".tmp")] == []

    listed = ok(dyn(app, "pg:backups")).splitlines()
    assert listed[:3] == ["=== Backups", "", listed[2]]
    assert listed[2].split() == ["ID", "Created", "at", "Status", "Size", "Database"]
    row = listed[4].split()
    assert row[0] == "b001" and row[4] == "Completed" and row[-1] == "DATABASE"
    assert "No restores found. Use dynosim pg:backups:restore to restore a backup" in listed

    info = ok(dyn(app, "pg:backups:info", "b1")).splitlines()  # by its number, as Heroku's CLI finds it
    assert info[0] == "=== Backup b001"
    fields = dict(line.split(": ", 1) for line in info[2:9])
    fields = {key: value.strip() for key, value in fields.items()}
    assert fields["Database"] == "DATABASE" and fields["Status"] == "Completed" and fields["Type"] == "Manual"
    assert re.fullmatch(r"\d+\.\d\dKB \(\d+% compression\)", fields["Backup Size"]), fields
    assert info[2].index("DATABASE") == info[8].index(fields["Backup Size"])  # values aligned, as Heroku's

    first = ok(dyn(app, "pg:backups:download"))
    second = ok(dyn(app, "pg:backups:download", "b001"))
    assert first.strip() == second.strip() == "Getting backup from app... done, #1"
    assert (app / "latest.dump").read_bytes() == (app / "latest.dump.1").read_bytes() == dump.read_bytes()
    ok(dyn(app, "pg:backups:download", "-o", str(app.parent / "mine.dump")))
    assert (app.parent / "mine.dump").read_bytes() == dump.read_bytes()
    assert ok(dyn(app, "pg:backups:url")).strip() == dump.resolve().as_uri()

    one_line_error(dyn(app, "pg:backups:info", "b101"), "Backup b101 not found for app")
    one_line_error(dyn(app, "pg:backups:delete", "b001"), "pass --confirm app")
    one_line_error(dyn(app, "pg:backups:delete", "b001", "--confirm", "other"), "Confirmation other did not match app")
    one_line_error(dyn(app, "pg:backups:delete", "b007", "--confirm", "app"), "Backup b007 not found for app")
    assert dump.exists()
    assert (
        ok(dyn(app, "pg:backups:delete", "b001", "--confirm", "app")).strip() == "Deleting backup b001 on app... done"
    )
    assert not dump.exists()
    assert "No backups. Capture one with" in ok(dyn(app, "pg:backups"))
    one_line_error(dyn(app, "pg:backups:download"), "No backups for app. Capture one with dynosim pg:backups:capture")


# --- restore ----------------------------------------------------------------------------------------


def test_a_heroku_dump_with_foreign_owners_restores_and_a_truncated_one_changes_nothing(
    app: Path, addon_backend: str, foreign_dump: Path
) -> None:
    psql(app, "create table t (x int); insert into t values (1), (2)")
    before = databases(app)

    truncated = app.parent / "truncated.dump"
    truncated.write_bytes(foreign_dump.read_bytes()[: foreign_dump.stat().st_size // 2])
    error = one_line_error(
        dyn(app, "pg:backups:restore", str(truncated), "--confirm", "app"),
        f"restoring {truncated} failed and the app's database is untouched",
        "pg_restore",
    )
    assert "end of file" in error or "could not read" in error, error
    assert psql(app, "select count(*) from t") == "2"
    assert databases(app) == before  # no scratch database left behind

    restored = ok(dyn(app, "pg:backups:restore", str(foreign_dump), "--confirm", "app"))
    assert f"Starting restore of {foreign_dump} to " in restored
    assert restored.strip().endswith("Restoring... done")
    assert databases(app) == before  # the same name, the old database gone

    with app_session(app, addon_backend) as session, psycopg.connect(session.vars["DATABASE_URL"]) as conn:
        assert conn.execute("select to_regclass('t')").fetchone() == (None,)  # replaced, not merged
        assert [r[0] for r in conn.execute("select name from widget_names order by 1")] == ["gear", "sprocket"]
        conn.execute("insert into widgets (name) values ('cog')")  # the sequence and table are the app's
        owners = conn.execute(
            "select distinct pg_get_userbyid(relowner) = current_user from pg_class "
            "where relnamespace = 'public'::regnamespace"
        ).fetchall()
        assert owners == [(True,)]
        conn.commit()

    listed = ok(dyn(app, "pg:backups"))
    restores = [line.split() for line in listed.splitlines() if re.match(r"r\d{3} ", line)]
    assert [(r[0], r[4]) for r in restores] == [("r002", "Completed"), ("r001", "Failed")]


def test_restore_by_id_and_from_a_url_and_bad_input_leave_the_database_untouched(app: Path) -> None:
    create(app, "native")  # the same code on docker: the test above restores there
    one_line_error(
        dyn(app, "pg:backups:restore", "--confirm", "app"),
        "No backups for app. Capture one with dynosim pg:backups:capture",
    )
    psql(app, "create table t (x int); insert into t values (1)")
    ok(dyn(app, "pg:backups:capture"))
    psql(app, "insert into t values (2), (3)")
    before = databases(app)

    one_line_error(dyn(app, "pg:backups:restore"), "pass --confirm app")
    one_line_error(dyn(app, "pg:backups:restore", "b101", "--confirm", "app"), "Backup b101 not found for app")
    one_line_error(
        dyn(app, "pg:backups:restore", "nosuch.dump", "--confirm", "app"), "nosuch.dump: no such backup or file"
    )
    garbage = app.parent / "garbage.dump"
    garbage.write_bytes(b"this is not a dump\n" * 100)
    one_line_error(dyn(app, "pg:backups:restore", str(garbage), "--confirm", "app"), "the app's database is untouched")
    with socket_closed() as port:
        one_line_error(
            dyn(app, "pg:backups:restore", f"http://127.0.0.1:{port}/latest.dump", "--confirm", "app"),
            f"http://127.0.0.1:{port}/latest.dump does not answer",
        )
    with serving(app / ".dynosim" / "backups") as base:
        one_line_error(dyn(app, "pg:backups:restore", f"{base}/b404.dump", "--confirm", "app"), "answered 404")
        assert psql(app, "select count(*) from t") == "3"
        assert databases(app) == before

        ok(dyn(app, "pg:backups:restore", f"{base}/b001.dump", "--confirm", "app"))  # streamed from the URL
        assert psql(app, "select count(*) from t") == "1"
    psql(app, "insert into t values (4)")
    assert ok(dyn(app, "pg:backups:restore", "b001", "--confirm", "app")).startswith("Starting restore of b001 to ")
    assert psql(app, "select count(*) from t") == "1"
    assert databases(app) == before


def test_a_restore_stopped_with_ctrl_c_leaves_no_scratch_database(app: Path) -> None:
    create(app, "native")
    psql(app, "create table t (x int); insert into t values (1)")
    ok(dyn(app, "pg:backups:capture"))
    before = databases(app)
    dump = (app / ".dynosim" / "backups" / "b001.dump").read_bytes()
    with stalling(dump[:200]) as server:  # pg_restore has begun, the rest of the dump never comes
        restore = subprocess.Popen(
            [sys.executable, "-m", "dynosim", "pg:backups:restore", server.url, "--confirm", "app"], cwd=app,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "DYNOSIM_CACHE_DIR": str(CACHE_DIR)},
        )  # fmt: skip
        assert server.sent.wait(30)
        time.sleep(0.5)
        restore.send_signal(signal.SIGINT)
        out, _ = restore.communicate(timeout=30)
    assert restore.returncode != 0 and "Traceback" not in out, out
    assert databases(app) == before
    assert psql(app, "select count(*) from t") == "1"


def test_the_plan_keeps_its_manual_backups_and_they_outlive_the_database(app: Path) -> None:
    create(app, "native", "heroku-postgresql:essential-0")  # keeps 2 manual backups
    psql(app, "create table t (x int); insert into t values (42)")
    for _ in range(3):
        ok(dyn(app, "pg:backups:capture"))
    ids = [line.split()[0] for line in ok(dyn(app, "pg:backups")).splitlines() if re.match(r"b\d{3} ", line)]
    assert ids == ["b003", "b002"]  # the oldest went, newest first
    assert sorted(p.name for p in (app / ".dynosim" / "backups").glob("*.dump")) == ["b002.dump", "b003.dump"]

    ok(dyn(app, "pg:reset", "--confirm", "app"))
    ok(dyn(app, "addons:destroy", "heroku-postgresql", "--confirm", "app"))
    assert (app / ".dynosim" / "backups" / "b003.dump").exists()  # the app's, not the add-on's
    create(app, "native")  # another database, empty
    ok(dyn(app, "pg:backups:restore", "b003", "--confirm", "app"))
    assert psql(app, "select x from t") == "42"


def test_a_restore_in_a_running_app_ends_its_connections_and_the_new_data_is_served(app: Path, dynosim: type) -> None:
    create(app, "native", "heroku-postgresql:essential-0")  # 20 connections for the app's role
    psql(app, "create table t (x int); insert into t values (1)")
    ok(dyn(app, "pg:backups:capture"))
    psql(app, "insert into t values (2)")
    run = dynosim(app)
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    url = ok(dyn(app, "config:get", "DATABASE_URL")).strip()
    pool = [psycopg.connect(url, autocommit=True) for _ in range(20)]  # a pool holding every connection
    try:
        with pytest.raises(psycopg.OperationalError, match="too many connections"):
            psycopg.connect(url)
        assert pool[0].execute("select count(*) from t").fetchone() == (2,)
        ok(dyn(app, "pg:backups:capture"))  # neither needs one of the app's connections
        ok(dyn(app, "pg:backups:restore", "b001", "--confirm", "app"))
        for held in pool:
            with pytest.raises(psycopg.OperationalError):
                held.execute("select 1")  # ended, as Heroku ends them
    finally:
        for held in pool:
            held.close()
    with psycopg.connect(url) as fresh:
        assert fresh.execute("select count(*) from t").fetchone() == (1,)
    assert run.stop() == 0


def test_retention_keeps_the_newest_scheduled_backups_daily_then_one_a_week() -> None:
    from dynosim.addons.backups import Transfer, expired

    day = 86400.0
    start = 1_700_000_000.0  # a Tuesday
    made = [Transfer(n, "backup", "DATABASE", "", "pg", start + n * day, start + n * day, True, True)
            for n in range(1, 41)]  # fmt: skip
    manual = [Transfer(100 + n, "backup", "DATABASE", "", "pg", start, start, True) for n in range(30)]
    gone = expired([*made, *manual], made[-1], "heroku-postgresql:standard-0")  # 7 daily, 4 weekly
    kept = sorted({t.num for t in made} - {t.num for t in gone})
    assert kept[-7:] == list(range(34, 41))  # the last seven days
    weekly = kept[:-7]
    assert len(weekly) == 4 and len({(start + n * day) // (7 * day) for n in weekly}) == 4
    assert not [t for t in gone if not t.scheduled]  # manual backups are counted apart
    # standard keeps 25 manual backups: of 30, the 5 oldest go
    assert sorted(t.num for t in expired([*made, *manual], manual[-1], "heroku-postgresql:standard-0")) == [
        100, 101, 102, 103, 104
    ]  # fmt: skip


# --- schedules --------------------------------------------------------------------------------------


def test_schedules_are_set_listed_and_removed_with_herokus_words(app: Path) -> None:
    name = create(app, "native")
    for bad in ("25:00", "2:30", "noon"):
        one_line_error(
            dyn(app, "pg:backups:schedule", "--at", bad),
            "Invalid schedule format: expected --at '[HOUR]:00 [TIMEZONE]'",
        )
    one_line_error(dyn(app, "pg:backups:schedule", "--at", "2:00 Mars/Olympus"), "Unknown timezone Mars/Olympus")
    assert ok(dyn(app, "pg:backups:schedule", "--at", "02:00 EST")).strip() == (
        f"Scheduling automatic daily backups of {name} at 02:00 America/New_York... done"
    )
    ok(dyn(app, "pg:backups:schedule", "DATABASE", "--at", "4:00 Europe/Berlin"))  # replaces it
    assert ok(dyn(app, "pg:backups:schedules")).splitlines() == [
        "=== Backup Schedules", "", "DATABASE_URL: daily at 4:00 Europe/Berlin"
    ]  # fmt: skip
    assert ok(dyn(app, "pg:backups:unschedule")).strip() == "Unscheduling DATABASE_URL daily backups... done"
    empty = dyn(app, "pg:backups:schedules")
    assert empty.returncode == 0 and "No backup schedules found on app" in empty.stderr
    one_line_error(dyn(app, "pg:backups:unschedule"), "No schedules on app")


def test_a_running_app_takes_its_daily_backups_on_its_clock_keeping_the_plans_seven(app: Path, dynosim: type) -> None:
    create(app, "native", "heroku-postgresql:essential-0")  # 7 daily, no weekly
    psql(app, "create table t (x int); insert into t values (1)")
    ok(dyn(app, "pg:backups:capture"))  # a manual one, which daily retention leaves alone
    ok(dyn(app, "pg:backups:schedule", "--at", "3:00 UTC"))
    run = dynosim(app, "--clock-speed", "86400")  # a day a second
    run.wait_for(r"pg:backups: scheduled backup (a\d{3}) of DATABASE", timeout=60)
    for _ in range(8):
        run.wait_for(r"pg:backups: scheduled backup a\d{3} of DATABASE", timeout=30, after_last=True)
    assert run.stop() == 0
    listed = ok(dyn(app, "pg:backups")).splitlines()
    scheduled = [line.split()[0] for line in listed if re.match(r"a\d{3} ", line)]
    assert len(scheduled) == 7, listed
    assert [line.split()[0] for line in listed if re.match(r"b\d{3} ", line)] == ["b001"]
    info = ok(dyn(app, "pg:backups:info", scheduled[0]))
    assert re.search(r"^Type:\s+Scheduled$", info, re.M), info
    kept = sorted(p.stem for p in (app / ".dynosim" / "backups").glob("*.dump"))
    assert kept == sorted(["b001", *scheduled])


# --- helpers ----------------------------------------------------------------------------------------


class socket_closed:
    """A loopback port nothing listens on."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        pass


class stalling:
    """A URL whose server sends `head` of a body it says is longer, then nothing more."""

    def __init__(self, head: bytes) -> None:
        self.sent, self.done = threading.Event(), threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(head) * 100))
                self.end_headers()
                self.wfile.write(head)
                self.wfile.flush()
                owner.sent.set()
                owner.done.wait(30)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/latest.dump"

    def __enter__(self) -> stalling:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.server.shutdown()
        self.server.server_close()


class serving:
    """An HTTP server over loopback serving one folder."""

    def __init__(self, folder: Path) -> None:
        handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder))  # noqa: E731
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.RequestHandlerClass.log_message = lambda *a: None  # type: ignore[attr-defined]

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
