"""Heroku's plans for the add-ons dynosim runs, and the limits each plan sets: pure data.

`addons:create heroku-postgresql:essential-0` names a plan; a plan Heroku does not have is refused
here, with the ones it has. What enforces each limit is the service's (services/postgres.py,
services/redis.py); what prints it is the add-on's commands.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from dynosim.errors import AddonError

GB = 1024**3
MB = 1024**2


@dataclass(frozen=True)
class PostgresPlan:
    name: str  # "essential-0"
    title: str  # how pg:info prints it: "Essential 0"
    connections: int  # the most connections the app's role may hold at once
    storage: int  # bytes; past it, Heroku marks the database over capacity and restricts it
    manual_backups: int  # how many manual backups (bNNN) are kept; the oldest goes first
    scheduled_daily: int  # how many daily scheduled backups (aNNN) are kept
    scheduled_weekly: int  # and weekly ones, beyond the daily


@dataclass(frozen=True)
class RedisPlan:
    name: str  # "mini"
    title: str  # "Mini"
    maxmemory: int  # bytes
    clients: int  # Redis's maxclients: Heroku's "Connection Limit"
    # Heroku's help article on timeouts names Redis's as 300 seconds (help.heroku.com/TLWJY0PU); redis:timeout sets it
    timeout: int = 300  # seconds a connection may idle; 0 = for ever
    # noeviction: third-party pages only (flaviocopes.com/heroku-redis-maxmemory-policy); no Heroku page found
    policy: str = "noeviction"  # maxmemory-policy (redis:maxmemory)

    def directives(self, record: Mapping[str, object]) -> tuple[tuple[str, str], ...]:
        """The server's settings for an add-on on this plan: its limits, with the idle timeout and eviction
        policy that redis:timeout and redis:maxmemory recorded in its record in place of the plan's."""
        timeout, policy = record.get("timeout"), record.get("maxmemory_policy")
        return (
            ("maxmemory", str(self.maxmemory)),
            ("maxclients", str(self.clients)),
            ("timeout", str(timeout if isinstance(timeout, int) else self.timeout)),
            ("maxmemory-policy", policy if isinstance(policy, str) else self.policy),
        )


def _postgres() -> dict[str, PostgresPlan]:
    # Sources (../shared/heroku-platform.md §5): the Essential numbers are PGPLANS' (Dev Center
    # "heroku-postgres-plans": essential-0 1 GB and 20 connections, essential-1 10 GB, essential-2 32 GB
    # and 40 connections); essential-1's connection limit was not found, 20 assumed (essential-0's).
    # The standard/premium tables were not readable in the stored pages (only their openings were): the
    # 120 (standard-0) and 400 (standard-2, premium-2) connections are pg:info output users posted
    # (PGINFO-1607, HUGINN); the other sizes' connections and storage are not confirmed by a source read.
    # Backup retention (Dev Center "heroku-postgres-backups", "Backup retention limits"): not found in
    # the stored copy, which stops before that section; the numbers here (Essential 2 manual and 7 daily,
    # Standard 25 manual, 7 daily and 4 weekly, Premium and above 50 manual, 7 daily and 12 weekly) are
    # unconfirmed.
    plans = [
        PostgresPlan("essential-0", "Essential 0", 20, 1 * GB, 2, 7, 0),
        PostgresPlan("essential-1", "Essential 1", 20, 10 * GB, 2, 7, 0),
        PostgresPlan("essential-2", "Essential 2", 40, 32 * GB, 2, 7, 0),
    ]
    # Standard, Premium, Private and Shield share their sizes; they differ in availability.
    sizes = [("0", 120, 64), ("2", 400, 256), ("3", 500, 512), ("4", 500, 768), ("5", 500, 1024),
             ("6", 500, 1536), ("7", 500, 2048), ("8", 500, 3072), ("9", 500, 4096), ("10", 500, 8192)]  # fmt: skip
    for tier, manual, weekly in (("standard", 25, 4), ("premium", 50, 12), ("private", 50, 12), ("shield", 50, 12)):
        for size, connections, storage in sizes:
            name = f"{tier}-{size}"
            plans.append(PostgresPlan(name, f"{tier.title()} {size}", connections, storage * GB, manual, 7, weekly))
    return {plan.name: plan for plan in plans}


