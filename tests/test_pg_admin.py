"""Heroku's Postgres operator verbs on the app's real server, as a user types them, on both backends:
`pg:info`, `pg:ps`, `pg:killall`, `pg:credentials`, `pg:credentials:url`, `pg:credentials:rotate`; and
what a rotation does to a running app (fixtures/rotation): a new release by the add-on, every dyno
restarted onto the new URL, and a process nothing restarts, which took the URL at import, failing
with Postgres' own error in `dynosim logs`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg
import pytest
from conftest import make_app, ok, one_line_error, remove_app_containers, run_dynosim

from dynosim.addons import STATE_FILE, AddonRequest, Addons

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(shutil.which("psql") is None, reason="needs psql (apt-get install postgresql-client)"),
]
ALIGNED = len("Continuous Protection: ")  # where Heroku's pg:info values start


@pytest.fixture
def app(tmp_path: Path, addon_backend: str) -> Iterator[Path]:
    """dynolab with one Postgres, created on the backend under test."""
    app = make_app(tmp_path)
    ok(run_dynosim(app, "addons:create", "heroku-postgresql", "--backend", addon_backend))
    yield app
    if addon_backend == "docker":
        remove_app_containers(app / ".dynosim")


def info_fields(text: str) -> dict[str, str]:
    """pg:info's `Key: value` lines, checked to be aligned as Heroku aligns them."""
    fields = {}
    for line in text.splitlines()[1:]:
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z/ -]+):( +)(.+)", line)
        assert match is not None and len(match.group(1)) + 1 + len(match.group(2)) == ALIGNED, line
        fields[match.group(1)] = match.group(3)
    return fields


def config_get(app: Path, name: str) -> str:
    return ok(run_dynosim(app, "config:get", name)).strip()


def psql(app: Path, sql: str) -> str:
    return ok(run_dynosim(app, "pg:psql", "--", "-X", "-A", "-t", "-c", sql)).strip()


# --- without a run: each verb starts the add-on for itself ----------------------------------------------


def test_info_and_credentials_show_the_real_server(app: Path) -> None:
    shown = ok(run_dynosim(app, "pg:info"))
    header = shown.splitlines()[0]
    assert re.fullmatch(r"=== DATABASE_URL, HEROKU_POSTGRESQL_[A-Z]+_URL", header), header
    fields = info_fields(shown)
    assert list(fields) == ["Plan", "Status", "Connections", "PG Version", "Created", "Data Size", "Tables",
                            "Fork/Follow", "Rollback", "Continuous Protection", "Add-on"]  # fmt: skip
    server_version = psql(app, "show server_version")
    assert server_version.startswith(fields["PG Version"]) and re.fullmatch(r"\d+\.\d+", fields["PG Version"])
    assert fields["Plan"] == "Essential 0" and fields["Status"] == "Available" and fields["Connections"] == "0/20"
    assert fields["Created"].startswith(datetime.now(UTC).strftime("%Y-%m-%d ")) and fields["Created"].endswith(" UTC")
    assert re.fullmatch(r"\d+\.\d MB/1\.00 GB \(\d\.\d\d%\) \(In compliance\)", fields["Data Size"]), fields
    assert (fields["Tables"], fields["Fork/Follow"], fields["Rollback"]) == ("0", "Unsupported", "Unsupported")
    assert fields["Continuous Protection"] == "Off"
    [row] = json.loads(ok(run_dynosim(app, "addons", "--json")))
    assert fields["Add-on"] == row["name"] and header == f"=== {', '.join(row['config_vars'])}"

    psql(
        app, "create table notes (body text); insert into notes select repeat('x', 1000) from generate_series(1, 2000)"
    )
    [again] = json.loads(ok(run_dynosim(app, "pg:info", "DATABASE", "--json")))
    assert again["tables"] == 1 and again["connections"] == {"used": 0, "limit": 20}
    assert again["data_size"] > 2000 * 1000 and again["addon"] == row["name"]

    colour = row["config_vars"][1].removesuffix("_URL")
    listed = ok(run_dynosim(app, "pg:credentials")).splitlines()
    assert [line.split() for line in listed[:3]] == [["Credential", "State"], ["─" * (len(colour) + 7), "──────"],
                                                     ["default", "active"]]  # fmt: skip
    assert listed[3:] == [" ├─ as DATABASE", f" └─ as {colour}"]
    assert listed[0].index("State") == listed[2].index("active") == len(colour) + 9
    url = config_get(app, "DATABASE_URL")
    parts = urllib.parse.urlsplit(url)
    assert ok(run_dynosim(app, "pg:credentials:url", colour)).splitlines() == [
        "Connection information for default credential.",
        "Connection info string:",
        f'  "dbname={parts.path[1:]} host=127.0.0.1 port={parts.port} user={parts.username} '
        f'password={parts.password} sslmode=require"',
        "Connection URL:",
        f"  {url}",
    ]


