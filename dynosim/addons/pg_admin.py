"""What `pg:info`, `pg:ps`, `pg:killall`, `pg:credentials`, `pg:credentials:url` and
`pg:credentials:rotate` do to a Postgres add-on's real server, apart from printing (commands/pg.py).

Everything goes through psql (dynosim's runtime has no Postgres driver), over TCP to 127.0.0.1 at the
record's port, where both backends answer: as the server's superuser for what Heroku's platform does
behind its API (statistics, ending connections, a new password), as the app's own role for what the
Heroku CLI runs with the default credential (pg:ps). The record in addons.json is the truth about the
credential: the app's DATABASE_URL is made from it, so rotating the password is changing both.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynosim.addons import STATE_FILE, State, _password, provision
from dynosim.addons.manage import Declared, client_env
from dynosim.addons.plans import PostgresPlan, postgres_plan
from dynosim.addons.processes import HOST
from dynosim.addons.services.postgres_native import SUPERUSER
from dynosim.errors import AddonError

_TIMEOUT = 60  # seconds for one psql call: a statistics query or an ALTER ROLE


@dataclass(frozen=True)
class DatabaseInfo:
    """What pg:info shows of one database, read from its server."""

    addon: str  # "postgresql-curly-12345"
    config_vars: tuple[str, ...]  # ("DATABASE_URL", "HEROKU_POSTGRESQL_JADE_URL")
    plan: PostgresPlan
    status: str  # "Available", or what the plan's storage limit made it
    connections: int  # the app role's connections now
    version: str  # "15.5"
    created: float  # when the server's data was made (initdb), seconds since the epoch
    data_size: int  # bytes, pg_database_size
    tables: int  # the app's tables (and partitioned tables), outside the system schemas


def record_of(state_dir: Path, declared: Declared) -> dict[str, Any]:
    """The add-on's record, made now if app.json declares it and it has none yet (as Heroku provisions
    app.json's add-ons with the app): its credential exists before its server first starts."""
    [(_, record)] = provision(state_dir, [declared.request])
    return record


def info(record: Mapping[str, Any], config_vars: tuple[str, ...], psql: str) -> DatabaseInfo:
    """pg:info's numbers, in one query as the superuser (pg_stat_file and the role's sessions need it)."""
    user = _literal(str(record["user"]))
    row = _query(record, psql, f"""
SELECT current_setting('server_version'),
       (SELECT count(*) FROM pg_stat_activity WHERE usename = {user}),
       (SELECT extract(epoch FROM (pg_stat_file('PG_VERSION')).modification)::bigint),
       pg_database_size(current_database()),
       (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%');
""", database=str(record["database"]))  # fmt: skip
    fields = row.split("\t")
    if len(fields) != 5 or not all(f.strip("-").isdigit() for f in fields[1:]):
        raise AddonError(f"pg:info: the server of {record['name']} answered {row!r}; is it a Postgres server?")
    version = re.match(r"\d+(\.\d+)?", fields[0])
    capacity = record.get("capacity")
    return DatabaseInfo(
        addon=str(record["name"]),
        config_vars=config_vars,
        plan=postgres_plan(str(record["plan"])),
        status=str(capacity.get("status", "Available")) if isinstance(capacity, dict) else "Available",
        connections=int(fields[1]),
        version=version.group(0) if version else fields[0],
        created=float(fields[2]),
        data_size=int(fields[3]),
        tables=int(fields[4]),
    )


def activity(record: Mapping[str, Any], psql: str, verbose: bool) -> str:
    """pg:ps: the Heroku CLI's own query, as the app's role (so other roles' sessions are hidden from it,
    as on Heroku), in psql's table. Servers since 9.6 have wait_event, not `waiting`."""
    idle = "" if verbose else "AND state <> 'idle'"
    return psql_script(record, psql, f"""SELECT pid,
       state,
       application_name AS source,
       usename AS username,
       age(now(), xact_start) AS running_for,
       xact_start AS transaction_start,
       wait_event IS NOT NULL AS waiting,
       query
FROM pg_stat_activity
WHERE query <> '<insufficient privilege>' {idle}
  AND pid <> pg_backend_pid()
ORDER BY query_start DESC;
""", as_app=True, table=True)  # fmt: skip


def terminate_all(record: Mapping[str, Any], psql: str) -> None:
    """pg:killall (Heroku's connection_reset): every connection to the app's database ends, whoever made it."""
    _query(record, psql, f"""
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
 WHERE datname = {_literal(str(record["database"]))} AND pid <> pg_backend_pid();
""")  # fmt: skip


def rotate(state_dir: Path, record: Mapping[str, Any], psql: str) -> None:
    """pg:credentials:rotate: a new password for the app's role on the server, then in its record (so
    DATABASE_URL and its colour's URL, made from the record, change), then the role's connections end, as
    Heroku resets them. A server that refuses changes nothing."""
    password = _password()
    role = _ident(str(record["user"]))
    _query(record, psql, f"ALTER ROLE {role} WITH PASSWORD {_literal(password)};")
    state = State.load(state_dir / STATE_FILE)
    [changed] = [r for r in state.records if r.get("name") == record["name"]]
    changed["password"] = password
    try:
        state.save()
    except OSError as error:
        _query(record, psql, f"ALTER ROLE {role} WITH PASSWORD {_literal(str(record['password']))};")
        raise AddonError(f"cannot write {state.path} ({error.strerror}); the old password still works") from None
    _query(record, psql, f"""
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = {_literal(str(record["user"]))};
""")  # fmt: skip


# --- psql ---------------------------------------------------------------------------------------------


def _query(record: Mapping[str, Any], psql: str, sql: str, database: str = "postgres") -> str:
    """One value (or one tab-separated row) a superuser's query returns."""
    return psql_script(record, psql, sql, database=database).strip()


def psql_script(
    record: Mapping[str, Any], psql: str, sql: str, *, database: str = "postgres", as_app: bool = False,
    table: bool = False,
) -> str:  # fmt: skip
    """psql with the script on its stdin and the password in its environment (never in an argv)."""
    if as_app:
        user, password, database = str(record["user"]), str(record["password"]), str(record["database"])
    else:
        user, password = SUPERUSER, str(record.get("admin_password") or "")
    env = {**client_env(), "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "dynosim"}
    argv = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", str(record["port"]), "-U", user,
            "-d", database, *(() if table else ("-A", "-t", "-F", "\t")), "-f", "-"]  # fmt: skip
    try:
        done = subprocess.run(argv, input=sql, capture_output=True, text=True, env=env, timeout=_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise AddonError(f"{record['name']}: its server did not answer within {_TIMEOUT} s") from None
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise AddonError(f"{record['name']}: {lines[-1] if lines else f'psql exited with {done.returncode}'}")
    return done.stdout


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'
