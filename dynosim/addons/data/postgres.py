"""Postgres's data: snapshots, and its baseline (its database right after the release phase: migrations applied, the
rows they seed) and the reset back to it, in milliseconds and without dropping the app's connections.

The baseline is read once a release phase has run, before any dyno connects: which tables there are,
the rows of those that have any (migration records, seeded reference rows, as JSON), and every
sequence's position. It is kept in `.dynosim/reset/<add-on>.json`, never in the app's database, so
nothing of dynosim's reaches a backup, a `pg:push` or `pg_dump`.

A reset is one transaction, one statement calling a function in psql's own temporary schema, sent to a
psql the run keeps open on the database (`psqlsession.py`: no process or TLS handshake per reset):
a table that had rows is left alone if it holds the same rows (compared as JSON), else emptied and
its rows put back; each other table is emptied (a DELETE of an empty table is as cheap as a look at
it); the sequences go back to where they were, in one statement. A small table is emptied with DELETE,
a large one with TRUNCATE (measured here: DELETE of 50 tables of 2,000 rows is 3-4x faster than one
TRUNCATE of them, which makes a new file per table and index and fsyncs each index; past about a
megabyte TRUNCATE wins). Which tables changed is read from the tables themselves, not from
pg_stat_user_tables' counters: a backend sends those up to seconds late, so a row a test has just
written would be missed. Foreign keys
and triggers are not fired meanwhile (session_replication_role = replica): every table ends as the
baseline had it, so order does not matter. The app's connections stay open: a pool notices nothing.
Schema changes made after the baseline are not undone (`snapshot:load` does that).

A snapshot is a `pg_dump -Fc` file (the portable copy, as pg:backups makes) and, on the same server, a
template database restored from it at save time (`dynosim_snapshot_…`, closed to connections). A load
copies the template into a new database (CREATE DATABASE … TEMPLATE: a file copy, not a restore that
rebuilds every index) and swaps it in as pg:backups:restore does; with the template gone (a new server),
the file is restored instead. Either way the app's database is untouched until the swap.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import subprocess
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dynosim.addons import backups, pgtools
from dynosim.addons.data.base import Context, Kind
from dynosim.addons.manage import client_env, psql_binary
from dynosim.addons.pg_admin import psql_script
from dynosim.addons.processes import HOST
from dynosim.addons.psqlsession import PsqlSession
from dynosim.addons.services.postgres_native import SUPERUSER
from dynosim.errors import AddonError
from dynosim.privatefile import write_private

FOLDER = "reset"
SEED_LIMIT = 50 * 1024 * 1024  # bytes of tables with rows a baseline keeps; past it, snapshots are the way
DELETE_BELOW = 1024 * 1024  # a table's heap, in bytes, under which DELETE empties it faster than TRUNCATE
LOCK_TIMEOUT = "10s"  # a transaction of the app's holding a table this long makes the reset fail, not hang

# found once a process: looking for it (the server's bindir) is 16 ms, a tenth of a reset
psql = functools.cache(psql_binary)

# the user's tables: not the catalogues, not partitions (their parent's rows hold theirs), not foreign
_TABLES = """
SELECT c.oid, format('%I.%I', n.nspname, c.relname) AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
"""
_SEQUENCES = """
SELECT format('%I.%I', n.nspname, c.relname) AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
"""

CAPTURE = f"""
CREATE FUNCTION pg_temp.dynosim_baseline() RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
  r record; has boolean; rows jsonb; kept bigint := 0;
  tables jsonb := '{{}}'; sequences jsonb := '{{}}'; last bigint; called boolean;