def test_rotation_changes_the_password_and_the_old_one_is_refused(app: Path, addon_backend: str) -> None:
    old = config_get(app, "DATABASE_URL")
    [row] = json.loads(ok(run_dynosim(app, "addons", "--json")))
    colour_var = row["config_vars"][1]  # HEROKU_POSTGRESQL_<COLOUR>_URL
    one_line_error(run_dynosim(app, "pg:credentials:rotate"), "destructive action", "--confirm app")
    one_line_error(run_dynosim(app, "pg:credentials:rotate", "--confirm", "other"), "did not match app", "nothing")
    assert config_get(app, "DATABASE_URL") == old  # refused: nothing changed

    rotated = ok(run_dynosim(app, "pg:credentials:rotate", "--confirm", "app"))
    assert re.fullmatch(r"Rotating default on postgresql-[a-z]+-\d{5}\.\.\. done\n", rotated), rotated
    new = config_get(app, "DATABASE_URL")
    was, now = urllib.parse.urlsplit(old), urllib.parse.urlsplit(new)
    assert now.password != was.password and re.fullmatch(r"p[0-9a-f]{64}", now.password or "")
    assert (now.username, now.hostname, now.port, now.path) == (was.username, was.hostname, was.port, was.path)
    assert config_get(app, colour_var) == new
    [record] = json.loads((app / ".dynosim" / STATE_FILE).read_text())["addons"]
    assert record["password"] == now.password
    assert psql(app, "select current_user") == now.username  # the next session's credential is the new one

    with Addons(
        app / ".dynosim", [AddonRequest("heroku-postgresql")], backend=addon_backend, say=lambda _: None
    ) as addons:
        [db] = addons.start()
        assert db.config_vars["DATABASE_URL"] == new
        with pytest.raises(psycopg.OperationalError, match=f'password authentication failed for user "{was.username}"'):
            psycopg.connect(old, connect_timeout=10).close()
        with psycopg.connect(new, connect_timeout=10) as conn:
            assert conn.execute("select current_user").fetchone() == (now.username,)


def test_bad_input_is_one_line_and_changes_nothing(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    assert ok(run_dynosim(app, "pg:info")) == "app has no heroku-postgresql databases.\n"
    one_line_error(run_dynosim(app, "pg:credentials"), "declares no postgres add-on", "addons:create heroku-postgresql")
    ok(run_dynosim(app, "addons:create", "heroku-redis", "--backend", "native"))
    ok(run_dynosim(app, "addons:create", "heroku-postgresql", "--backend", "native"))
    assert ok(run_dynosim(app, "pg")).startswith("=== DATABASE_URL, HEROKU_POSTGRESQL_")  # Heroku's alias of pg:info
    before = (app / ".dynosim" / STATE_FILE).read_text()
    one_line_error(run_dynosim(app, "pg:info", "REDIS"), "REDIS is heroku-redis", "not a Postgres database")
    one_line_error(run_dynosim(app, "pg:credentials:rotate", "heroku-redis", "--confirm", "app"), "not a Postgres")
    one_line_error(run_dynosim(app, "pg:ps", "NOPE"), 'no add-on "NOPE"', "dynosim addons")
    one_line_error(run_dynosim(app, "pg:killall"), "destructive action", "--confirm app")
    assert (app / ".dynosim" / STATE_FILE).read_text() == before
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, ["-m", "dynosim", "pg:credentials:rotate"], cwd=str(app), encoding="utf-8",
                          timeout=30)  # fmt: skip
    for line in ("WARNING: Destructive Action", "The password for the default credential will rotate.",
                 "Connections will be reset and applications will be restarted.",
                 "This command will affect the app app.", "To proceed, type app or re-run this command with --confirm app"):  # fmt: skip
        child.expect_exact(line)
    child.expect_exact("> ")
    child.sendline("ap")
    child.expect_exact("Confirmation did not match app. Aborted; nothing was changed")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1 and (app / ".dynosim" / STATE_FILE).read_text() == before
    for verb in ("pg:info", "pg:ps", "pg:killall", "pg:credentials", "pg:credentials:url", "pg:credentials:rotate"):
        assert f"dynosim {verb} [OPTIONS] [DATABASE]" in ok(run_dynosim(app, verb, "--help"))


