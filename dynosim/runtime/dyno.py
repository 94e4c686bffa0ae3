"""One dyno's life: a fresh filesystem, its command under bash, boot, output, stop, exit.

A Dyno object is one boot; the dyno manager makes a new one for every restart, which is
why every boot gets a fresh filesystem, as on Heroku.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..formation import DynoSize
from ..logs import LineSplitter, LogStream

if TYPE_CHECKING:
    from ..ephemeral import Ledger
from ..releases import Release
from ..webservers import bind_fix
from . import memory
from .memory import MemoryPolicy
from .ports import ANY, LOOPBACK, listeners
from .sandbox import DynoFilesystem, DynoProcess, Sandbox

# What a dyno keeps from the environment dynosim was started in: terminal and locale-free
# plumbing only. Everything else comes from config vars, as on Heroku (which sets no USER or
# LOGNAME: the dyno's user is not dynosim's).
HOST_PASSTHROUGH = (
    "TERM",
    "TZ",
    "SHELL",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
)

# Sourced by the dyno's bash before the command, as Heroku's dyno start-up does.
PROFILE = (
    'for f in "$HOME"/.profile.d/*.sh; do [ -r "$f" ] && . "$f"; done; unset f\n'
    '[ -r "$HOME/.profile" ] && . "$HOME/.profile"\n'
)


@dataclass(frozen=True)
class Timeouts:
    boot: float = 60.0  # R10: a web dyno must bind $PORT within this
    stop: float = 30.0  # R12: SIGKILL this long after SIGTERM
    bind_poll: float = 0.05
    memory: MemoryPolicy = MemoryPolicy()


@dataclass(frozen=True)
class DynoSpec:
    name: str  # web.1, worker.2, release.4711, run.1234
    process_type: str
    command: str
    port: int
    size: DynoSize

    @property
    def is_web(self) -> bool:
        return self.process_type == "web"


def dyno_env(spec: DynoSpec, fs: DynoFilesystem, release: Release, host: Mapping[str, str]) -> dict[str, str]:
    env = {key: host[key] for key in HOST_PASSTHROUGH if key in host}
    env.update(release.config_vars)
    if release.dyno_metadata:  # runtime-dyno-metadata: each dyno its own id
        env.update(release.dyno_metadata, HEROKU_DYNO_ID=str(uuid.uuid4()))
    # set by the platform
    env.update(DYNO=spec.name, PORT=str(spec.port), HOME=str(fs.home))
    if fs.tmpdir is not None:
        env["TMPDIR"] = str(fs.tmpdir)
    # the Python buildpack's .profile.d/python.sh: forced, then defaults
    path = host.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["PATH"] = f"{fs.venv}/bin:{path}" if fs.venv else path
    env["PYTHONUNBUFFERED"] = "true"
    env.setdefault("LANG", "en_US.UTF-8")
    env.setdefault("PYTHONPATH", str(fs.home))
    if "WEB_CONCURRENCY" not in env:
        env.update(WEB_CONCURRENCY=str(spec.size.web_concurrency), WEB_CONCURRENCY_SET_BY="heroku/python")
    env.setdefault("DYNO_RAM", str(spec.size.memory_mb))
    env.setdefault("FORWARDED_ALLOW_IPS", "*")
    env.setdefault("GUNICORN_CMD_ARGS", "--access-logfile -")
    return env


class Dyno:
    def __init__(
        self,
        spec: DynoSpec,
        release: Release,
        sandbox: Sandbox,
        logs: LogStream,
        timeouts: Timeouts,
        marker: str,
        ledger: Ledger | None = None,
        *,
        attach: bool = False,
    ) -> None:
        self.spec = spec
        self.release = release
        self.sandbox = sandbox
        self.logs = logs
        self.timeouts = timeouts
        self.marker = marker
        self.ledger = ledger
        self.attach = attach  # a one-off dyno on this terminal: its output is not in the log stream
        self.end_reason = "the crash"  # what the ephemeral report blames for the loss
        self.state = "down"
        self.since = time.time()
        self.started_at = 0.0
        self.process: DynoProcess | None = None
        self.fs: DynoFilesystem | None = None
        self.stopping = False
        self.memory_mb: float | None = None  # the last memory sample of its processes
        self.quota = memory.Quota(spec.size.memory_mb * timeouts.memory.quota_scale)  # R14 past it
        self.on_stop: Callable[[Dyno], None] = lambda dyno: None  # told when its shutdown begins
        self._exit: asyncio.Future[int] | None = None
        self._up = asyncio.Event()

    @property
    def name(self) -> str:
        return self.spec.name

    def set_state(self, state: str) -> None:
        if state != self.state:
            self.logs.heroku(self.name, f"State changed from {self.state} to {state}")
            self.state = state
            self.since = time.time()

    async def boot(self, previous: str = "down") -> None:
        """Start the command in a fresh filesystem; returns once it runs (not once it is up)."""
        self.state = previous
        self.set_state("starting")
        self.fs = self.sandbox.fresh(self.name, self.release.slug)
        # layers that hold only the dyno's writes are scanned at the end, so they can be watched once
        # the command runs; a copy of the slug cannot, so it is watched before the first write
        watch_first = self.ledger is not None and not all(layer.exact for layer in self.fs.layers)
        if watch_first:
            self.ledger.watch(self.marker, self.name, self.fs)  # type: ignore[union-attr]
        env = dyno_env(self.spec, self.fs, self.release, os.environ)
        self.logs.heroku(self.name, f"Starting process with command `{self.spec.command}`")
        self.started_at = time.monotonic()
        self.process = await self.sandbox.spawn(
            self.fs, PROFILE + self.spec.command, env, self.marker, attach=self.attach
        )
        if self.ledger is not None and not watch_first:
            self.ledger.watch(self.marker, self.name, self.fs)
        self._exit = asyncio.get_running_loop().create_task(self._run())

    async def wait(self) -> int:
        """The exit status of the dyno's command (128+N when a signal N ended it)."""
        assert self._exit is not None
        return await asyncio.shield(self._exit)

    async def wait_up(self) -> bool:
        """True once the dyno is up, False if it ended first."""
        assert self._exit is not None
        up = asyncio.ensure_future(self._up.wait())
        await asyncio.wait((up, self._exit), return_when=asyncio.FIRST_COMPLETED)
        up.cancel()
        return self._up.is_set()

    async def _run(self) -> int:
        assert self.process is not None
        reader = asyncio.ensure_future(self._read())
        watcher = asyncio.ensure_future(self._watch_boot())
        sampler = asyncio.ensure_future(memory.watch(self, self.spec.size, self.timeouts.memory))
        status = await self.process.wait()
        watcher.cancel()
        sampler.cancel()
        try:
            await asyncio.wait_for(reader, 5)
        except TimeoutError:
            pass
        self.logs.heroku(self.name, f"Process exited with status {status}")
        await self._wipe()
        return status

    async def _wipe(self) -> None:
        # on a thread: a dyno's folder holds whatever it wrote (a 10,000-deep tree took 5-8 s to list and
        # wipe), and the loop it would block is the router's and every other dyno's
        if self.ledger is not None:
            self.ledger.report(self.name, await asyncio.to_thread(self.ledger.unwatch, self.marker), self.end_reason)
        if self.fs is not None:
            try:
                await asyncio.to_thread(self.sandbox.wipe, self.fs)
            except (OSError, RuntimeError) as error:  # one line, and the dyno's restart goes on
                self.logs.hint(self.name, f"its folder {self.fs.scratch} is not wiped: {error}; remove it by hand")

    async def _read(self) -> None:
        assert self.process is not None
        stdout = self.process.proc.stdout
        if stdout is None:
            return
        splitter = LineSplitter()
        while chunk := await stdout.read(1 << 16):
            lines = splitter.feed(chunk)
            if lines:
                self.logs.app_output(self.name, lines)
                await self.logs.room()
        rest = splitter.close()
        if rest:
            self.logs.app_output(self.name, rest)

    async def _watch_boot(self) -> None:
        if not self.spec.is_web:
            self.set_state("up")
            self._up.set()
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.timeouts.boot
        warned = False
        while loop.time() < deadline:
            found = listeners(self.spec.port)
            if ANY in found:
                self.set_state("up")
                self._up.set()
                return
            if LOOPBACK in found and not warned:
                warned = True
                self.logs.hint(
                    self.name,
                    f"web process listens on 127.0.0.1:{self.spec.port} only; Heroku's router cannot reach that. "
                    f"Bind 0.0.0.0:$PORT: {bind_fix(self.spec.command)}",
                )
            # a web process usually binds within a second or two: look often then (a failed bind
            # says "not yet" in microseconds), rarely after
            early = loop.time() - started < 3
            await asyncio.sleep(self.timeouts.bind_poll / 10 if early else self.timeouts.bind_poll)
        seconds = f"{self.timeouts.boot:g}"
        self.logs.heroku(
            self.name,
            f"Error R10 (Boot timeout) -> Web process failed to bind to $PORT within {seconds} seconds of launch",
        )
        self.logs.heroku(self.name, "Stopping process with SIGKILL")
        assert self.process is not None
        self.process.kill()

    async def stop(self, reason: str = "the stop") -> None:
        """Heroku's shutdown: SIGTERM to every process, SIGKILL after the grace period."""
        if self._exit is None or self._exit.done() or self.process is None:
            return
        self.stopping = True
        self.end_reason = reason
        self.on_stop(self)
        self.logs.heroku(self.name, "Stopping all processes with SIGTERM")
        await self.process.terminate()
        try:
            await asyncio.wait_for(asyncio.shield(self._exit), self.timeouts.stop)
        except TimeoutError:
            self.logs.heroku(
                self.name,
                f"Error R12 (Exit timeout) -> At least one process failed to exit within "
                f"{self.timeouts.stop:g} seconds of SIGTERM",
            )
            self.logs.heroku(self.name, "Stopping remaining processes with SIGKILL")
            self.process.kill()
            await asyncio.shield(self._exit)

    def kill(self) -> None:
        if self.process is not None and self._exit is not None and not self._exit.done():
            self.process.kill()
