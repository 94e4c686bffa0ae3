"""One-off dynos: `dynosim exec CMD…` is `heroku run`.

A `run.NNNN` dyno from the current release's slug with its config (the running release's when a
`dynosim run` is active), attached to this terminal, never restarted, its filesystem discarded
when it exits, with a report of what it wrote that is now gone (the classic `heroku run` surprise).
A one-off makes no release: its `-e` values are its own.

This process runs the dyno, so its stdin and stdout are the terminal's own (a shell gets a real
tty, job control and Ctrl-C) and its exit status is the command's. When a `dynosim run` is active,
the dyno is fed to that supervisor over the control socket, as Heroku's dyno manager knows of every
`heroku run`: `dynosim ps` lists it and `dynosim logs` has its lines while it runs. The public API's
`App.exec` is this same path, with the output collected instead of attached, and so is
`exec --detach` (Heroku's `run:detached`): a process of its own, whose output is only on the run's
log stream.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .addons import Addons, app_requests
from .app import AppDir, load_app
from .buildpack import build_slug, default_cache_dir
from .control import FeedConnection, NoRunError, open_feed
from .ephemeral import DEFAULT_IGNORE, Ledger
from .errors import DynosimError
from .formation import DEFAULT_SIZE, dyno_size
from .logs import LogLine, LogStream
from .procfile import Procfile, load_procfile
from .releases import Release, ReleaseHistory
from .runlock import RunLock
from .runtime.dyno import Dyno, DynoSpec, Timeouts
from .runtime.ports import free_port
from .runtime.sandbox import Sandbox, choose_sandbox, remove_if_empty


@dataclass(frozen=True)
class OneOffOptions:
    size: str = DEFAULT_SIZE
    sandbox: str = "auto"
    addons_backend: str = "auto"
    dirty: bool = False  # only for an app with no release yet: what it builds
    cache_dir: Path | None = None
    ephemeral_ignore: tuple[str, ...] = DEFAULT_IGNORE
    env: Mapping[str, str] = field(default_factory=dict)  # `heroku run -e`
    timeouts: Timeouts = Timeouts()  # its memory policy: the running App's, for the API
    attach: bool = True  # stdin and stdout are this terminal's; False: the output is collected
    name: str | None = None  # run.NNNN, when `exec --detach` chose it to print it
    process_type: str = "run"  # heroku run's; "scheduler" for `scheduler:run` with no run active


@dataclass(frozen=True)
class OneOffResult:
    status: int
    output: tuple[str, ...] = ()  # the dyno's output lines, when it was not attached


def command_for(procfile: Procfile, argv: Sequence[str]) -> str:
    """A Procfile type as the first word runs its command, with the rest appended (as `heroku run`)."""
    first, rest = argv[0], list(argv[1:])
    process = procfile.processes.get(first)
    if process is not None:
        return " ".join([process.command, *(shlex.quote(arg) for arg in rest)])
    if len(argv) == 1:
        return first  # one word may be a whole shell command line: `dynosim exec "echo $PORT"`
    return " ".join(shlex.quote(arg) for arg in argv)


def run_oneoff(
    app_dir: Path, argv: Sequence[str], options: OneOffOptions = OneOffOptions(), err: TextIO = sys.stderr
) -> OneOffResult:
    app = load_app(app_dir)

    def say(line: str) -> None:
        err.write(line + "\n")
        err.flush()

    history = ReleaseHistory(app.state_dir)
    active = RunLock(app).active()
    addons: Addons | None = None
    run_vars = active.get("config_vars") if active is not None else None
    if active is not None and isinstance(run_vars, dict):
        version: int | None = int(str(active["release"]))
        config_vars = {str(name): str(value) for name, value in run_vars.items()}
    else:
        version = history.current_version()
        requests = app_requests(app.manifest.addons, app.state_dir)
        addons = Addons(app.state_dir, requests, backend=options.addons_backend, say=say)
        config_vars = dict(app.config_vars)
        for attachment in addons.start():
            config_vars.update(attachment.config_vars)
    try:
        release = _release(app, history, version, config_vars, options, say)
        command = command_for(load_procfile(release.slug.path), argv)  # the release's own Procfile
        runtime_dir = app.runtime_dir.with_name(app.runtime_dir.name + ".oneoff")
        sandbox = choose_sandbox(options.sandbox, runtime_dir, protect=[app.path])
        if "unlike Heroku" in sandbox.reason:  # heroku run says nothing of its dyno; dynosim says where it differs
            say(f"dyno sandbox: {sandbox.mode} ({sandbox.reason})")
        size = dyno_size(options.size, "--size")
        spec = DynoSpec(
            options.name or _dyno_name(options.process_type), options.process_type, command, free_port(), size
        )
        say(f"Running `{command}` on ⬢ {app.name}... up, {spec.name} ({size.name})")
        try:
            return asyncio.run(_attach(spec, release, sandbox, options, err, app.state_dir if active else None))
        finally:
            remove_if_empty(runtime_dir)  # left while another one-off runs
    finally:
        if addons is not None:
            addons.stop()


def _dyno_name(process_type: str = "run") -> str:
    return f"{process_type}.{random.randint(1000, 9999)}"


@dataclass(frozen=True)
class Detached:
    command: str
    name: str
    size: str


def start_detached(app_dir: Path, argv: Sequence[str], options: OneOffOptions = OneOffOptions()) -> Detached:
    """`heroku run:detached`: the one-off in a process of its own, its output on the running app's log
    stream only; what it runs, as Heroku's CLI prints it."""
    app = load_app(app_dir)
    active = RunLock(app).active()
    if active is None:
        raise DynosimError(
            f"exec --detach: no dynosim run is active in {app.path}; a detached dyno's output goes to the "
            f"run's log stream, so start `dynosim run` first (or drop --detach)"
        )
    slug = ReleaseHistory(app.state_dir).slug(int(str(active["release"])))
    command = command_for(load_procfile(slug.path), argv)
    size = dyno_size(options.size, "--size")
    name = _dyno_name()
    request: dict[str, object] = {"app": str(app.path), "argv": list(argv), "size": size.name}
    request.update(sandbox=options.sandbox, env=dict(options.env), name=name)
    subprocess.Popen(
        [sys.executable, "-m", "dynosim.oneoff", json.dumps(request)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the terminal's Ctrl-C and hang-up are not its
    )
    return Detached(command, name, size.name.title())  # Heroku prints Standard-1X


def _release(
    app: AppDir,
    history: ReleaseHistory,
    version: int | None,
    config_vars: Mapping[str, str],
    options: OneOffOptions,
    say: Callable[[str], None],
) -> Release:
    """What the one-off runs: release `version`'s slug, or, before the app's first release, a build
    that stays no release (on Heroku a one-off never makes one; the first `dynosim run` does).
    Its `-e` values are this dyno's alone."""
    env = {**config_vars, **options.env}
    if version is None:
        say(
            "dynosim: the app has no release yet: this one-off runs a build of it that is not released "
            "(the first `dynosim run` releases it)"
        )
        slug = build_slug(
            app.path,
            cache_dir=options.cache_dir or default_cache_dir(),
            dirty=options.dirty,
            config_vars=app.config_vars,
            say=say,
        )
        return Release(0, slug, env, slug.description, time.time())
    if options.dirty:
        say(
            f"dynosim: --dirty: ignored, a one-off runs the current release's slug (v{version}); "
            f"`dynosim deploy` or a new `dynosim run --dirty` releases changed code"
        )
    slug = history.slug(version)
    return Release(version, slug, env, slug.description, time.time(), history.dyno_metadata(version))


async def _attach(
    spec: DynoSpec, release: Release, sandbox: Sandbox, options: OneOffOptions, err: TextIO, running: Path | None
) -> OneOffResult:
    """The dyno's life, fed to the running supervisor (whose state folder is `running`) if there is one."""
    logs = LogStream()

    def show(lines: Sequence[LogLine]) -> None:  # only dynosim's own report reaches the terminal
        for line in lines:
            if line.source == "dynosim":
                err.write(f"dynosim: {line.text}\n")
        err.flush()

    logs.subscribe(show)
    ledger = Ledger(logs, options.ephemeral_ignore)
    dyno = Dyno(spec, release, sandbox, logs, options.timeouts, f"oneoff/{spec.name}", ledger, attach=options.attach)
    dyno.end_reason = "the end of this one-off dyno"
    feed = await _feed(running, dyno, logs) if running is not None else None
    if options.attach:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGQUIT):  # the terminal sends them to the command itself
            loop.add_signal_handler(signum, lambda: None)
        loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(dyno.stop()))
    try:
        await dyno.boot("down")
        status = await dyno.wait()
    finally:
        ledger.close()
    dyno.set_state("complete")
    if feed is not None:
        await feed.close()
    output = tuple(line.text for line in logs.recent if line.source == "app") if not options.attach else ()
    return OneOffResult(status, output)


