"""Recovery of an add-on server that exits while the run still wants it (a SIGKILL, the OOM killer, a
crash): what Heroku's managed data services do for a server they run, done for the servers dynosim runs.

Its exit is noticed at once (a pidfd on the supervisor's loop for a server that is our child, the engine's
wait for a container), said on the log stream as the add-on's own lines (`app[heroku-postgres]`,
`app[heroku-redis]`), and the server is started again on the same port with the same data, which
Postgres recovers from its WAL and Redis reloads from its append-only file, so every committed write is
there and the app's config vars stay right. Restarts follow the dyno manager's crash back-off
(runtime/manager.py's CrashPolicy): the first at once; one that crashes again within the boot window waits
10 min, then 20, 40… (`--crash-backoff-scale` shrinks them), so a server that cannot start is no busy loop.

A server a fault stopped (addon-outage, addon-restart…), a reset's or snapshot load's stop, and the run's
end are not crashes: `Addons.exited` tells them apart, as each takes the server out of the running before
it stops it. Each add-on's state (`ServerState`) is what `dynosim addons` and `ps` show.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from dynosim.addons.processes import last_line
from dynosim.errors import AddonError

if TYPE_CHECKING:
    from dynosim.addons import Addons
    from dynosim.addons.catalogue import Resolved
    from dynosim.addons.spec import Running
    from dynosim.logs import LogStream
    from dynosim.runtime.manager import CrashPolicy

EXIT_POLL = 0.1  # seconds between looks at a server's exit where no pidfd tells of it (not Linux)
# how each service gets its data back after a crash, as its line says
RECOVERS = {
    "postgres": "which PostgreSQL recovers from its WAL",
    "redis": "which Redis reloads from its append-only file",
}
# the log stream's name for the add-on's own lines, as Heroku's are (app[heroku-postgres] sample lines);
# another add-on's are under its own name (app[bonsai], app[mailgun])
SOURCES = {"postgres": "heroku-postgres", "redis": "heroku-redis"}


@dataclass(frozen=True)
class ServerState:
    """One add-on's server in this run, as `dynosim addons` and `ps` show it."""

    name: str  # "postgresql-curly-12345"
    addon: str  # "heroku-postgresql"
    plan: str  # "essential-0", "" for the default plan
    state: str  # "up" | "crashed" (waiting out its back-off) | "starting" | "stopped" (a fault has it)
    since: float  # when it took this state, epoch seconds
    pid: int | None  # the server's process (native) while up; None in a container or when down
    crashes: int = 0  # unplanned exits this run
    restarts: int = 0  # recovery's starts that came up
    last_exit: str | None = None  # "killed by SIGKILL", "exited with status 1: FATAL: …"
    next_start: float | None = None  # while crashed: when recovery starts it again, epoch seconds

    def describe(self) -> str:
        """The state column: "up", "up (restarted after 2 crashes)", "restarting (crashed 3 times), next try
        in 20m", "stopped (a fault)"; the last exit is in the JSON."""
        crashes = "1 crash" if self.crashes == 1 else f"{self.crashes} crashes"
        if self.state == "up":
            return f"up (restarted after {crashes})" if self.restarts else "up"
        if self.state in ("crashed", "starting"):
            times = "once" if self.crashes == 1 else f"{self.crashes} times"
            wait = "" if self.next_start is None else f", next try in {duration(self.next_start - time.time())}"
            return f"restarting (crashed {times}){wait}"
        return "stopped (a fault)"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "addon": self.addon,
            "plan": self.plan,
            "state": self.state,
            "since": self.since,
            "pid": self.pid,
            "crashes": self.crashes,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "next_start": self.next_start,
            "describe": self.describe(),
        }