BEGIN
  FOR r IN {_TABLES} LOOP
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM ONLY %s)', r.name) INTO has;
    IF has THEN
      kept := kept + pg_total_relation_size(r.oid);
      IF kept > {SEED_LIMIT} THEN
        RETURN jsonb_build_object('too_big', kept, 'table', r.name);
      END IF;
      EXECUTE format('SELECT jsonb_agg(to_jsonb(t)) FROM ONLY %s t', r.name) INTO rows;
      tables := tables || jsonb_build_object(r.name, rows);
    ELSE
      tables := tables || jsonb_build_object(r.name, NULL);
    END IF;
  END LOOP;
  FOR r IN {_SEQUENCES} LOOP
    EXECUTE format('SELECT last_value, is_called FROM %s', r.name) INTO last, called;
    sequences := sequences || jsonb_build_object(r.name, jsonb_build_array(last, called));
  END LOOP;
  RETURN jsonb_build_object('tables', tables, 'sequences', sequences);
END
$fn$;
SELECT pg_temp.dynosim_baseline();
"""

# made once in each kept psql session; called as one statement, so one transaction whose settings it sets
RESET_FUNCTION = f"""
CREATE OR REPLACE FUNCTION pg_temp.dynosim_reset(baseline jsonb) RETURNS text LANGUAGE plpgsql AS $fn$
DECLARE
  r record; same boolean; has boolean; seeded jsonb; columns text; tbl text; n bigint;
  emptied int := 0; refilled int := 0; big text[] := '{{}}'; refill text[] := '{{}}'; kept text[] := '{{}}';
BEGIN
  PERFORM set_config('lock_timeout', '{LOCK_TIMEOUT}', true);
  PERFORM set_config('synchronous_commit', 'off', true);
  PERFORM set_config('session_replication_role', 'replica', true);
  FOR r IN {_TABLES} LOOP
    seeded := baseline->'tables'->r.name;
    IF jsonb_typeof(seeded) = 'array' THEN
      EXECUTE format('SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)), ''[]'') = '
                     '(SELECT jsonb_agg(e ORDER BY e) FROM jsonb_array_elements($1) e) FROM ONLY %s t', r.name)
        INTO same USING seeded;
      IF same THEN
        kept := kept || r.name;
        CONTINUE;
      END IF;
      refill := refill || r.name;
    END IF;
    IF pg_relation_size(r.oid) < {DELETE_BELOW} THEN
      EXECUTE format('DELETE FROM ONLY %s', r.name);
      GET DIAGNOSTICS n = ROW_COUNT;
      CONTINUE WHEN n = 0;
    ELSE
      EXECUTE format('SELECT EXISTS (SELECT 1 FROM ONLY %s)', r.name) INTO has;
      CONTINUE WHEN NOT has;
      big := big || r.name;
    END IF;
    emptied := emptied + 1;
  END LOOP;
  IF cardinality(big) > 0 THEN
    EXECUTE 'TRUNCATE ONLY ' || array_to_string(big, ', ') || ' CASCADE';
    FOREACH tbl IN ARRAY kept LOOP  -- a seeded table referencing a truncated one went with it
      EXECUTE format('SELECT EXISTS (SELECT 1 FROM ONLY %s)', tbl) INTO has;
      IF NOT has THEN
        refill := refill || tbl;
      END IF;
    END LOOP;
  END IF;
  FOREACH tbl IN ARRAY refill LOOP
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO columns
      FROM pg_attribute a
     WHERE a.attrelid = tbl::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';
    EXECUTE format(
      'INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM jsonb_populate_recordset(NULL::%s, $1)',
      tbl, columns, columns, tbl
    ) USING baseline->'tables'->tbl;
    refilled := refilled + 1;
  END LOOP;
  PERFORM setval(c.oid, (s.value->>0)::bigint, (s.value->>1)::boolean)
     FROM jsonb_each(baseline->'sequences') s JOIN pg_class c ON c.oid = to_regclass(s.key) AND c.relkind = 'S';
  RETURN emptied || ' ' || refilled;
