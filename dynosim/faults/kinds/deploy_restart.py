"""deploy-restart: every dyno (or every dyno of a process type) restarted at once, as a deploy restarts
them: `heroku[web.1]: Restarting`, SIGTERM, the stop timeout, a fresh dyno; with `--preboot`, web dynos'
successors first, as Heroku's preboot does on a deploy.

No new release is made. What an app meets in a deploy is every dyno stopped at the same moment (requests
cut, jobs dropped on SIGTERM, all of them reconnecting to Postgres at once); a release would add a lasting
entry to the app's history and run its release phase again, which a fault could not take back, and would
change nothing the dynos see (the slug and config vars are the same). It takes the path of `dynosim
restart` (the dyno manager's restart), so its lines are the ones a restart prints; a real deploy is `git
push` with `dynosim run --watch`, or `dynosim deploy`."""

from __future__ import annotations

import asyncio
import random

from dynosim.errors import FaultError
from dynosim.faults import Fault, FaultRequest
from dynosim.faults.base import FaultKind, Platform, dynos


class DeployRestart(FaultKind):
    name = "deploy-restart"
    summary = "restart every dyno (or every dyno of a type) at once, as a deploy does; no release is made"
    target = "dyno"
    one_shot = True

    def check(self, request: FaultRequest, platform: Platform) -> None:
        if request.target is None:
            return
        if request.target not in {slot.process.name for slot in platform.running().slots}:
            dynos(platform, request.target)  # names the dynos the app has when the target is none of them
            raise FaultError(
                f"--target {request.target}: deploy-restart restarts every dyno of a process type; "
                f"give a type like web, or no --target for every dyno"
            )

    async def strike(self, fault: Fault, platform: Platform, rng: random.Random) -> None:
        slots = platform.running().slots
        chosen = [
            slot
            for slot in slots
            if fault.request.target in (None, slot.process.name) and rng.random() < fault.request.probability
        ]
        if chosen:
            platform.logs.hint(
                "faults", f"{fault.id}: restarting {', '.join(s.name for s in chosen)}, as a deploy does"
            )
        await asyncio.gather(*(slot.restart() for slot in chosen))
