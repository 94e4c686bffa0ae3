"""The dyno manager: runs the release phase, then the formation, restarting crashed dynos
on Heroku's schedule and stopping everything the way Heroku does."""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, replace

from ..errors import ReleaseError
from ..formation import DEFAULT_SIZE, SIZES, Formation
from ..logs import LogStream
from ..procfile import Procfile, ProcessType
from ..releases import Release
from .dyno import Dyno, DynoSpec, Timeouts
from .ports import free_port
from .sandbox import Sandbox


@dataclass(frozen=True)
class CrashPolicy:
    """Heroku's crash restarts: the first at once; repeated crashes within the boot window
    wait 10 min, then 20, 40… up to 24 h. `scale` shrinks the waits for tests and demos."""

    boot_window: float = 600.0
    first_cooloff: float = 600.0
    max_cooloff: float = 86400.0
    scale: float = 1.0

    def delay(self, consecutive_boot_crashes: int) -> float:
        if consecutive_boot_crashes <= 1:
            return 0.0
        wait = min(self.first_cooloff * 2 ** (consecutive_boot_crashes - 2), self.max_cooloff)
        return wait * self.scale

    def scaled(self, scale: float) -> CrashPolicy:
        return replace(self, scale=scale)


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g}h"
    if seconds >= 60:
        return f"{seconds / 60:g}m"
    return f"{seconds:.3g}s"


class DynoSlot:
    """One position of the formation (web.1): the dyno in it, restarted as Heroku restarts it."""

    def __init__(self, manager: DynoManager, process: ProcessType, index: int) -> None:
        self.manager = manager
        self.process = process
        self.name = f"{process.name}.{index}"
        self.dyno: Dyno | None = None
        self.boots = 0
        self._wake = asyncio.Event()

    def _spec(self) -> DynoSpec:
        m = self.manager
        port = m.public_port if self.name == "web.1" and m.public_port else free_port()
        return DynoSpec(self.name, self.process.name, self.process.command, port, m.formation.sizes[self.process.name])

    async def supervise(self) -> None:
        m = self.manager
        previous = "down"
        consecutive = 0
        while not m.stopping:
            self.dyno = dyno = m.new_dyno(self._spec())
            self.boots += 1
            await dyno.boot(previous)
            status = await dyno.wait()
            if dyno.stopping or m.stopping:
                dyno.set_state("down")
                return
            dyno.set_state("crashed")
            previous = "crashed"
            uptime = time.monotonic() - dyno.started_at
            consecutive = consecutive + 1 if uptime < m.policy.boot_window else 1
            delay = m.policy.delay(consecutive)
            if delay:
                m.logs.hint(self.name, f"crashed again (status {status}); Heroku's crash back-off restarts it in {_duration(delay)}")
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except asyncio.TimeoutError:
                    pass

    async def stop(self) -> None:
        self._wake.set()
        if self.dyno is not None:
            await self.dyno.stop()

    def kill(self) -> None:
        if self.dyno is not None:
            self.dyno.kill()


class DynoManager:
    def __init__(
        self,
        release: Release,
        procfile: Procfile,
        formation: Formation,
        sandbox: Sandbox,
        logs: LogStream,
        *,
        run_id: str,
        public_port: int | None,
        timeouts: Timeouts = Timeouts(),
        policy: CrashPolicy = CrashPolicy(),
    ) -> None:
        self.release = release
        self.procfile = procfile
        self.formation = formation
        self.sandbox = sandbox
        self.logs = logs
        self.run_id = run_id
        self.public_port = public_port
        self.timeouts = timeouts
        self.policy = policy
        self.stopping = False
        self.slots: list[DynoSlot] = []
        self._release_dyno: Dyno | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._serial = 0

    def new_dyno(self, spec: DynoSpec) -> Dyno:
        self._serial += 1
        return Dyno(spec, self.release, self.sandbox, self.logs, self.timeouts, f"{self.run_id}/{spec.name}/{self._serial}")

    async def release_phase(self, user: str) -> None:
        """Run the Procfile's `release` command in release.NNNN; no dyno starts if it fails."""
        process = self.procfile.release
        if process is None:
            return
        version = self.release.name
        self.logs.api(f"Running release {version} commands by user {user}")
        size = next(iter(self.formation.sizes.values()), SIZES[DEFAULT_SIZE])
        dyno = self.new_dyno(DynoSpec(f"release.{random.randint(1000, 9999)}", "release", process.command, free_port(), size))
        self._release_dyno = dyno
        await dyno.boot("down")
        status = await dyno.wait()
        if status == 0 and not dyno.stopping:
            dyno.set_state("complete")
            self.logs.api(f"Release {version} created by user {user}")
            return
        dyno.set_state("crashed" if not dyno.stopping else "down")
        self.logs.api(f"Release {version} command failed by user {user}")
        if dyno.stopping:
            raise ReleaseError("the release phase was interrupted; no dyno was started")
        raise ReleaseError(
            f"release phase failed: `{process.command}` ({self.procfile.path.name}:{process.line}) exited with "
            f"status {status}; no dyno was started. Fix it and run again"
        )

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for name, count in self.formation.quantities.items():
            for index in range(1, count + 1):
                slot = DynoSlot(self, self.procfile.processes[name], index)
                self.slots.append(slot)
                self._tasks.append(loop.create_task(slot.supervise()))

    async def wait(self) -> None:
        await asyncio.gather(*self._tasks)

    async def stop(self) -> None:
        self.stopping = True
        stops = [slot.stop() for slot in self.slots]
        if self._release_dyno is not None:
            stops.append(self._release_dyno.stop())
        await asyncio.gather(*stops)
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def kill(self) -> None:
        self.stopping = True
        if self._release_dyno is not None:
            self._release_dyno.kill()
        for slot in self.slots:
            slot.kill()
