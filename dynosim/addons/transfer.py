"""pg:pull and pg:push: one database copied into another as Heroku's CLI copies it (lib/pg/push_pull),
`pg_dump --verbose -F c -Z 0 -N _heroku | pg_restore --verbose -F c --no-acl --no-owner`, streamed
through pgtools.pipe, never through this process.

The "Heroku" side is the app's Postgres add-on; the other side is what the user names (`Database.named`):
a database name on their own server (their libpq environment: PGHOST, PGPORT, PGUSER…) or a postgres://
URL, which may be a real remote database. Heroku's rules for a target: a name, or a URL on localhost, must
not exist (createdb makes it, and fails if it exists); any other URL, and the add-on itself for a push,
must exist and be empty (no rows in pg_stat_user_tables).

Unlike Heroku, a copy that fails halfway leaves nothing behind: pg_restore runs in one transaction
(`--single-transaction`), so an existing target is as empty as before, and a database pull created is
dropped again. A push restores as the app's role, so the app owns what it pushed, as on Heroku.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dynosim.addons.pgtools import (
    Command,
    Target,
    Tools,
    app_target,
    host_tools,
    pipe,
    run,
    tools_for,
    url_target,
)
from dynosim.errors import AddonError

DUMP_FLAGS = ("--verbose", "-F", "c", "-Z", "0", "-N", "_heroku")
RESTORE_FLAGS = ("--verbose", "-F", "c", "--no-acl", "--no-owner", "--single-transaction")
CHECK_TIMEOUT = "10"  # seconds libpq waits for a server that does not answer, for the checks before a copy
_EMPTY_SQL = "SELECT count(*) FROM pg_stat_user_tables"
_EXTENSIONS_SQL = "SELECT extname FROM pg_extension ORDER BY extname"
# libpq's words for a server that is not there (as opposed to one that refuses us: a password, a role)
_NO_ANSWER = ("Connection refused", "timeout expired", "could not translate host name", "No such file or directory",
              "No route to host", "Network is unreachable")  # fmt: skip
_TOOL_PREFIX = re.compile(r"^(?:(?:psql|createdb|dropdb|pg_dump|pg_restore)(?: failed:|: error:) *)+")


@dataclass(frozen=True)
class Database:
    """One side of a copy: a database and how to run a client tool on it."""

    label: str  # how messages name it: the add-on's name, or what the user typed (password hidden)
    name: str  # the database's own name
    tools: Tools
    target: Target | None  # None: `name` on the user's own server, reached through their PG* environment
    creates: bool  # as a pull's target: createdb makes it (a name, a localhost URL); else it must be empty

    @classmethod
    def named(cls, text: str) -> Database:
        """What the user typed: a database name or a postgres:// URL (Heroku's parsePostgresConnectionString)."""
        if "://" not in text:
            if not text or "/" in text:
                raise AddonError(
                    f'"{text}" is neither a database name nor a URL; name a database on your own Postgres '
                    "(mydb) or give a URL (postgres://user:password@host:5432/mydb)"
                )
            return cls(text, text, host_tools(), None, creates=True)
        target = url_target(text)
        host = urllib.parse.urlsplit(text).hostname or ""
        return cls(_hide(text), target.database, host_tools(), target, creates=host in ("", "localhost"))

    @classmethod
    def addon(cls, record: Mapping[str, Any]) -> Database:
        """The add-on's database, as the app's own role (what DATABASE_URL names)."""
        target = app_target(record)
        return cls(str(record["name"]), target.database, tools_for(record), target, creates=False)

    def command(self, tool: str, *args: str) -> Command:
        """`tool` on this database; for psql with a short connect timeout, for the checks."""
        if self.target is not None:
            command = self.tools.command(tool, self.target, *args)
        else:
            assert self.tools.bindir is not None
            connect = ("--dbname", self.name) if tool == "pg_restore" else ()
            env = {**os.environ, "PGDATABASE": self.name}  # the user's PGHOST, PGPORT, PGUSER…: their server
            command = Command(tool, (str(self.tools.bindir / tool), *connect, *args), env)
        if tool == "psql":
            command = Command(command.name, command.argv, {**command.env, "PGCONNECT_TIMEOUT": CHECK_TIMEOUT})
        return command

    def query(self, sql: str) -> str:
        """One query's rows as psql prints them unaligned, or AddonError naming this database."""
        try:
            return run(self.command("psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql), timeout=60)
        except AddonError as error:
            reason = _reason(error)
            if f'database "{self.name}" does not exist' in reason:
                raise AddonError(f"{self.label}: {reason}; name a database that exists") from None
            said = "does not answer" if any(sign in reason for sign in _NO_ANSWER) else "refused the connection"
            raise AddonError(f"{self.label} {said} ({reason}); {self._fix()}") from None

    def _fix(self) -> str:
        if self.target is None:
            return "start your Postgres, or point PGHOST, PGPORT and PGUSER at it"
        return "check the URL (host, port, user, password, database) and that its server is up"


# --- the rules for a target (lib/pg/push_pull.prepare) -----------------------------------------------


def prepare(target: Database, not_empty: str) -> bool:
    """Makes a target that must not exist, or checks that one that must exist is empty (`not_empty`: what
    to do when it is not); True when it was made here (a failed copy drops it again). Nothing is made
    when a check fails."""
    if target.creates:
        try:
            run(target.command("createdb", target.name), timeout=120)
        except AddonError as error:
            reason = _reason(error)
            if "already exists" in reason:
                raise AddonError(
                    f'database "{target.name}" already exists; the target must not exist: name a new one, or '
                    f"drop it first (dropdb {target.name})"
                ) from None
            raise AddonError(f"cannot create {target.label} ({reason}); {target._fix()}") from None
        return True
    tables = target.query(_EMPTY_SQL).strip()
    if tables != "0":
        raise AddonError(f"Remote database is not empty. {not_empty}")
    return False


# --- the copy ---------------------------------------------------------------------------------------


def exclusions(raw: str | None) -> list[str]:
    """`--exclude-table-data 'a;b'` as its tables (lib/pg/push_pull.parseExclusions)."""
    return [name.strip() for name in (raw or "").split(";") if name.strip()]


def copy(
    source: Database, target: Database, excluded: Sequence[str], created: bool, echo: Callable[[str], None]
) -> None:
    """pg_dump of `source` into pg_restore of `target`, streamed, their --verbose lines to `echo` as
    Heroku's CLI shows them; on any failure (Ctrl-C too) a target made by `prepare` is dropped again,
    and one that existed was left as it was by the transaction."""
    dump = source.command("pg_dump", *DUMP_FLAGS, *(f"--exclude-table-data={name}" for name in excluded))
    restore = target.command("pg_restore", *RESTORE_FLAGS)
    try:
        pipe(dump, restore, echo)
    except BaseException as error:
        left = _drop(target) if created else f"nothing was restored: {target.label} is empty, as before"
        if isinstance(error, AddonError):
            raise AddonError(f"copying {source.label} to {target.label} failed: {_reason(error)}; {left}") from None
        raise


def extension_warning(source: Database, target: Database) -> list[str]:
    """Heroku's warning when the target ended up with other extensions than the source (a local server
    without postgis, say: the tables that need it are missing); [] when they match."""
    wanted, got = source.query(_EXTENSIONS_SQL), target.query(_EXTENSIONS_SQL)
    if wanted == got:
        return []
    return [
        "Extensions in newly created target database differ from existing source database.",
        "Target extensions:",
        *got.split(),
        "Source extensions:",
        *wanted.split(),
        "HINT: You should review output to ensure that any errors",
        "ignored are acceptable - entire tables may have been missed, where a dependency",
        "could not be resolved. You may need to install a postgresql-contrib package",
        "and retry.",
    ]


def transfer(
    source: Database,
    target: Database,
    excluded: Sequence[str],
    not_empty: str,
    echo: Callable[[str], None],
    warn: Callable[[str], None],
) -> None:
    """pg:pull and pg:push alike: the target's rule, the copy (the tools' output to `echo`), the
    extensions' check (to `warn`)."""
    created = prepare(target, not_empty)
    copy(source, target, excluded, created, echo)
    for line in extension_warning(source, target):
        warn(line)


def _drop(target: Database) -> str:
    try:
        run(target.command("dropdb", "--if-exists", target.name), timeout=120)
    except AddonError as error:
        return f"{target.label} was made for this copy and could not be dropped ({_reason(error)}): dropdb it"
    return f"{target.label}, made for this copy, was dropped again"


def _reason(error: AddonError) -> str:
    """The tool's own words, without the `psql failed: psql: error:` the message says already."""
    return _TOOL_PREFIX.sub("", str(error))


def _hide(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return url.replace(f":{parts.password}@", ":…@", 1) if parts.password else url
