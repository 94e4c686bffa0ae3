"""A run's faults (`FaultBoard`): switched on and off at run time over the control socket, each with a
line on the log stream when it starts and when it ends, so the logs show cause and effect; and the
record of every fault the run had, for the resilience report."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from dataclasses import dataclass

from dynosim.errors import FaultError
from dynosim.faults import Fault, FaultRequest
from dynosim.faults.base import FaultKind, Platform
from dynosim.faults.kinds import kind_of

STRIKE_INTERVAL = 1.0  # seconds between a one-shot kind's strikes while it lasts


@dataclass(frozen=True)
class Span:
    """A fault the run had, and when it went off (None: still on)."""

    fault: Fault
    ended: float | None


class FaultBoard:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._active: dict[str, tuple[Fault, FaultKind, asyncio.Task[None] | None]] = {}
        self._ended: dict[str, float] = {}
        self.history: list[Fault] = []
        self._count = 0

    def active(self) -> list[Fault]:
        return [fault for fault, _, _ in self._active.values()]

    def spans(self) -> list[Span]:
        return [Span(fault, self._ended.get(fault.id)) for fault in self.history]

    async def add(self, request: FaultRequest) -> Fault:
        """Switches a fault on: checked first (a bad request changes nothing), then started and said."""
        kind = kind_of(request.kind)
        kind.check(request, self.platform)
        self._count += 1
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        now = time.time()
        ends = now + request.duration if request.duration is not None else None
        fault = Fault(f"f{self._count}", request, seed, now, ends)
        rng = random.Random(seed)
        self.history.append(fault)
        self._say(f"{fault.describe()} started (seed {seed})")
        if kind.one_shot and request.duration is None:
            try:
                await kind.strike(fault, self.platform, rng)
            finally:
                self._end(fault, "done")
            return fault
        task: asyncio.Task[None] | None
        if kind.one_shot:
            task = asyncio.ensure_future(self._strikes(fault, kind, rng))
        else:
            try:
                await kind.start(fault, self.platform, rng)
            except BaseException:
                self._end(fault, "could not start")
                raise
            task = asyncio.ensure_future(self._expire(fault)) if request.duration is not None else None
        self._active[fault.id] = (fault, kind, task)
        return fault

    async def remove(self, fault_id: str) -> Fault:
        entry = self._active.get(fault_id)
        if entry is None:
            on = ", ".join(self._active) or "none"
            raise FaultError(f"no fault {fault_id} is on; on now: {on} (see `dynosim faults`)")
        return await self._off(fault_id, "removed")

    async def clear(self) -> list[Fault]:
        return [await self._off(fault_id, "cleared") for fault_id in list(self._active)]

    async def _off(self, fault_id: str, why: str) -> Fault:
        fault, kind, task = self._active.pop(fault_id)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        try:
            if not kind.one_shot:
                await kind.stop(fault, self.platform)
        finally:
            self._end(fault, why)
        return fault

    async def _expire(self, fault: Fault) -> None:
        assert fault.request.duration is not None
        await asyncio.sleep(fault.request.duration)
        if fault.id in self._active:
            await self._off(fault.id, "over")

    async def _strikes(self, fault: Fault, kind: FaultKind, rng: random.Random) -> None:
        assert fault.ends is not None
        while time.time() < fault.ends:
            await kind.strike(fault, self.platform, rng)
            await asyncio.sleep(min(STRIKE_INTERVAL, max(0.0, fault.ends - time.time())))
        if fault.id in self._active:
            await self._off(fault.id, "over")

    def _end(self, fault: Fault, why: str) -> None:
        ended = time.time()
        self._ended[fault.id] = ended
        self._say(f"{fault.describe()} ended ({why}, after {ended - fault.started:.1f}s)")

    def _say(self, text: str) -> None:
        self.platform.logs.hint("faults", text)
