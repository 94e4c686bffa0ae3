"""dyno-crash: SIGKILL to a dyno's processes, as when a dyno dies under the app. The dyno manager sees a
crash (status 137) and restarts it by Heroku's crash policy: at once the first time, then with back-off."""

from __future__ import annotations

import random

from dynosim.faults import Fault
from dynosim.faults.base import FaultKind, Platform, dynos


class DynoCrash(FaultKind):
    name = "dyno-crash"
    summary = "SIGKILL a dyno (or each dyno of a type, with --probability): Heroku's crash policy restarts it"
    target = "dyno"
    one_shot = True

    async def strike(self, fault: Fault, platform: Platform, rng: random.Random) -> None:
        for slot in dynos(platform, fault.request.target):
            dyno = slot.dyno
            if dyno is None or dyno.state not in ("starting", "up") or dyno.process is None:
                continue
            if rng.random() >= fault.request.probability:
                continue
            platform.logs.hint("faults", f"{fault.id}: SIGKILL to {dyno.name} (pid {dyno.process.pid})")
            dyno.kill()