END
$fn$;
"""


_sessions: dict[str, tuple[tuple[object, ...], PsqlSession]] = {}
_sessions_lock = threading.Lock()


def _session(record: Mapping[str, Any]) -> PsqlSession:
    """The add-on's kept psql session as dynosim's superuser on the app's database; a new one when the
    server moved or its password changed (a failover, a rotation)."""
    name, password = str(record["name"]), str(record.get("admin_password") or "")
    key = (record["port"], password, record["database"])
    with _sessions_lock:
        held = _sessions.get(name)
        if held is not None and held[0] == key:
            return held[1]
        if held is not None:
            held[1].close()
        env = {**client_env(), "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "dynosim"}
        argv = [psql(), "-X", "-q", "-A", "-t", "-h", HOST, "-p", str(record["port"]), "-U", SUPERUSER,
                "-d", str(record["database"]), "-f", "-"]  # fmt: skip
        session = PsqlSession(argv, env, name, setup=RESET_FUNCTION)
        _sessions[name] = (key, session)
        return session


def close_sessions(names: Iterable[str]) -> None:
    """These add-ons' kept psql sessions ended (their run stopping: none is left behind; another run in
    the same process keeps its own)."""
    with _sessions_lock:
        for name in names:
            held = _sessions.pop(name, None)
            if held is not None:
                held[1].close()


def baseline_path(state_dir: Path, record: Mapping[str, Any]) -> Path:
    return Path(state_dir) / FOLDER / f"{record['name']}.json"


def capture(ctx: Context) -> None:
    """Read the add-on's database as it is now, the baseline later resets return to."""
    out = psql_script(ctx.record, psql(), CAPTURE, database=str(ctx.record["database"])).strip()
    baseline = json.loads(out.splitlines()[-1])
    path = baseline_path(ctx.state_dir, ctx.record)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    write_private(path, json.dumps(baseline))


def reset(ctx: Context) -> str:
    """The database back to its baseline, in one transaction; AddonError (nothing changed) if it cannot be."""
    record = ctx.record
    path = baseline_path(ctx.state_dir, record)
    try:
        text = path.read_text()
        baseline = json.loads(text)
    except FileNotFoundError:
        raise AddonError(
            f"{record['name']}: no baseline to reset to yet (it is read when a run's release phase has run); "
            "start the app with `dynosim run` or dynosim.App first"
        ) from None
    except (OSError, ValueError):
        raise AddonError(f"{path}: unreadable; delete it and restart the run to read the baseline again") from None
    if "too_big" in baseline:
        raise AddonError(
            f"{record['name']}: after the release phase its tables with rows held more than "
            f"{SEED_LIMIT // (1024 * 1024)} MB ({baseline['table']} and others), more than a reset keeps; "
            "use `dynosim snapshot:save NAME` and `snapshot:load NAME` for a database like this"
        )
    tag = "$dynosim_baseline_" + secrets.token_hex(8) + "$"  # a dollar quote the rows cannot contain
    out = _session(record).run(f"SELECT pg_temp.dynosim_reset({tag}{text}{tag}::jsonb);")
    emptied, refilled = (int(n) for n in out.split()[-2:])
    return f"{emptied} table(s) emptied, {refilled} given back their rows from after the release phase"


