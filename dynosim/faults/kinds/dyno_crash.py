"""dyno-crash: SIGKILL to a dyno's processes, as when a dyno dies under the app. The dyno manager sees a
crash (status 137) and restarts it by Heroku's crash policy: at once the first time, then with back-off."""

from __future__ import annotations

import random

from dynosim.faults import Fault
from dynosim.faults.base import FaultKind, Platform, struck


class DynoCrash(FaultKind):
    name = "dyno-crash"
    summary = "SIGKILL a dyno (or each dyno of a type, with --probability): Heroku's crash policy restarts it"
    target = "dyno"
    one_shot = True

    async def strike(self, fault: Fault, platform: Platform, rng: random.Random) -> None:
        for dyno in struck(fault, platform, rng):
            assert dyno.process is not None
            platform.logs.hint("faults", f"{fault.id}: SIGKILL to {dyno.name} (pid {dyno.process.pid})")
            dyno.kill()
