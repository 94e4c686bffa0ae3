"""dyno-hang: SIGSTOP to every process of a dyno, as a dyno wedged by a deadlock, a runaway GC pause or a
stalled host: it stays up, the kernel still accepts connections for it, and nothing answers. Heroku's
router then ends each request to it as it would: H12 (Request timeout) after 30 s without a first byte;
H13 when the dyno dies before answering (a crash, the SIGKILL after a cycle's SIGTERM went unheard), H18
when it dies part-way through a response. When the fault ends (its duration, faults:remove, the run's end)
SIGCONT lets the dyno go on, and it answers again (requests still waiting get their late answers)."""

from __future__ import annotations

import random
import signal
from typing import TYPE_CHECKING

from dynosim.faults import Fault
from dynosim.faults.base import FaultKind, Platform, struck

if TYPE_CHECKING:
    import psutil


class DynoHang(FaultKind):
    name = "dyno-hang"
    summary = "SIGSTOP a dyno until the fault ends (then SIGCONT): the router's requests to it end in H12"
    target = "dyno"

    def __init__(self) -> None:
        self._stopped: dict[str, list[tuple[str, list[psutil.Process]]]] = {}  # by fault id: each dyno's processes

    async def start(self, fault: Fault, platform: Platform, rng: random.Random) -> None:
        stopped = self._stopped.setdefault(fault.id, [])
        for dyno in struck(fault, platform, rng):
            assert dyno.process is not None
            processes = dyno.process.processes()
            platform.logs.hint("faults", f"{fault.id}: SIGSTOP to {dyno.name} ({_count(processes)})")
            stopped.append((dyno.name, [p for p in processes if _signal(p, signal.SIGSTOP)]))

    async def stop(self, fault: Fault, platform: Platform) -> None:
        for name, processes in self._stopped.pop(fault.id, []):
            # psutil refuses a pid that a new process took since: only the ones stopped are continued
            alive = [p for p in processes if _signal(p, signal.SIGCONT)]
            if alive:
                platform.logs.hint("faults", f"{fault.id}: SIGCONT to {name} ({_count(alive)})")


def _signal(process: psutil.Process, signum: int) -> bool:
    import psutil

    try:
        if process.status() == psutil.STATUS_ZOMBIE:  # ended, not yet reaped: nothing to stop or continue
            return False
        process.send_signal(signum)
    except psutil.Error:  # it ended meanwhile
        return False
    return True


def _count(processes: list[psutil.Process]) -> str:
    return f"{len(processes)} process{'es' if len(processes) != 1 else ''}"
