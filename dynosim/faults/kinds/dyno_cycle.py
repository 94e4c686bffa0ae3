"""dyno-cycle: Heroku's daily cycle of a dyno, now (`heroku[web.1]: Cycling`): SIGTERM to its processes,
the stop timeout (30 s, `dynosim run --stop-timeout`), SIGKILL and `Error R12 (Exit timeout)` if the app
ignores SIGTERM, then a fresh dyno on a fresh filesystem. The dyno manager's own cycle does it, so the
lines are the ones a real cycle prints."""

from __future__ import annotations

import asyncio
import random

from dynosim.faults import Fault
from dynosim.faults.base import FaultKind, Platform, dynos


class DynoCycle(FaultKind):
    name = "dyno-cycle"
    summary = "cycle a dyno now, as the daily cycle does: SIGTERM, the stop timeout, SIGKILL and R12 if ignored"
    target = "dyno"
    one_shot = True

    async def strike(self, fault: Fault, platform: Platform, rng: random.Random) -> None:
        manager = platform.running()
        chosen = [
            slot.name for slot in dynos(platform, fault.request.target) if rng.random() < fault.request.probability
        ]
        if chosen:
            platform.logs.hint("faults", f"{fault.id}: cycling {', '.join(chosen)}")
        await asyncio.gather(*(manager.cycle_now(name) for name in chosen))
