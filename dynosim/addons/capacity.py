"""Heroku Postgres over its plan's storage, as Heroku handles it (Dev Center "Heroku Postgres Over Plan
Capacity"), on dynosim's clock: what `pg_database_size` says against the plan's storage, the status
pg:info prints, and what the app's role may still do.

- Under the limit: `Available`.
- Over it: `Over Plan Capacity: Action Required`, with an enforcement date GRACE later on dynosim's
  clock (Heroku sets one and says it in its email and the app's logs).
- Still over past that date: `Over Plan Capacity: Access Restricted`: one connection, and only READ,
  DELETE and TRUNCATE (the app's role loses INSERT and UPDATE on its tables and CREATE and TEMPORARY;
  its sessions are ended, so it reconnects under the restriction).
- Back under: `Available`, full access restored.

The check runs at the add-on's start (Addons.start) and every CHECK_EVERY of dynosim's clock during a
run (the supervisor's capacity task); the status is kept in the add-on's record in addons.json as
record["capacity"]. For demonstrations, two environment variables shrink Heroku's numbers:
DYNOSIM_POSTGRES_STORAGE_LIMIT (e.g. 10MB: every plan's storage) and DYNOSIM_POSTGRES_CAPACITY_GRACE
(e.g. 30s: the time from Action Required to Access Restricted).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dynosim.addons.plans import PostgresPlan
from dynosim.errors import AddonError
from dynosim.sizes import byte_size

AVAILABLE = "Available"
ACTION_REQUIRED = "Over Plan Capacity: Action Required"
RESTRICTED = "Over Plan Capacity: Access Restricted"

# Heroku's grace period for the Essential and Standard tiers is not published (the date is in its email);
# 7 days is what Heroku gives Postgres Advanced databases before its "restrict" action.
GRACE = timedelta(days=7)
CHECK_EVERY = timedelta(seconds=10)  # on dynosim's clock; Heroku's own interval is not published
STORAGE_VAR = "DYNOSIM_POSTGRES_STORAGE_LIMIT"
GRACE_VAR = "DYNOSIM_POSTGRES_CAPACITY_GRACE"

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB)?", re.IGNORECASE)
_UNIT = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d)?", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# Runs a psql script in a database as dynosim's superuser, and gives back its unaligned output.
Admin = Callable[[str, str], str]


def storage_limit(plan: PostgresPlan) -> int:
    """The plan's storage, or DYNOSIM_POSTGRES_STORAGE_LIMIT's; 0: no limit (Heroku CI's in-dyno)."""
    text = os.environ.get(STORAGE_VAR, "").strip()
    if not text or plan.storage <= 0:
        return plan.storage
    match = _SIZE.fullmatch(text)
    if match is None or float(match[1]) <= 0:
        raise AddonError(
            f"{STORAGE_VAR}={text!r} is not a size; write it like 10MB or 1GB, or unset it for the plan's own storage"
        )
    return int(float(match[1]) * _UNIT[(match[2] or "B").upper()])


def grace() -> timedelta:
    """Heroku's time from Action Required to Access Restricted, or DYNOSIM_POSTGRES_CAPACITY_GRACE's."""
    text = os.environ.get(GRACE_VAR, "").strip()
    if not text:
        return GRACE
    match = _DURATION.fullmatch(text)
    if match is None:
        raise AddonError(f"{GRACE_VAR}={text!r} is not a duration; write it like 0s, 30s, 10m or 7d, or unset it")
    return timedelta(seconds=float(match[1]) * _SECONDS[(match[2] or "s").lower()])


def check_settings(plan: PostgresPlan) -> None:
    """Both overrides read once before anything starts, so a malformed one fails in one line."""
    storage_limit(plan)
    grace()


def judge(previous: Mapping[str, Any], size: int, limit: int, now: datetime, grace_period: timedelta) -> dict[str, Any]:
    """The capacity record after a check that found `size` bytes against `limit` (0: none)."""
    judged: dict[str, Any] = {"size": size, "limit": limit, "checked_at": now.isoformat(timespec="seconds")}
    if limit <= 0 or size <= limit:
        return {"status": AVAILABLE, **judged}
    if previous.get("status") in (ACTION_REQUIRED, RESTRICTED) and isinstance(previous.get("enforcement"), str):
        over_since, enforcement = str(previous.get("over_since") or judged["checked_at"]), previous["enforcement"]
    else:
        over_since, enforcement = judged["checked_at"], (now + grace_period).isoformat(timespec="seconds")
    status = RESTRICTED if now >= datetime.fromisoformat(enforcement) else ACTION_REQUIRED
    return {"status": status, **judged, "over_since": over_since, "enforcement": enforcement}


def announcement(label: str, plan: PostgresPlan, before: str, after: Mapping[str, Any]) -> str | None:
    """The line the user sees when the status changes; None when it did not."""
    status = after["status"]
    if status == before:
        return None
    used = f"{byte_size(after['size'])} of the {byte_size(after['limit'])} {plan.name} allows"
    if status == ACTION_REQUIRED:
        return (
            f"{label}: {ACTION_REQUIRED}: the database uses {used}; delete data or upgrade its plan before "
            f"{after['enforcement']} (dynosim's clock), when access is restricted to one connection with "
            "READ, DELETE and TRUNCATE only"
        )
    if status == RESTRICTED:
        return (
            f"{label}: {RESTRICTED}: the database uses {used} past its enforcement date: one connection, "
            "READ, DELETE and TRUNCATE only (INSERT, UPDATE and CREATE are revoked, its sessions were ended) "
            "until it is back under"
        )
    return f"{label}: {AVAILABLE}: the database is back within its plan's storage ({used}); full access restored"


@dataclass(frozen=True)
class Watched:
    """One running Postgres add-on whose storage is checked."""

    name: str  # the add-on's, as addons.json records it
    label: str  # "heroku-postgresql:essential-0 (postgresql-curly-12345)"
    plan: PostgresPlan
    user: str
    database: str
    admin: Admin


def check(watched: Watched, previous: Mapping[str, Any], now: datetime) -> tuple[dict[str, Any], str | None]:
    """Measures the database, restricts or restores the app's role when its status changes, and gives
    back its new capacity record and the line that says so."""
    limit = storage_limit(watched.plan)
    if limit <= 0:
        return {"status": AVAILABLE}, None
    output = watched.admin(watched.database, "SELECT pg_database_size(current_database());")
    try:
        size = int(output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise AddonError(f"{watched.label}: cannot read its database's size (psql said {output.strip()!r})") from None
    before = str(previous.get("status", AVAILABLE))
    after = judge(previous, size, limit, now, grace())
    if after["status"] == RESTRICTED and before != RESTRICTED:
        watched.admin(watched.database, restrict_sql(watched.user, watched.database, ended=True))
    elif after["status"] != RESTRICTED and before == RESTRICTED:
        watched.admin(watched.database, restore_sql(watched.user, watched.database, watched.plan.connections))
    return after, announcement(watched.label, watched.plan, before, after)


# --- what the app's role may do -------------------------------------------------------------------


def start_sql(user: str, database: str, plan: PostgresPlan, restricted: bool) -> str:
    """Run in the app's database at every start: the plan's connection limit (a plan change takes effect
    at the next start), or the restriction an over-capacity database is under."""
    if restricted:
        return restrict_sql(user, database, ended=False)
    return f"ALTER ROLE {_ident(user)} CONNECTION LIMIT {plan.connections};\n"


def restrict_sql(user: str, database: str, *, ended: bool) -> str:
    """One connection; no INSERT or UPDATE on the role's tables, no CREATE in its schemas or database
    (`public` included, which Postgres 15 gives the database's owner), no temporary tables. `ended`: its
    sessions are ended too, so the app reconnects under the restriction."""
    role = _ident(user)
    terminate = (
        f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = {_literal(user)};\n"
        if ended
        else ""
    )
    return f"""ALTER ROLE {role} CONNECTION LIMIT 1;
{_each_object("REVOKE", "FROM", user)}
REVOKE CREATE, TEMPORARY ON DATABASE {_ident(database)} FROM {role};
{terminate}"""


def restore_sql(user: str, database: str, connections: int) -> str:
    """What restrict_sql took away, given back, and the plan's connection limit."""
    role = _ident(user)
    return f"""ALTER ROLE {role} CONNECTION LIMIT {connections};
{_each_object("GRANT", "TO", user)}
GRANT CREATE, TEMPORARY ON DATABASE {_ident(database)} TO {role};
"""


def _each_object(verb: str, preposition: str, user: str) -> str:
    """INSERT and UPDATE on each table the role owns, CREATE on each schema it owns, and CREATE on a
    `public` owned by pg_database_owner (Postgres 15+, where the database's owner has it that way)."""
    name = _literal(user)
    return f"""DO $dynosim$
DECLARE r record;
BEGIN
  FOR r IN SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = {name}) AND c.relkind IN ('r', 'p') LOOP
    EXECUTE format('{verb} INSERT, UPDATE ON TABLE %I.%I {preposition} %I', r.nspname, r.relname, {name});
  END LOOP;
  FOR r IN SELECT nspname FROM pg_namespace WHERE nspowner = (SELECT oid FROM pg_roles WHERE rolname = {name}) LOOP
    EXECUTE format('{verb} CREATE ON SCHEMA %I {preposition} %I', r.nspname, {name});
  END LOOP;
  IF EXISTS (SELECT FROM pg_namespace n JOIN pg_roles o ON o.oid = n.nspowner
             WHERE n.nspname = 'public' AND o.rolname = 'pg_database_owner') THEN
    EXECUTE '{verb} CREATE ON SCHEMA public {preposition} pg_database_owner';
  END IF;
END
$dynosim$;"""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'
