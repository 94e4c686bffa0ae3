"""What every fault kind is, the same shape for each (as the add-on services are): a subclass of
`FaultKind` in kinds/<name>.py, whose one instance the board uses.

- `name` (the CLI's word, "dyno-crash"), `summary` (one line for --help), `target` (what it takes:
  a dyno or process type, an add-on, or nothing for the router's kinds).
- `check`: the request makes sense for this run (its target exists, its numbers fit), before anything
  happens; a FaultError otherwise, so a bad request leaves the app untouched.
- A one-shot kind (`one_shot`, a crash, a cycle, a deploy) `strike`s: once when added, or, given a
  duration, once a second while it lasts, each time with its probability.
- A lasting kind `start`s when added and `stop`s when its duration ends or it is removed, putting
  back what it changed (and never an add-on's data).

`Platform` is what a fault acts on: the running app, as the supervisor's `Run` holds it.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, ClassVar, Protocol

from dynosim.errors import FaultError
from dynosim.faults import Fault, FaultRequest

if TYPE_CHECKING:
    from dynosim.addons import Addons, Attachment
    from dynosim.logs import LogStream
    from dynosim.releases import Release
    from dynosim.router.state import RouterState
    from dynosim.runtime.dyno import Dyno
    from dynosim.runtime.manager import DynoManager, DynoSlot


class Platform(Protocol):
    """The running app a fault acts on (the supervisor's `Run` is one)."""

    logs: LogStream
    addons: Addons
    attachments: list[Attachment]

    @property
    def router(self) -> RouterState | None: ...

    def running(self) -> DynoManager: ...

    async def addon_changed(self, name: str, description: str, user: str) -> Release: ...


class FaultKind:
    name: ClassVar[str]
    summary: ClassVar[str]
    target: ClassVar[str]  # "dyno" (web.2 or web) | "addon" (heroku-postgresql, its name or attachment) | "none"
    one_shot: ClassVar[bool] = False

    def check(self, request: FaultRequest, platform: Platform) -> None:
        """Refuses a request this run cannot act on; the default checks the target is one the run has."""
        if self.target == "none":
            if request.target:
                raise FaultError(f"{self.name} takes no --target (it acts on the router)")
        elif not request.target:
            example = "web or web.1" if self.target == "dyno" else "heroku-postgresql"
            raise FaultError(f"{self.name} needs --target, like --target {example}")
        elif self.target == "dyno":
            dynos(platform, request.target)
        else:
            addon(platform, request.target)

    async def strike(self, fault: Fault, platform: Platform, rng: random.Random) -> None:
        raise NotImplementedError

    async def start(self, fault: Fault, platform: Platform, rng: random.Random) -> None:
        raise NotImplementedError

    async def stop(self, fault: Fault, platform: Platform) -> None:
        raise NotImplementedError


def dynos(platform: Platform, target: str | None) -> list[DynoSlot]:
    """The formation's dynos a target names: one dyno (web.2) or every dyno of a process type (web)."""
    slots = platform.running().slots
    chosen = [s for s in slots if target in (s.name, s.process.name)]
    if not chosen:
        names = ", ".join(s.name for s in slots) or "none"
        raise FaultError(f'--target {target}: the app has no dyno or process type "{target}"; its dynos: {names}')
    return chosen


def struck(fault: Fault, platform: Platform, rng: random.Random) -> list[Dyno]:
    """The running dynos a fault acts on this time: of those its target names, each that is starting or
    up, by its probability (one draw per such dyno, in formation order, so a seed repeats the choice)."""
    hit = []
    for slot in dynos(platform, fault.request.target):
        dyno = slot.dyno
        if dyno is None or dyno.state not in ("starting", "up") or dyno.process is None:
            continue
        if rng.random() < fault.request.probability:
            hit.append(dyno)
    return hit


def addon(platform: Platform, target: str | None) -> Attachment:
    """The running add-on a target names: its add-on name (heroku-postgresql), its own name
    (postgresql-curly-12345), or a config var it sets (DATABASE_URL, DATABASE)."""
    wanted = (target or "").upper()
    hits = [
        a
        for a in platform.attachments
        if target in (a.name, a.plan, a.plan.partition(":")[0])
        or wanted in (*a.config_vars, *(v.removesuffix("_URL") for v in a.config_vars))
    ]
    if len(hits) == 1:
        return hits[0]
    names = ", ".join(f"{a.plan.partition(':')[0]} ({a.name})" for a in platform.attachments) or "none"
    if not hits:
        raise FaultError(f'--target {target}: the running app has no add-on "{target}"; its add-ons: {names}')
    raise FaultError(f"--target {target} could mean {len(hits)} add-ons ({names}); name one by its name")