def _redis() -> dict[str, RedisPlan]:
    # Heroku's "Key-Value Store Technical Characterization" (devcenter.heroku.com/articles/heroku-redis-
    # technical-characterization, Oct 2024): RAM and Connection Limit per plan. Private and Shield come in
    # the single-tenant sizes only (7 and up); premium-6, 8, 11 and 13 do not exist. "MB" is taken as MiB.
    plans = [RedisPlan("mini", "Mini", 25 * MB, 20)]
    shared = [("0", 50 * MB, 40), ("1", 100 * MB, 80), ("2", 250 * MB, 200), ("3", 500 * MB, 400),
              ("4", 750 * MB, 700), ("5", 1 * GB, 1000)]  # fmt: skip
    single = [("7", 7 * GB, 10000), ("9", 10 * GB, 25000), ("10", 25 * GB, 40000), ("12", 50 * GB, 65000),
              ("14", 100 * GB, 65000)]  # fmt: skip
    for size, memory, clients in [*shared, *single]:
        plans.append(RedisPlan(f"premium-{size}", f"Premium {size}", memory, clients))
    for tier in ("private", "shield"):
        for size, memory, clients in single:
            plans.append(RedisPlan(f"{tier}-{size}", f"{tier.title()} {size}", memory, clients))
    return {plan.name: plan for plan in plans}


POSTGRES_PLANS: Mapping[str, PostgresPlan] = MappingProxyType(_postgres())
REDIS_PLANS: Mapping[str, RedisPlan] = MappingProxyType(_redis())
POSTGRES_DEFAULT = "essential-0"  # what `addons:create heroku-postgresql` gets without a plan
REDIS_DEFAULT = "mini"
# Heroku CI's in-dyno Redis (ci.py): Heroku documents no limits for it (not found), so Redis's own defaults
# (no memory limit, 10000 clients, no idle timeout)
REDIS_IN_DYNO = RedisPlan("in-dyno", "In-Dyno", 0, 10000, 0)

# Heroku's default plan for a new database, since the Essential tier replaced mini (May 2024); a
# default asserted by the Heroku CLI's docs examples, not confirmed in a source read here.
# Plans Heroku has retired: creating one fails on Heroku with its own words.
_RETIRED = {"hobby-dev", "hobby-basic", "mini", "basic"}
# Heroku CI's in-dyno database (app.json environments.test): a server inside the test dyno, with no plan's
# limits; Postgres' own default max_connections (100) is what such a server has.
IN_DYNO = PostgresPlan("in-dyno", "In-Dyno", 100, 0, 0, 0, 0)
POSTGRES_PLAN_LIST = "essential-0, essential-1, essential-2, standard-0…10, premium-0…10, private-0…10, shield-0…10"


def postgres_plan(plan: str) -> PostgresPlan:
    """The plan of "heroku-postgresql" or "heroku-postgresql:standard-0"; an unknown or retired one is
    refused, in one line naming Heroku's plans."""
    name = plan.partition(":")[2] or POSTGRES_DEFAULT
    found = POSTGRES_PLANS.get(name)
    if found is not None:
        return found
    if name == IN_DYNO.name:
        return IN_DYNO
    if name in _RETIRED:
        raise AddonError(
            f"heroku-postgresql:{name}: The {name} plan has reached end-of-life; use heroku-postgresql:essential-0 "
            f"or another of its plans: {POSTGRES_PLAN_LIST}"
        )
    raise AddonError(
        f'heroku-postgresql has no plan "{name}"; give one of its plans: {POSTGRES_PLAN_LIST} '
        "(e.g. heroku-postgresql:essential-0)"
    )


def redis_plan(plan: str) -> RedisPlan:
    """The plan of "heroku-redis", "heroku-key-value-store:premium-0"…; an unknown one is refused."""
    addon, _, name = plan.partition(":")
    found = REDIS_IN_DYNO if name == REDIS_IN_DYNO.name else REDIS_PLANS.get(name or REDIS_DEFAULT)
    if found is not None:
        return found
    if name in ("hobby-dev", "hobby-basic"):  # Heroku replaced them with mini (Nov 2022)
        raise AddonError(f"{addon}:{name}: the {name} plan has reached end-of-life; use mini")
    raise AddonError(
        f'{addon} has no plan "{name}"; its plans: mini, premium-0…5, premium-7, 9, 10, 12, 14, '
        "private-7, 9, 10, 12, 14, shield-7, 9, 10, 12, 14"
    )
