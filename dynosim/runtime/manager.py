"""The dyno manager: runs the release phase, then the formation, restarting crashed dynos
on Heroku's schedule, cycling each dyno daily, and stopping everything the way Heroku does."""

from __future__ import annotations

import asyncio
import random
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..errors import FormationError, ReleaseError
from ..formation import DEFAULT_SIZE, SIZES, DynoSize, Formation, dyno_size
from ..logs import LogStream
from ..procfile import ProcessType, Procfile
from ..releases import Release
from ..scheduler import Job, SchedulerClock, due
from .dyno import Dyno, DynoSpec, Timeouts
from .ports import free_port
from .sandbox import Sandbox

if TYPE_CHECKING:
    from ..ephemeral import Ledger


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


@dataclass(frozen=True)
class CycleSchedule:
    """Heroku cycles each dyno every 24 h plus a random 0–216 min, counted from its boot."""

    period: float = 86400.0
    spread: float = 216 / 1440  # the random extra, as a share of the period
    jitter: bool = True

    def next_delay(self) -> float:
        return self.period * (1 + (random.uniform(0, self.spread) if self.jitter else 0))


PREBOOT_DRAIN = 1.0  # seconds an old web dyno gets no new request before its SIGTERM, with preboot


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
        self.retired = False  # scaled away or the run is stopping
        self.prebooted: Dyno | None = None  # preboot's successor, up before the old dyno stops
        self._restart_reason: str | None = None
        self.last_exit: tuple[int, float] | None = None  # its last dyno's exit status, and when
        self._wake = asyncio.Event()
        self._cycling: asyncio.Task[None] | None = None  # held: the loop keeps only a weak reference
        self.booted = asyncio.Event()  # its first dyno's boot returned, or its task ended without one

    def _spec(self) -> DynoSpec:
        m = self.manager  # every boot a new private port, as on Heroku; the router owns the public one
        return DynoSpec(
            self.name, self.process.name, self.process.command, free_port(), m.formation.sizes[self.process.name]
        )

    def web_dynos(self) -> list[Dyno]:
        """This slot's web dynos that can take requests: up, and not being stopped."""
        return [d for d in (self.dyno, self.prebooted) if d is not None and d.state == "up" and not d.stopping]

    async def supervise(self) -> None:
        m = self.manager
        previous = "down"
        consecutive = 0
        while not (m.stopping or self.retired):
            if self.prebooted is not None:  # preboot already started (and brought up) the next dyno
                self.dyno, self.prebooted = self.prebooted, None
                dyno = self.dyno
            else:
                self.dyno = dyno = m.new_dyno(self._spec())
                await dyno.boot(previous)
                self.booted.set()
            loop = asyncio.get_running_loop()
            cycle = loop.call_later(m.cycle.next_delay(), self._cycle) if m.cycle else None
            status = await dyno.wait()
            self.last_exit = (status, time.time())
            if cycle is not None:
                cycle.cancel()
            if m.stopping or self.retired:
                dyno.set_state("down")
                return
            if self._restart_reason is not None:
                if self.prebooted is not None:
                    dyno.set_state("down")
                self._restart_reason = None
                previous, consecutive = "starting", 0
                continue
            dyno.set_state("crashed")
            previous = "crashed"
            uptime = time.monotonic() - dyno.started_at
            consecutive = consecutive + 1 if uptime < m.policy.boot_window else 1
            delay = m.policy.delay(consecutive)
            if delay:
                m.logs.hint(
                    self.name,
                    f"crashed again (status {status}); Heroku's crash back-off restarts it in {_duration(delay)}",
                )
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass

    def _cycle(self) -> None:
        self._cycling = asyncio.ensure_future(self.restart("Cycling", "the daily cycle"))

    async def restart(self, line: str = "Restarting", reason: str = "the restart") -> None:
        """Heroku's restart: the same shutdown as a stop, then a fresh boot. With preboot, a web
        dyno's successor boots first and the old one stops once the new one is up."""
        dyno = self.dyno
        if dyno is None or self._restart_reason is not None or dyno.state not in ("starting", "up"):
            self._wake.set()  # a crashed dyno waiting out its back-off restarts now
            return
        self._restart_reason = reason
        self.manager.logs.heroku(self.name, line)
        if self.manager.preboot and self.process.name == "web" and dyno.state == "up":
            successor = self.manager.new_dyno(self._spec())
            await successor.boot("down")
            if await successor.wait_up():
                self.prebooted = successor
                # out of the router's choice first; SIGTERM once requests already on their way got in
                dyno.stopping = True
                self.manager.web_stopping(dyno)
                await asyncio.sleep(PREBOOT_DRAIN)
            else:
                self.manager.logs.hint(self.name, "preboot: the new dyno did not come up; the old one keeps serving")
                await successor.stop("a failed preboot")
                self._restart_reason = None
                return
        else:
            dyno.set_state("starting")
        await dyno.stop(reason)

    async def stop(self) -> None:
        self._wake.set()
        if self.dyno is not None:
            await self.dyno.stop()

    def kill(self) -> None:
        if self.dyno is not None:
            self.dyno.kill()


