"""What the router's kinds share (router-latency, router-error, router-timeout, router-reset): while
one is on, a rule of its own sits in the router's `Chaos` (dynosim/router/chaos.py), which the router
consults for each request it starts; its start puts the rule there and its stop takes it away, so the
first request after either is the first with or without it."""

from __future__ import annotations

import random
from typing import ClassVar

from dynosim.errors import FaultError
from dynosim.faults import Fault, FaultRequest
from dynosim.faults.base import FaultKind, Platform
from dynosim.router.chaos import Action, Rule, switch_off, switch_on
from dynosim.router.state import RouterState


class RouterKind(FaultKind):
    target = "none"
    options: ClassVar[tuple[str, ...]] = ()  # which of --latency, --status, --code it takes

    def check(self, request: FaultRequest, platform: Platform) -> None:
        super().check(request, platform)
        for option in ("latency", "status", "code"):
            if getattr(request, option) is not None and option not in self.options:
                raise FaultError(f"{self.name} takes no --{option}")
        router(platform)

    def action(self, request: FaultRequest) -> Action:
        raise NotImplementedError

    async def start(self, fault: Fault, platform: Platform, rng: random.Random) -> None:
        rule = Rule(fault.id, self.action(fault.request), fault.request.probability, rng)
        switch_on(router(platform), rule)

    async def stop(self, fault: Fault, platform: Platform) -> None:
        if platform.router is not None:
            switch_off(platform.router, fault.id)


def router(platform: Platform) -> RouterState:
    if platform.router is None:
        raise FaultError("the run's router is not listening yet; add the fault once the run has started")
    return platform.router