# --- with a run: the running server, a new release, every dyno restarted --------------------------------


def test_a_rotation_restarts_the_app_and_a_process_that_kept_the_old_url_fails(  # type: ignore[no-untyped-def]
    tmp_path: Path, addon_backend: str, dynosim
) -> None:
    app = make_app(tmp_path, "rotation")
    run = dynosim(app, "--addons", addon_backend)
    try:
        run.wait_for(r"heroku\[web\.1\]: State changed from starting to up", timeout=240)
        run.wait_for(r"app\[worker\.1\]: worker: database ok")
        detached = ok(run_dynosim(app, "exec", "--detach", "python worker.py 120"))
        one_off = re.search(r"done, (run\.\d{4})", detached).group(1)  # type: ignore[union-attr]
        run.wait_for(rf"app\[{one_off}\]: worker: database ok")

        # pg:ps as Heroku's: idle sessions only with --verbose, the dyno in `source`
        everyone = ok(run_dynosim(app, "pg:ps", "--verbose"))
        columns = [c.strip() for c in everyone.splitlines()[0].split("|")]
        assert columns == ["pid", "state", "source", "username", "running_for", "transaction_start", "waiting", "query"]
        assert re.search(r"\| idle +\| worker\.1 +\|", everyone) and re.search(rf"\| idle +\| {one_off} +\|", everyone)
        assert "(2 rows)" in everyone
        assert info_fields(ok(run_dynosim(app, "pg:info")))["Connections"] == "2/20"

        url = config_get(app, "DATABASE_URL")
        sleeper = subprocess.Popen(["psql", "-X", "-d", url, "-c", "select pg_sleep(60)"], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            busy = _wait_for(lambda: ok(run_dynosim(app, "pg:ps")), lambda out: "pg_sleep" in out)
            assert re.search(r"\| active +\| psql +\|.*\| select pg_sleep\(60\)", busy) and "| idle " not in busy
            one_line_error(run_dynosim(app, "pg:killall"), "--confirm rotation")
            killed = ok(run_dynosim(app, "pg:killall", "--confirm", "rotation"))
            assert killed == "Terminating connections for all credentials... done\n"
            _, errors = sleeper.communicate(timeout=30)
        finally:
            sleeper.kill()
            sleeper.wait()
        assert sleeper.returncode != 0 and "terminating connection due to administrator command" in errors
        run.wait_for(rf"app\[{one_off}\]: worker: database error: terminating connection due to administrator command")
        run.wait_for(rf"app\[{one_off}\]: worker: database ok", after_last=True)  # same password: it reconnects

        user = urllib.parse.urlsplit(url).username
        rotated = ok(run_dynosim(app, "pg:credentials:rotate", "--confirm", "rotation"))
        assert rotated.startswith("Rotating default on postgresql-") and rotated.endswith("... done\n")
        run.wait_for(r"app\[api\]: Update DATABASE by heroku-postgresql by user heroku-postgresql@addons\.heroku\.com")
        run.wait_for(r"heroku\[worker\.1\]: State changed from starting to up", after_last=True)
        run.wait_for(r"app\[worker\.1\]: worker: database ok", after_last=True)  # restarted: it took the new URL
        with urllib.request.urlopen(f"http://127.0.0.1:{run.port}/", timeout=10) as response:
            assert response.read().decode() == user  # it took DATABASE_URL at import: right only if restarted
        refused = f'password authentication failed for user "{user}"'
        run.wait_for(rf"app\[{one_off}\]: worker: database error: .*{re.escape(refused)}")
        logs = ok(run_dynosim(app, "logs", "--dyno", one_off))
        assert refused in logs  # what the user sees of the one-off nothing restarted
        [latest, *_] = json.loads(ok(run_dynosim(app, "releases", "--json")))
        assert latest["description"] == "Update DATABASE by heroku-postgresql"
        assert config_get(app, "DATABASE_URL") != url
        assert run.stop() == 0
    finally:
        _stop_one_offs(app)
        if addon_backend == "docker":
            remove_app_containers(app / ".dynosim")


def _wait_for(produce, accept, timeout: float = 20.0) -> str:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        out = produce()
        if accept(out) or time.monotonic() > deadline:
            return str(out)
        time.sleep(0.3)


def _stop_one_offs(app: Path) -> None:
    """The detached one-off outlives the run, as on Heroku: the test ends it, and its dyno's processes."""
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "dynosim.oneoff" in cmdline and str(app) in cmdline:
            for child in [*proc.children(recursive=True), proc]:
                try:
                    child.kill()
                except psutil.Error:
                    pass
