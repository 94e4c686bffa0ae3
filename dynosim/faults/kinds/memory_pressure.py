"""memory-pressure: a dyno driven past its memory quota without touching the app's code, by lowering
the quota the memory monitor holds it to (for the fault's time) under what the dyno really uses. The
monitor itself then says it, with the lines it prints for a real leak: `Process running mem=…M(…%)`
and `Error R14 (Memory quota exceeded)` at once and at every sample after, the dyno going on. Given a
duration, the pressure rises halfway through it to past the dyno size's R15 limit (2x the quota, 1.2x
on the largest performance dynos): `Error R15 (Memory quota vastly exceeded)`, SIGKILL, and Heroku's
crash policy restarts the dyno, at its own quota. When the fault ends the quota is put back."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING

from dynosim.faults import Fault
from dynosim.faults.base import FaultKind, Platform, struck
from dynosim.runtime import memory

if TYPE_CHECKING:
    from dynosim.runtime.dyno import Dyno

OVER = 1.25  # the share of the lowered quota the dyno's real usage is at: clearly past it, never at the edge


class MemoryPressure(FaultKind):
    name = "memory-pressure"
    summary = "push a dyno past its memory quota (R14); given --for, past Heroku's kill limit halfway (R15)"
    target = "dyno"

    def __init__(self) -> None:
        self._pressed: dict[str, tuple[list[Dyno], asyncio.Task[None] | None]] = {}  # by fault id

    async def start(self, fault: Fault, platform: Platform, rng: random.Random) -> None:
        pressed: list[Dyno] = []
        for dyno in struck(fault, platform, rng):
            if await _press(fault, platform, dyno, OVER):
                pressed.append(dyno)
        rising = None
        if pressed and fault.request.duration is not None:
            rising = asyncio.ensure_future(self._rise(fault, platform, pressed, fault.request.duration / 2))
        self._pressed[fault.id] = (pressed, rising)

    async def _rise(self, fault: Fault, platform: Platform, pressed: list[Dyno], after: float) -> None:
        await asyncio.sleep(after)
        for dyno in pressed:
            if dyno.state in ("starting", "up") and not dyno.stopping:
                await _press(fault, platform, dyno, OVER * dyno.spec.size.kill_factor)

    async def stop(self, fault: Fault, platform: Platform) -> None:
        pressed, rising = self._pressed.pop(fault.id, ([], None))
        if rising is not None:
            rising.cancel()
        for dyno in pressed:
            dyno.quota.restore()
            if dyno.state in ("starting", "up") and not dyno.stopping:
                platform.logs.hint("faults", f"{fault.id}: {dyno.name}'s memory quota is {dyno.quota.mb:.0f} MB again")


async def _press(fault: Fault, platform: Platform, dyno: Dyno, over: float) -> bool:
    """Lowers the dyno's quota so that what it uses now is `over` times it; False when it uses nothing
    to press on (its processes ended)."""
    rss, swap = await asyncio.to_thread(memory.sample, dyno)
    used = rss + swap
    if used < 1:
        return False
    dyno.quota.lower(used / over)
    platform.logs.hint(
        "faults",
        f"{fault.id}: {dyno.name}'s memory quota lowered to {dyno.quota.mb:.1f} MB (it uses {used:.1f} MB)",
    )
    return True