class _Relay:
    """The dyno's lines and state, to the supervisor: gathered while the loop is busy and sent once it is
    free, when `set_state` has finished, so that each message carries the state its lines announce."""

    def __init__(self, feed: FeedConnection, dyno: Dyno) -> None:
        self.feed = feed
        self.dyno = dyno
        self.pending: list[LogLine] = []

    def __call__(self, lines: Sequence[LogLine]) -> None:
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending.extend(lines)

    def flush(self) -> None:
        lines, self.pending = self.pending, []
        self.feed.send(
            {
                "lines": [(line.time, line.source, line.text) for line in lines],
                "state": self.dyno.state,
                "since": self.dyno.since,
                "memory_mb": self.dyno.memory_mb,
            }
        )


async def _feed(running: Path, dyno: Dyno, logs: LogStream) -> _Fed | None:
    try:
        feed = await open_feed(running, "one-off", dyno=dyno.name, process=dyno.spec.command, size=dyno.spec.size.name)
    except NoRunError:  # the run is still building or releasing: its control socket is not open yet
        return None
    relay = _Relay(feed, dyno)
    logs.subscribe(relay)
    return _Fed(feed, relay)


@dataclass(frozen=True)
class _Fed:
    feed: FeedConnection
    relay: _Relay

    async def close(self) -> None:
        if self.relay.pending:
            self.relay.flush()
        await self.feed.close()


def _run_detached(request: Mapping[str, object]) -> int:
    """The detached process's side of `start_detached`."""
    env = request.get("env")
    options = OneOffOptions(
        size=str(request["size"]),
        sandbox=str(request["sandbox"]),
        env={str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {},
        name=str(request["name"]),
        attach=False,
    )
    argv = request.get("argv")
    with open(os.devnull, "w") as quiet:
        return run_oneoff(
            Path(str(request["app"])), [str(a) for a in argv] if isinstance(argv, list) else [], options, quiet
        ).status


if __name__ == "__main__":
    sys.exit(_run_detached(json.loads(sys.argv[1])))
