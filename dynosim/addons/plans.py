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
    clients: int  # Redis's maxclients
    timeout: int = 300  # seconds a connection may idle (redis:timeout); 0 = for ever
    policy: str = "noeviction"  # maxmemory-policy (redis:maxmemory)


def _postgres() -> dict[str, PostgresPlan]:
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
    plans = [RedisPlan("mini", "Mini", 25 * MB, 20)]
    sizes = [("0", 50 * MB, 40), ("1", 100 * MB, 80), ("2", 250 * MB, 200), ("3", 500 * MB, 400),
             ("5", 1 * GB, 1000), ("7", 7 * GB, 10000), ("9", 10 * GB, 25000), ("10", 25 * GB, 40000),
             ("12", 50 * GB, 65000), ("14", 100 * GB, 65000)]  # fmt: skip
    for tier in ("premium", "private", "shield"):
        for size, memory, clients in sizes:
            plans.append(RedisPlan(f"{tier}-{size}", f"{tier.title()} {size}", memory, clients))
    return {plan.name: plan for plan in plans}


POSTGRES_PLANS: Mapping[str, PostgresPlan] = MappingProxyType(_postgres())
REDIS_PLANS: Mapping[str, RedisPlan] = MappingProxyType(_redis())
POSTGRES_DEFAULT = "essential-0"  # what `addons:create heroku-postgresql` gets without a plan
REDIS_DEFAULT = "mini"

# Plans Heroku has retired: creating one fails on Heroku with its own words.
_RETIRED = {"hobby-dev", "hobby-basic", "mini", "basic"}


def postgres_plan(plan: str) -> PostgresPlan:
    """The plan of "heroku-postgresql" or "heroku-postgresql:standard-0"; an unknown one is refused."""
    name = plan.partition(":")[2] or POSTGRES_DEFAULT
    found = POSTGRES_PLANS.get(name)
    if found is not None:
        return found
    if name in _RETIRED:
        raise AddonError(f"heroku-postgresql:{name}: the {name} plan has reached end-of-life; use essential-0")
    raise AddonError(
        f'heroku-postgresql has no plan "{name}"; its plans: essential-0, essential-1, essential-2, '
        "standard-0…10, premium-0…10, private-0…10, shield-0…10"
    )


def redis_plan(plan: str) -> RedisPlan:
    """The plan of "heroku-redis", "heroku-key-value-store:premium-0"…; an unknown one is refused."""
    addon, _, name = plan.partition(":")
    found = REDIS_PLANS.get(name or REDIS_DEFAULT)
    if found is None:
        raise AddonError(f'{addon} has no plan "{name}"; its plans: mini, premium-0…14, private-0…14, shield-0…14')
    return found
