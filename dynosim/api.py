"""The Python API that the CLI and the pytest plugin share."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import psutil

from .app import App, load_app
from .build import Slug, build_slug, default_cache_dir
from .errors import DynosimError, ReleaseError
from .formation import Formation, resolve_formation
from .logs import LogStream, TerminalPrinter
from .releases import Release, ReleaseHistory
from .runtime.dyno import Timeouts
from .runtime.manager import CrashPolicy, DynoManager
from .runtime.ports import claim_port
from .runtime.sandbox import Sandbox, choose_sandbox, reap_marked, wipe_dir

DEFAULT_PORT = 5000


@dataclass(frozen=True)
class RunOptions:
    formation: Mapping[str, int] = field(default_factory=dict)
    port: int = DEFAULT_PORT
    size: str | None = None
    dirty: bool = False
    sandbox: str = "auto"
    timeouts: Timeouts = Timeouts()
    crash_policy: CrashPolicy = CrashPolicy()
    cache_dir: Path | None = None


class RunLock:
    """`.dynosim/run.json`: one supervisor per app, and what a killed one left behind."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.path = app.state_dir / "run.json"
        self.run_id = uuid.uuid4().hex

    def acquire(self, say: Callable[[str], None]) -> None:
        previous = self._read()
        if previous is not None:
            if _alive(previous):
                raise DynosimError(
                    f"another dynosim run (pid {previous['pid']}) is running {self.app.path}; stop it first"
                )
            reaped = reap_marked(str(previous.get("run_id", "")) + "/") if previous.get("run_id") else []
            if reaped:
                say(f"dynosim: reaped {len(reaped)} process(es) left by a previous run that was killed "
                    f"(pids {', '.join(map(str, reaped))})")
        wipe_dir(self.app.runtime_dir, self.app.runtime_dir.parent)
        me = psutil.Process()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"pid": me.pid, "create_time": me.create_time(), "run_id": self.run_id}, handle)

    def release(self) -> None:
        if (self._read() or {}).get("run_id") == self.run_id:
            self.path.unlink(missing_ok=True)

    def _read(self) -> dict[str, object] | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None


def _alive(record: Mapping[str, object]) -> bool:
    try:
        process = psutil.Process(int(record["pid"]))  # type: ignore[call-overload]
        return abs(process.create_time() - float(record["create_time"])) < 1  # type: ignore[arg-type]
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


class Run:
    """One `dynosim run` of an app: build, release, release phase, formation, until stopped."""

    def __init__(self, app_dir: Path, options: RunOptions, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.out = out
        self.app = load_app(app_dir)
        self.formation: Formation = resolve_formation(self.app.procfile, self.app.manifest, options.formation, options.size)
        self.logs = LogStream()
        self.lock = RunLock(self.app)
        self.manager: DynoManager | None = None

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def prepare(self) -> tuple[Release, Sandbox]:
        for warning in self.app.procfile.warnings:
            self.say(f" !     {warning}")
        if "web" in self.formation.quantities and self.formation.quantities["web"]:
            claim_port(self.options.port)
        self.lock.acquire(self.say)
        slug: Slug = build_slug(
            self.app.path, cache_dir=self.options.cache_dir or default_cache_dir(), dirty=self.options.dirty, say=self.say
        )
        release, _ = ReleaseHistory(self.app.state_dir).create(slug, self.app.config_vars, self.app.user())
        sandbox = choose_sandbox(self.options.sandbox, self.app.runtime_dir, protect=[self.app.path])
        self.say(f"dyno sandbox: {sandbox.mode} ({sandbox.reason})")
        return release, sandbox

    async def serve(self, release: Release, sandbox: Sandbox, stop: asyncio.Event) -> None:
        """Release phase, then the formation until `stop` is set; then Heroku's shutdown."""
        user = self.app.user()
        self.manager = manager = DynoManager(
            release, self.app.procfile, self.formation, sandbox, self.logs,
            run_id=self.lock.run_id, public_port=self.options.port,
            timeouts=self.options.timeouts, policy=self.options.crash_policy,
        )
        self.logs.api(f"{release.slug.description} by user {user}")
        phase = asyncio.ensure_future(manager.release_phase(user))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait((phase, stopped), return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set() and not phase.done():
            await manager.stop()
        await phase  # raises ReleaseError when the release command failed or was interrupted
        self.logs.api(f"Scaled to {self.formation.describe()} by user {user}")
        manager.start()
        await stopped
        await manager.stop()

    def run(self) -> int:
        """The CLI's `dynosim run`: Ctrl-C or SIGTERM stops gracefully, a second Ctrl-C forces."""
        release, sandbox = self.prepare()
        try:
            return asyncio.run(self._main(release, sandbox))
        finally:
            self.lock.release()

    async def _main(self, release: Release, sandbox: Sandbox) -> int:
        loop = asyncio.get_running_loop()
        printer = TerminalPrinter(self.out)
        self.logs.subscribe(printer)
        printer.start()
        stop = asyncio.Event()
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                self.logs.hint("supervisor", "stopping all dynos (Ctrl-C again to force)")
                stop.set()
            else:
                self.logs.hint("supervisor", "forcing: SIGKILL to every dyno")
                if self.manager is not None:
                    self.manager.kill()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal)
        try:
            await self.serve(release, sandbox, stop)
        except ReleaseError:
            if stop.is_set():
                return 0
            raise
        finally:
            await printer.stop()
        return 0
