"""redis-oom: a Redis add-on's memory full, as when the app outgrows its plan: every write refused with
Redis's own "OOM command not allowed when used memory > 'maxmemory'.", reads and deletes still served,
no key evicted; the previous maxmemory and policy put back at the end.

The server is told with CONFIG SET: the policy `noeviction` first (under an evicting policy a low limit
would delete keys), then maxmemory 1 byte. Redis refuses a write only while used memory is *over* the
limit, and used memory moves with every client's buffers, so a limit at what is used now would let
some writes through; one byte is full whatever happens."""

from __future__ import annotations

import asyncio
import random

from dynosim.errors import FaultError
from dynosim.faults import Fault, FaultRequest
from dynosim.faults.base import Platform, addon
from dynosim.faults.kinds.addon_server import AddonKind, address, label


class RedisOom(AddonKind):
    name = "redis-oom"
    summary = "fill a Redis add-on's memory: writes get Redis's OOM error, reads still work"
    by_chance = False
    services = ("redis",)

    def __init__(self) -> None:
        self._previous: dict[str, tuple[str, str, str]] = {}  # fault id → (add-on, maxmemory, its policy) before

    def check(self, request: FaultRequest, platform: Platform) -> None:
        super().check(request, platform)
        name = addon(platform, request.target).name
        if any(on == name for on, _, _ in self._previous.values()):  # it would keep 1 byte as "before"
            raise FaultError(
                f"--target {request.target}: {name} is full already (redis-oom is on; see `dynosim faults`)"
            )

    async def start(self, fault: Fault, platform: Platform, rng: random.Random) -> None:
        from dynosim.addons.services.redis import call  # the services load when a fault needs one

        attachment = addon(platform, fault.request.target)
        port, password, tls = address(attachment)
        limit, policy = await asyncio.to_thread(
            call, port, password, [("CONFIG", "GET", "maxmemory"), ("CONFIG", "GET", "maxmemory-policy")], tls
        )
        self._previous[fault.id] = (attachment.name, _value(limit), _value(policy))
        await asyncio.to_thread(
            call,
            port,
            password,
            [("CONFIG", "SET", "maxmemory-policy", "noeviction"), ("CONFIG", "SET", "maxmemory", "1")],
            tls,
        )
        platform.logs.hint(
            "faults", f"{fault.id}: {label(attachment)} is full (maxmemory 1 byte, noeviction): writes get OOM errors"
        )

    async def stop(self, fault: Fault, platform: Platform) -> None:
        from dynosim.addons.services.redis import call

        attachment = addon(platform, fault.request.target)
        _, limit, policy = self._previous.pop(fault.id)
        port, password, tls = address(attachment)
        await asyncio.to_thread(
            call,
            port,
            password,
            [("CONFIG", "SET", "maxmemory", limit), ("CONFIG", "SET", "maxmemory-policy", policy)],
            tls,
        )
        platform.logs.hint(
            "faults", f"{fault.id}: {label(attachment)}: maxmemory {limit} and {policy} again, as before"
        )


def _value(reply: object) -> str:
    """CONFIG GET's [name, value]."""
    if isinstance(reply, list) and len(reply) == 2:
        return str(reply[1])
    raise ValueError(f"the Redis server answered CONFIG GET with {reply!r}")