class Recovery:
    """Watches every add-on server a run's `Addons` runs and starts again those that crash, on the
    supervisor's loop (`start`, `stop`)."""

    def __init__(self, addons: Addons, logs: LogStream, policy: CrashPolicy) -> None:
        self.addons = addons
        self.logs = logs
        self.policy = policy
        self._states: dict[str, ServerState] = {}
        self._started_at: dict[str, float] = {}  # name → when its server last started (monotonic): uptime
        self._consecutive: dict[str, int] = {}  # name → crashes within the boot window, as a dyno's
        self._watching: dict[str, Any] = {}  # name → the server now watched
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.addons.on_server_start = self._started_elsewhere
        for name, entry, running in self.addons.servers():
            self._watch(name, entry, running)

    async def stop(self) -> None:
        """Before the run stops its add-ons: no restart from here on (one already starting finishes in its
        thread, and the run's stop stops it with the others)."""
        self.addons.on_server_start = None
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)

    def states(self) -> list[ServerState]:
        """Every add-on server of the run, in the order they started; a fault's stopped one as "stopped"."""
        running = {name for name, _, _ in self.addons.servers()}
        return [
            replace(state, state="stopped", pid=None)
            if state.state == "up" and name not in running and self.addons.away(name) is not None
            else state
            for name, state in self._states.items()
        ]

    def _started_elsewhere(self, name: str) -> None:
        """A server started by a fault or a reset (from their thread): watched from the loop."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._watch_current, name)
        except RuntimeError:  # the loop closed: the run is over
            pass

    def _watch_current(self, name: str) -> None:
        for each, entry, running in self.addons.servers():
            if each == name:
                self._watch(name, entry, running)

    def _watch(self, name: str, entry: Resolved, running: Running) -> None:
        if self._watching.get(name) is running:
            return
        self._watching[name] = running
        self._started_at[name] = time.monotonic()
        addon, _, plan = entry.request.plan.partition(":")
        before = self._states.get(name)
        self._states[name] = ServerState(
            name, addon, plan, "up", time.time(), _pid(running),
            crashes=before.crashes if before else 0,
            restarts=before.restarts if before else 0,
            last_exit=before.last_exit if before else None,
        )  # fmt: skip
        self._spawn(self._supervise(name, entry, running))

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _supervise(self, name: str, entry: Resolved, running: Running) -> None:
        how = await exit_of(running)
        if not self.addons.exited(name, running):
            return  # planned: a fault's stop, a reset's, the run's end
        label = f"{entry.request.plan} ({name})"
        port = running.endpoint.port
        uptime = time.monotonic() - self._started_at[name]
        recovers = RECOVERS.get(entry.offering.service, "with the data it had")
        while True:
            consecutive = self._consecutive.get(name, 0) + 1 if uptime < self.policy.boot_window else 1
            self._consecutive[name] = consecutive
            delay = self.policy.delay(consecutive)
            state = self._states[name]
            self._states[name] = replace(
                state, state="crashed", since=time.time(), pid=None, crashes=state.crashes + 1, last_exit=how,
                next_start=time.time() + delay,
            )  # fmt: skip
            if delay:
                self._say(
                    entry,
                    f"{label}: the server crashed again ({how}); Heroku's crash back-off starts it again in "
                    f"{duration(delay)}, on port {port} with the same data",
                )
                await asyncio.sleep(delay)
            else:
                self._say(
                    entry,
                    f"{label}: the server exited unexpectedly ({how}); its clients' connections are lost. Starting "
                    f"it again on port {port} with the same data, {recovers}",
                )
            self._states[name] = replace(self._states[name], state="starting", since=time.time(), next_start=None)
            begun = time.monotonic()
            try:
                await asyncio.to_thread(self.addons.revive, name)
            except Exception as error:  # an engine's error too: said, and tried again after the back-off
                said = str(error).removeprefix(label + ": ") if isinstance(error, AddonError) else repr(error)
                how, uptime = f"it did not start: {said}", 0.0
                continue
            state = self._states[name]
            restarts = state.restarts + 1
            self._states[name] = replace(state, restarts=restarts)  # _watch, called back, keeps the counts
            times = "once" if restarts == 1 else f"{restarts} times"
            self._say(
                entry,
                f"{label}: the server is up again on port {port} in {(time.monotonic() - begun) * 1000:.0f} ms, "
                f"same data and credentials (restarted {times} this run)",
            )
            return

    def _say(self, entry: Resolved, line: str) -> None:
        self.logs.app_output(SOURCES.get(entry.offering.service, entry.offering.addon), [line])


async def exit_of(running: Running) -> str:
    """Returns once the server's process has ended, with how it did."""
    child = getattr(running, "child", None)
    if child is not None:
        return await _child_exit(child)
    return await _container_exit(running.container)  # type: ignore[attr-defined]  # the docker backend's


async def _child_exit(child: Any) -> str:
    proc = child.proc
    try:
        fd: int | None = os.pidfd_open(proc.pid)  # readable once the process has exited
    except (AttributeError, OSError):  # not Linux 5.3+; or gone already, which poll() below says
        fd = None
    if fd is not None:
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not ended.done():
                ended.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await ended
        finally:
            loop.remove_reader(fd)
            os.close(fd)
    # poll() reaps it; None while a thread stopping it holds its wait (that stop makes the exit planned)
    while (code := proc.poll()) is None:
        await asyncio.sleep(EXIT_POLL)
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with status {code}: {last_line(child.log)}"


async def _container_exit(container: Any) -> str:
    """The engine's wait for a container's exit, in a thread of its own (it blocks until then, past the
    run's loop: a daemon thread, never the loop's executor, whose shutdown would wait for it)."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[int] = loop.create_future()

    def settle(code: int) -> None:
        if not ended.done():
            ended.set_result(code)

    def wait() -> None:
        try:
            code = int(container.wait().get("StatusCode", -1))
        except Exception:  # the engine went, or the run closed its client at the end
            return
        try:
            loop.call_soon_threadsafe(settle, code)
        except RuntimeError:  # the loop closed: the run is over
            pass

    threading.Thread(target=wait, name=f"dynosim-wait-{container.name}", daemon=True).start()
    code = await ended
    if code == 128 + signal.SIGKILL:
        return "its container was killed by SIGKILL"
    return f"its container exited with status {code}"


def _pid(running: Running) -> int | None:
    child = getattr(running, "child", None)
    return int(child.proc.pid) if child is not None else None


def duration(seconds: float) -> str:
    """A wait or an uptime as the dyno manager's lines say one: 600 → "10m", 1.2 → "1.2s"."""
    seconds = max(0.0, seconds)
    if seconds >= 3600:
        return f"{seconds / 3600:.3g}h"
    if seconds >= 60:
        return f"{seconds / 60:.3g}m"
    return f"{seconds:.2g}s" if seconds < 10 else f"{seconds:.0f}s"
