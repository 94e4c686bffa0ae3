"""router-reset: the client's connection reset (a TCP RST: the client sees ECONNRESET) before its
request reaches a dyno, logged as Heroku's router logs a connection it closes under a request, H24
Forced close, with no status."""

from __future__ import annotations

import random

from dynosim.faults import Fault, FaultRequest
from dynosim.faults.base import Platform
from dynosim.faults.kinds.router_rule import RouterKind
from dynosim.router.chaos import Reset


class RouterReset(RouterKind):
    name = "router-reset"
    summary = "reset the client's connection (ECONNRESET) before its request reaches a dyno, logged as H24"

    def action(self, request: FaultRequest) -> Reset:
        return Reset()

    async def start(self, fault: Fault, platform: Platform, rng: random.Random) -> None:
        await super().start(fault, platform, rng)
        platform.logs.hint("faults", f"{fault.id}: the router resets the connections it picks (logged as H24)")