def save(ctx: Context, folder: Path) -> dict[str, Any]:
    """The dump, and the template a load copies (restored from the dump: the app's database itself can be
    no template while the app is connected to it)."""
    record = ctx.record
    dump = folder / f"{ctx.name}.dump"
    backups.dump(record, dump)
    template = f"dynosim_snapshot_{secrets.token_hex(6)}"
    tools, admin = pgtools.tools_for(record), pgtools.superuser_target(record)
    pgtools.run(tools.command("psql", admin, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"),
                backups.create_sql(template, str(record["user"])))  # fmt: skip
    try:
        with open(dump, "rb") as stream:
            restore = tools.command(
                "pg_restore",
                admin.on(template),
                f"--role={record['user']}",
                "--no-owner",
                "--no-acl",
                "--exit-on-error",
            )
            pgtools.pipe(stream, restore)
        pgtools.run(
            tools.command(
                "psql",
                admin,
                "-X",
                "-q",
                "-c",
                f"ALTER DATABASE {_ident(template)} WITH ALLOW_CONNECTIONS false IS_TEMPLATE true",
            )
        )
    except BaseException:
        _drop_template(ctx, template)
        raise
    return {"file": dump.name, "pg_major": _major(ctx), "template": template}


def verify(ctx: Context, folder: Path, meta: Mapping[str, Any]) -> None:
    dump = folder / str(meta.get("file", ""))
    if not dump.is_file():
        raise AddonError(f"{dump}: missing from the snapshot; it cannot be loaded (delete it with snapshot:delete)")
    server = _major(ctx)
    if meta.get("pg_major") != server:
        raise AddonError(
            f"{dump.name}: made by PostgreSQL {meta.get('pg_major')}, and {ctx.name} runs {server}; load it into an "
            "app whose add-on runs the same major version, or make a new snapshot"
        )
    _check_dump(pgtools.tools_for(ctx.record), dump)


def load(ctx: Context, folder: Path, meta: Mapping[str, Any]) -> str:
    """(After `verify`.) A copy of the template swapped in: WAL_LOG copies it block by block with no
    checkpoint, where FILE_COPY waits for two (measured: 84–219 ms against about half that)."""
    record = ctx.record
    dump = folder / str(meta["file"])
    template = str(meta.get("template", ""))
    scratch = f"{record['database']}_load_{secrets.token_hex(4)}"
    owner = _ident(str(record["user"]))
    make = f"CREATE DATABASE {_ident(scratch)} TEMPLATE {_ident(template)} OWNER {owner} STRATEGY WAL_LOG;\n"
    try:
        backups.swap_in(record, scratch, make=make, drop_later=True)
    except AddonError as error:
        if f'template database "{template}" does not exist' not in str(error):
            raise
        backups.restore_and_swap(record, backups.Source(dump.name, path=dump))
        return f"restored from {dump.name} (its template database was gone)"
    return "loaded (a copy of its template database swapped in)"


def _check_dump(tools: pgtools.Tools, dump: Path) -> None:
    """That the file is a whole pg_dump -Fc archive (`pg_restore --list` reads its table of contents), before
    anything changes; pg_restore of the add-on's own version reads it (inside its container, from stdin)."""
    if tools.container is None:
        assert tools.bindir is not None
        argv, stdin = [str(tools.bindir / "pg_restore"), "--list", str(dump)], None
    else:
        argv, stdin = [tools.docker, "exec", "-i", tools.container, "pg_restore", "--list"], dump
    with open(stdin or os.devnull, "rb") as feed:
        listed = subprocess.run(argv, stdin=feed, capture_output=True, check=False, timeout=120)
    if listed.returncode != 0:
        why = pgtools.first_error(listed.stderr.decode(errors="replace"))
        raise AddonError(f"{dump}: not a whole pg_dump -Fc file ({why}); make a new snapshot")


def discard(ctx: Context, meta: Mapping[str, Any]) -> None:
    """A deleted snapshot's template database dropped."""
    _drop_template(ctx, str(meta.get("template", "")))


def _drop_template(ctx: Context, template: str) -> None:
    if not template.startswith("dynosim_snapshot_"):
        return
    tools, admin = pgtools.tools_for(ctx.record), pgtools.superuser_target(ctx.record)
    pgtools.run(tools.command("psql", admin, "-X", "-q", "-c", f"ALTER DATABASE {_ident(template)} IS_TEMPLATE false"))
    backups.drop(tools, admin, template)


def _major(ctx: Context) -> int:
    tools, admin = pgtools.tools_for(ctx.record), pgtools.superuser_target(ctx.record)
    return int(pgtools.run(tools.command("psql", admin, "-XAtc", "SHOW server_version_num")).strip()) // 10000


def _ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


KIND = Kind(reset=reset, capture=capture, save=save, load=load, verify=verify, discard=discard)