class AttachedDyno:
    """A one-off dyno that the terminal which started it runs, attached there as `heroku run` is: the
    supervisor lists it and logs what it says of itself, and never restarts or stops it (Heroku's
    restarts and cycles of the formation leave one-off dynos alone)."""

    def __init__(self, name: str, command: str, size: DynoSize) -> None:
        self.name = name
        self.command = command
        self.size = size
        self.state = "starting"
        self.since = time.time()
        self.memory_mb: float | None = None


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
        timeouts: Timeouts = Timeouts(),
        policy: CrashPolicy = CrashPolicy(),
        cycle: CycleSchedule | None = CycleSchedule(),
        ledger: Ledger | None = None,
        preboot: bool = False,
    ) -> None:
        self.release = release
        self.procfile = procfile
        self.formation = formation
        self.sandbox = sandbox
        self.logs = logs
        self.run_id = run_id
        self.timeouts = timeouts
        self.policy = policy
        self.cycle = cycle
        self.ledger = ledger
        self.preboot = preboot
        self.on_web_stop: Callable[[int], None] = lambda port: None  # the router lets go of the port
        self.stopping = False
        self.slots: list[DynoSlot] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.attached: dict[str, AttachedDyno] = {}  # one-off dynos of other terminals, by name
        self._release_dyno: Dyno | None = None
        self.scheduled: dict[str, Dyno] = {}  # Scheduler jobs' and postdeploy's one-off dynos while they run
        self._job_runs: dict[str, tuple[asyncio.Task[int], Dyno]] = {}  # each job's latest run and its dyno
        self._serial = 0

    def new_dyno(self, spec: DynoSpec) -> Dyno:
        self._serial += 1
        marker = f"{self.run_id}/{spec.name}/{self._serial}"
        dyno = Dyno(spec, self.release, self.sandbox, self.logs, self.timeouts, marker, self.ledger)
        if spec.is_web:
            dyno.on_stop = self.web_stopping
        return dyno

    def web_stopping(self, dyno: Dyno) -> None:
        self.on_web_stop(dyno.spec.port)

    async def release_phase(self, user: str) -> None:
        """Run the Procfile's `release` command in release.NNNN; ReleaseError if it fails."""
        process = self.procfile.release
        if process is None:
            return
        version = self.release.name
        self.logs.api(f"Running release {version} commands by user {user}")
        size = next(iter(self.formation.sizes.values()), SIZES[DEFAULT_SIZE])
        spec = DynoSpec(f"release.{random.randint(1000, 9999)}", "release", process.command, free_port(), size)
        self._release_dyno = dyno = self.new_dyno(spec)
        await dyno.boot("down")
        status = await dyno.wait()
        if status == 0 and not dyno.stopping:
            dyno.set_state("complete")
            self.logs.api(f"Release {version} created by user {user}")
            return
        dyno.set_state("crashed" if not dyno.stopping else "down")
        self.logs.api(f"Release {version} command failed by user {user}")
        if dyno.stopping:
            raise ReleaseError("the release phase was interrupted")
        # what it means (no dyno started, or the previous release still serving) is the caller's to say
        raise ReleaseError(
            f"release phase failed: `{process.command}` ({self.procfile.path.name}:{process.line}) exited with "
            f"status {status}"
        )

    def _one_off_dyno(self, kind: str, command: str, size: DynoSize | None = None) -> Dyno:
        name = f"{kind}.{random.randint(1000, 9999)}"
        while name in self.scheduled:
            name = f"{kind}.{random.randint(1000, 9999)}"
        size = size or next(iter(self.formation.sizes.values()), SIZES[DEFAULT_SIZE])
        dyno = self.new_dyno(DynoSpec(name, kind, command, free_port(), size))
        self.scheduled[name] = dyno
        return dyno

    def _scheduler_dyno(self, job: Job) -> Dyno:
        return self._one_off_dyno("scheduler", job.command, SIZES.get(job.size) if job.size else None)

    async def postdeploy(self, command: str, size: DynoSize | None) -> tuple[str, int]:
        """app.json's `scripts.postdeploy` in a one-off `postdeploy.NNNN` dyno beside the formation, as
        Heroku runs it after an app's first release: its name and exit status, the formation untouched."""
        dyno = self._one_off_dyno("postdeploy", command, size)
        return dyno.name, await self._run_scheduled(dyno, None)

    async def _run_scheduled(self, dyno: Dyno, limit: float | None, after: Dyno | None = None) -> int:
        try:
            if after is not None:  # concurrency_policy replace: the running one goes first
                await after.stop("a replacing run")
            await dyno.boot("starting")  # a one-off's first line is its command, not a state change
            if self.stopping:  # the run stopped while this dyno booted: it was not there to be stopped
                await dyno.stop()
            try:
                status = await asyncio.wait_for(dyno.wait(), limit)
            except TimeoutError:
                await dyno.stop("the end of the job's interval")
                status = await dyno.wait()
            dyno.set_state("down" if self.stopping else "complete")
            return status
        finally:
            del self.scheduled[dyno.name]

    def fire(self, job: Job, limit: float | None) -> str | None:
        """Run a Scheduler job now, in the background, in a one-off `scheduler.NNNN` dyno (a fresh
        filesystem, the release's slug and config), stopped as Heroku stops one (SIGTERM, SIGKILL after
        30 s) once it outlives `limit` seconds (Heroku's jobs: until their next run). Its name, or None when
        its concurrency policy skips it: `forbid` while the last run still goes, and `replace` stops that
        run first (app.json's cron, as Kubernetes' CronJob); Heroku Scheduler's own jobs `allow` overlaps."""
        last = self._job_runs.get(job.id)
        still = last is not None and not last[0].done()
        if still and job.concurrency_policy == "forbid":
            self.logs.hint("scheduler", f"job {job.id} is still running: this run is skipped (concurrency_policy)")
            return None
        dyno = self._scheduler_dyno(job)
        after = last[1] if last is not None and still and job.concurrency_policy == "replace" else None
        self._job_runs[job.id] = (asyncio.ensure_future(self._run_scheduled(dyno, limit, after)), dyno)
        return dyno.name

    async def run_scheduler(self, jobs: Callable[[], list[Job]], clock: SchedulerClock) -> None:
        """Fire each job when its time comes on `clock`, until the manager stops. Runs due while dynosim
        was not running are not replayed: the first look is from now on (Heroku's best effort)."""
        since = clock.now()
        while not self.stopping:
            await asyncio.sleep(clock.poll)
            now = clock.now()
            for job, when in due(jobs(), since, now):
                self.fire(job, clock.real_seconds(job.time_limit(when)))
            since = now

    def start(self) -> None:
        for name, count in self.formation.quantities.items():
            for index in range(1, count + 1):
                self._add_slot(DynoSlot(self, self.procfile.processes[name], index))

    def _add_slot(self, slot: DynoSlot) -> None:
        self.slots.append(slot)
        task = asyncio.get_running_loop().create_task(slot.supervise())
        task.add_done_callback(lambda done: self._supervisor_failed(slot, done))
        task.add_done_callback(lambda _: slot.booted.set())
        self._tasks.append(task)

    def _supervisor_failed(self, slot: DynoSlot, task: asyncio.Task[None]) -> None:
        """A bug of dynosim's in a dyno's supervision: say so loudly instead of losing the dyno silently."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        self.logs.hint(slot.name, f"dynosim failed to supervise this dyno (a bug, please report it): {error!r}")
        traceback.print_exception(error, file=sys.stderr)

    async def restart(self, target: str | None = None) -> list[str]:
        """`heroku restart [TYPE|DYNO]`: every matching dyno, each with a fresh filesystem."""
        chosen = [s for s in self.slots if target in (None, s.name, s.process.name)]
        await asyncio.gather(*(slot.restart() for slot in chosen))
        return [slot.name for slot in chosen]

    async def cycle_now(self, target: str | None = None) -> list[str]:
        """What the daily cycle does to every matching dyno, now."""
        chosen = [s for s in self.slots if target in (None, s.name, s.process.name)]
        await asyncio.gather(*(slot.restart("Cycling", "the daily cycle") for slot in chosen))
        return [slot.name for slot in chosen]

    async def stop(self) -> None:
        self.stopping = True
        stops = [slot.stop() for slot in self.slots]
        stops += [dyno.stop() for dyno in self.scheduled.values()]
        if self._release_dyno is not None:
            stops.append(self._release_dyno.stop())
        await asyncio.gather(*stops)
        await asyncio.gather(*self._tasks, *(task for task, _ in self._job_runs.values()), return_exceptions=True)

    def kill(self) -> None:
        self.stopping = True
        if self._release_dyno is not None:
            self._release_dyno.kill()
        for dyno in self.scheduled.values():
            dyno.kill()
        for slot in self.slots:
            slot.kill()

    async def wait_booted(self) -> None:
        """Until every formation dyno's command runs and its writes are watched (not until it is up)."""
        await asyncio.gather(*(slot.booted.wait() for slot in self.slots))

    async def wait_up(self, timeout: float) -> list[str]:
        """Wait until every formation dyno is up; the names of those that are not, at the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            late = [s.name for s in self.slots if s.dyno is None or s.dyno.state != "up"]
            if not late or loop.time() >= deadline:
                return late
            await asyncio.sleep(0.02)

    def attach(self, name: str, command: str, size: DynoSize) -> AttachedDyno:
        """A one-off dyno another terminal runs (`dynosim exec`): listed by `ps` until it is detached."""
        if name in self.attached or any(slot.name == name for slot in self.slots):
            raise FormationError(f"a dyno named {name} is already running")
        self.attached[name] = dyno = AttachedDyno(name, command, size)
        return dyno

    def detach(self, name: str) -> None:
        self.attached.pop(name, None)

    # what the router asks
    def web_dynos(self) -> list[tuple[str, int]]:
        """(name, port) of every web dyno that can take a request now."""
        return [(d.name, d.spec.port) for s in self.slots if s.process.name == "web" for d in s.web_dynos()]

    def web_state(self) -> str:
        web = [s for s in self.slots if s.process.name == "web"]
        if not web:
            # before the formation starts (the release phase), web dynos are on their way
            started = bool(self._tasks) or self.stopping
            return "starting" if self.formation.quantities.get("web") and not started else "none"
        if any(s.web_dynos() for s in web):
            return "up"
        if all(s.dyno is not None and s.dyno.state == "crashed" for s in web):
            return "crashed"
        return "starting"

    async def wait_for_web(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.web_dynos():
            if loop.time() >= deadline or self.web_state() in ("none", "crashed"):
                return False
            await asyncio.sleep(0.01)
        return True

    def ps(self) -> list[dict[str, object]]:
        """What `heroku ps` shows, dyno by dyno: the formation's, then the release phase's, one-offs and
        Scheduler jobs' while they run."""
        sandbox = self.sandbox.mode
        rows: list[dict[str, object]] = []
        for slot in self.slots:
            dyno = slot.dyno
            rows.append(
                {
                    "type": slot.process.name,
                    "name": slot.name,
                    "state": dyno.state if dyno else "down",
                    "since": dyno.since if dyno else None,
                    "command": slot.process.command,
                    "size": self.formation.sizes[slot.process.name].name,
                    "memory_mb": dyno.memory_mb if dyno else None,
                    "sandbox": sandbox,
                    "last_exit": {"status": slot.last_exit[0], "at": slot.last_exit[1]} if slot.last_exit else None,
                }
            )
        release = self._release_dyno
        if release is not None and release.state in ("starting", "up"):
            rows.append(self._running_row(release.spec.name, release))
        for one_off in self.attached.values():
            rows.append(
                {
                    "type": "run",
                    "name": one_off.name,
                    "state": one_off.state,
                    "since": one_off.since,
                    "command": one_off.command,
                    "size": one_off.size.name,
                    "memory_mb": one_off.memory_mb,
                    "sandbox": sandbox,
                    "last_exit": None,
                }
            )
        for name, dyno in self.scheduled.items():
            rows.append(self._running_row(name, dyno))
        return rows

    def _running_row(self, name: str, dyno: Dyno) -> dict[str, object]:
        return {
            "type": dyno.spec.process_type,
            "name": name,
            "state": dyno.state,
            "since": dyno.since,
            "command": dyno.spec.command,
            "size": dyno.spec.size.name,
            "memory_mb": dyno.memory_mb,
            "sandbox": self.sandbox.mode,
            "last_exit": None,
        }

    async def scale(self, counts: dict[str, int]) -> Formation:
        """`heroku ps:scale web=2 worker=0`: start the dynos that are missing, stop the extra ones."""
        for kind, count in counts.items():
            if kind not in self.procfile.formation_types:
                known = ", ".join(self.procfile.formation_types) or "none"
                raise FormationError(f'ps:scale: no process type "{kind}" in the Procfile (types: {known})')
            if count < 0:
                raise FormationError(f"ps:scale: {kind}={count}: a dyno count cannot be negative")
        retiring: list[DynoSlot] = []
        for kind, count in counts.items():
            current = [s for s in self.slots if s.process.name == kind]
            for index in range(len(current) + 1, count + 1):
                self._add_slot(DynoSlot(self, self.procfile.processes[kind], index))
            retiring.extend(current[count:])
        for slot in retiring:
            slot.retired = True
            self.slots.remove(slot)
        await asyncio.gather(*(slot.stop() for slot in retiring))
        quantities = {**self.formation.quantities, **counts}
        self.formation = Formation({k: quantities[k] for k in self.formation.quantities}, self.formation.sizes)
        return self.formation

    async def resize(self, sizes: dict[str, str]) -> Formation:
        """`heroku ps:resize web=standard-2x`: new memory quota and WEB_CONCURRENCY, so a restart."""
        for kind in sizes:
            if kind not in self.procfile.formation_types:
                known = ", ".join(self.procfile.formation_types) or "none"
                raise FormationError(f'ps:resize: no process type "{kind}" in the Procfile (types: {known})')
        resized = {kind: dyno_size(size, f"ps:resize {kind}") for kind, size in sizes.items()}
        self.formation = Formation(self.formation.quantities, {**self.formation.sizes, **resized})
        await asyncio.gather(*(self.restart(kind) for kind in resized))
        return self.formation

    async def deploy(self, release: Release) -> None:
        """A new release restarts every dyno onto it (with its Procfile's commands), as on Heroku."""
        self.release = release
        for slot in self.slots:
            slot.process = self.procfile.processes.get(slot.process.name, slot.process)
        await self.restart()
