"""What `redis:info`, `redis:maxmemory`, `redis:timeout` and `redis:credentials --reset` do to an app's
Redis, apart from printing (that is `dynosim/commands/redis.py`).

Each works on the server a `manage.Session` hands over (the running app's, or one started for the
command) and on the add-on's record in addons.json: a setting is applied to the server at once with
CONFIG SET, and kept in the record ("timeout", "maxmemory_policy", "password"), from which every later
start configures the server (`RedisPlan.directives`, services/redis.py). Heroku's CLI reads these from its
Data API (lib/redis/api.js); here the server itself answers where it knows (its version, its settings).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dynosim.addons import STATE_FILE, State, _password
from dynosim.addons.catalogue import var_names
from dynosim.addons.manage import Session
from dynosim.addons.plans import RedisPlan, redis_plan
from dynosim.addons.services.redis import call
from dynosim.errors import AddonError

# Redis's eviction policies, in the words of Heroku's CLI (commands/redis/maxmemory.js), in its order
POLICIES: Mapping[str, str] = MappingProxyType(
    {
        "noeviction": "returns errors when memory limit is reached",
        "allkeys-lfu": "removes less frequently used keys first",
        "volatile-lfu": "removes less frequently used keys first that have an expiry set",
        "allkeys-lru": "removes less recently used keys first",
        "volatile-lru": "removes less recently used keys first that have an expiry set",
        "allkeys-random": "evicts random keys",
        "volatile-random": "evicts random keys but only those that have an expiry set",
        "volatile-ttl": "only evicts keys with an expiry set and a short TTL",
    }
)


@dataclass(frozen=True)
class RedisInfo:
    """One Redis add-on as `redis:info` shows it."""

    name: str  # "redis-curly-12345"
    app: str
    config_vars: tuple[str, ...]  # ("REDIS_URL",)
    plan: RedisPlan
    created: datetime | None
    version: str  # the server's own redis_version
    timeout: int  # the server's CONFIG GET timeout
    policy: str  # and maxmemory-policy
    url: str

    def fields(self) -> list[tuple[str, str]]:
        """Heroku's rows. Its CLI prints whatever rows its Data API sends; Plan, Status and Maintenance are
        as Heroku's maintenance-window article shows them, the others as issue 18 names them (no page
        showing them all was found). Status and Maintenance are always these here."""
        created = self.created.strftime("%Y-%m-%d %H:%M UTC") if self.created else "(not recorded)"
        return [
            ("Plan", self.plan.title),
            ("Status", "available"),
            ("Created", created),
            ("Version", self.version),
            ("Timeout", str(self.timeout)),
            ("Maxmemory", self.policy),
            ("Maintenance", "not required"),
        ]

    def as_json(self) -> dict[str, Any]:
        """The shape of Heroku's `redis:info --json`: the Data API's database, its app and config vars."""
        return {
            "name": self.name,
            "app": {"name": self.app},
            "config_vars": list(self.config_vars),
            "plan": self.plan.name,
            "created_at": self.created.isoformat() if self.created else None,
            "resource_url": self.url,
            "info": [{"name": name, "values": [value]} for name, value in self.fields()],
        }


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise AddonError(f'--policy "{policy}" is not a Redis eviction policy; use one of: {", ".join(POLICIES)}')
    return policy


def check_timeout(seconds: int) -> int:
    if seconds < 0:
        raise AddonError(
            f"--seconds {seconds}: give the idle seconds before a connection is closed, 0 or more (0: never)"
        )
    return seconds


def info(session: Session, app: str) -> RedisInfo:
    """The add-on's plan and record, with what its running server says of itself."""
    record = session.record()
    port, password, tls = _address(session.url)
    server, timeout, policy = call(
        port, password, [("INFO", "server"), ("CONFIG", "GET", "timeout"), ("CONFIG", "GET", "maxmemory-policy")], tls
    )
    version = next(
        (line.partition(":")[2].strip() for line in str(server).splitlines() if line.startswith("redis_version:")), "?"
    )
    entry = session.declared.entry
    return RedisInfo(
        name=str(record["name"]),
        app=app,
        config_vars=tuple(var_names(entry)),
        plan=redis_plan(entry.request.plan),
        created=_created(session, record),
        version=version,
        timeout=int(_value(timeout)),
        policy=_value(policy),
        url=session.url,
    )


def set_policy(session: Session, policy: str) -> None:
    """redis:maxmemory: the server's eviction policy now, and at every later start."""
    _configure(session, "maxmemory-policy", check_policy(policy), maxmemory_policy=policy)


def set_timeout(session: Session, seconds: int) -> None:
    """redis:timeout: the seconds the server lets a connection idle, now and at every later start."""
    _configure(session, "timeout", str(check_timeout(seconds)), timeout=seconds)


def reset_credentials(session: Session) -> None:
    """redis:credentials --reset: a new password on the server and in the record; every client connection
    is closed, so the app's clients must log in again, and the old password gets Redis's WRONGPASS. The
    caller tells a running app (its new release with the new REDIS_URL)."""
    record = session.record()
    port, password, tls = _address(session.url)
    new = _password()
    call(port, password, [("CONFIG", "SET", "requirepass", new)], tls)
    _update(session, str(record["name"]), password=new)
    # after the record: a client that reconnects at once finds the new password wherever it looks
    call(port, new, [("CLIENT", "KILL", "TYPE", "normal"), ("CLIENT", "KILL", "TYPE", "pubsub")], tls)


def _configure(session: Session, directive: str, value: str, **kept: object) -> None:
    record = session.record()
    port, password, tls = _address(session.url)
    call(port, password, [("CONFIG", "SET", directive, value)], tls)
    _update(session, str(record["name"]), **kept)


def _update(session: Session, name: str, **changes: object) -> None:
    """Changes the add-on's record in addons.json (read again now: a run may have written it since)."""
    state = State.load(Path(session.state_dir) / STATE_FILE)
    for record in state.records:
        if record.get("name") == name:
            record.update(changes)
            state.save()
            return
    raise AddonError(f"{name} has no record in {state.path} any more; see `dynosim addons`")


def _created(session: Session, record: Mapping[str, Any]) -> datetime | None:
    """When it was created: `addons:create`'s declaration says; app.json's add-ons, when their folder was made."""
    when = session.declared.reserved.get("created_at")
    if not isinstance(when, (int, float)):
        folder = Path(session.state_dir) / "addons" / str(record["name"])
        when = folder.stat().st_ctime if folder.exists() else None
    return datetime.fromtimestamp(when, UTC) if when is not None else None


def _address(url: str) -> tuple[int, str, bool]:
    parts = urllib.parse.urlsplit(url)
    return parts.port or 6379, urllib.parse.unquote(parts.password or ""), parts.scheme == "rediss"


def _value(reply: object) -> str:
    """CONFIG GET's [name, value]."""
    if isinstance(reply, list) and len(reply) == 2:
        return str(reply[1])
    raise AddonError(f"the Redis server answered CONFIG GET with {reply!r}")
