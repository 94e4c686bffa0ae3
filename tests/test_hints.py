"""Hints read off the log stream: a dyno that fails against an add-on as it would on Heroku hears Heroku's
fix once. (The Redis TLS hint's own tests are in test_addons_tls.py.)"""

from __future__ import annotations

import re

from conftest import make_app

from dynosim.addons.catalogue import Attachment
from dynosim.addons.hints import watch_for_addon_failures
from dynosim.logs import LogStream

SQLALCHEMY_ERROR = "sqlalchemy.exc.NoSuchModuleError: Can't load plugin: sqlalchemy.dialects:postgres"
WORKER = """\
import os
import sys

import sqlalchemy

url = os.environ["DATABASE_URL"]
if sys.argv[1:] == ["--rewrite"]:  # as Heroku documents
    url = url.replace("postgres://", "postgresql://", 1)
with sqlalchemy.create_engine(url).connect() as connection:
    print("connected with", url.split(":")[0], connection.execute(sqlalchemy.text("select 41 + 1")).scalar(), flush=True)
"""


def postgres_attachment() -> Attachment:
    url = "postgres://u:p@127.0.0.1:54329/d"
    return Attachment(
        "postgresql-curved-12345",
        "heroku-postgresql:essential-0",
        "postgres",
        "native",
        {"HEROKU_POSTGRESQL_JADE_URL": url, "DATABASE_URL": url},
        "127.0.0.1:54329",
    )


def said(logs: LogStream) -> list[str]:
    return [line.text for line in logs.recent if line.source == "dynosim"]


def test_the_postgres_scheme_hint_names_the_var_and_is_said_once() -> None:
    logs = LogStream()
    assert watch_for_addon_failures(logs, [postgres_attachment()]) is not None
    logs.app_output(
        "web.1", ["sqlalchemy.exc.NoSuchModuleError: Can't load plugin: sqlalchemy.dialects:postgresql.nodriver"]
    )
    assert said(logs) == []  # a postgresql:// URL with a missing driver: another problem
    logs.app_output("web.1", ["Traceback (most recent call last):", SQLALCHEMY_ERROR])
    logs.app_output("worker.1", [SQLALCHEMY_ERROR])  # once a run, whichever dyno says it again
    diagnosis, fix = said(logs)
    assert diagnosis.startswith(
        "web.1 hands SQLAlchemy the postgres:// URL that heroku-postgresql:essential-0 "
        "(postgresql-curved-12345) sets in DATABASE_URL: SQLAlchemy 1.4+ refuses that scheme"
    )
    assert 'os.environ["DATABASE_URL"].replace("postgres://", "postgresql://", 1)' in fix
    assert "help.heroku.com/ZKNTJQSK/why-is-sqlalchemy-1-4-x-not-connecting-to-heroku-postgres" in fix


def test_no_postgres_add_on_no_postgres_hint() -> None:
    redis = Attachment(
        "redis-x", "heroku-redis", "redis", "native", {"REDIS_URL": "redis://:p@127.0.0.1:1"}, "127.0.0.1:1"
    )
    assert watch_for_addon_failures(LogStream(), [redis]) is None


def test_a_dyno_that_hands_sqlalchemy_herokus_database_url_hears_the_fix_once(tmp_path, dynosim) -> None:
    """Real SQLAlchemy against the real Postgres add-on: worker.1 crashes on postgres://, twice (a crash is
    restarted at once), and is told once; the rewrite the hint gives connects."""
    app = make_app(
        tmp_path,
        procfile="worker: python worker.py\nfixed: python worker.py --rewrite && sleep 600\n",
        worker__py=WORKER,
        requirements__txt="SQLAlchemy>=2.1\npsycopg[binary]>=3.1\n",
    )
    run = dynosim(app, "--addon", "heroku-postgresql", "--addons", "native")
    assert run.wait_for(r"app\[fixed\.1\]: connected with (\w+) 42", timeout=180).group(1) == "postgresql"
    failure = run.wait_for(r"app\[worker\.1\]: " + re.escape(SQLALCHEMY_ERROR) + "$")
    hint = run.wait_for(
        r"dynosim\[worker\.1\]: worker\.1 hands SQLAlchemy the postgres:// URL that "
        r"heroku-postgresql \(postgresql-[\w-]+\) sets in DATABASE_URL: SQLAlchemy 1\.4\+ refuses"
    )
    run.wait_for(r"dynosim\[worker\.1\]:   fix, as Heroku documents \(https://help\.heroku\.com/ZKNTJQSK/")
    run.wait_for(r"app\[worker\.1\]: " + re.escape(SQLALCHEMY_ERROR) + "$", after_last=True)  # the restart's crash
    assert run.stop() == 0
    out = run.output()
    assert out.index(hint.group(0)) > out.index(failure.group(0))  # after the line that showed it
    assert len(re.findall(r"hands SQLAlchemy the postgres:// URL", out)) == 1
