"""The Python API that the CLI and the pytest plugin share."""
from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .addons import AddonRequest, Addons, Attachment
from .addons.hints import watch_for_addon_failures
from .app import App as AppFolder
from .app import load_app
from .buildpack import Slug, build_slug, default_cache_dir
from .ca import LocalCA, TLSError
from .config import ConfigStore, resolve_config_vars
from .control import ControlServer
from .ephemeral import DEFAULT_IGNORE, Ledger
from .errors import DynosimError, ReleaseError
from .formation import Formation, FormationStore, resolve_formation
from .logs import LogLine, LogStream, TerminalPrinter
from .procfile import Procfile, load_procfile
from .releases import Release, ReleaseHistory, config_change_description
from .router import Router, RouterTimeouts, WebDyno
from .runtime.dyno import Timeouts
from .runtime.manager import CrashPolicy, CycleSchedule, DynoManager
from .runtime.memory import MemoryPolicy
from .runtime.ports import claim_port
from .runtime.sandbox import (
    Sandbox,
    choose_sandbox,
    process_identity,
    reap_marked,
    still_running,
    sweep_left_behind,
    wipe_dir,
)

DEFAULT_PORT = 5000
SAME_SIGNAL = 0.1  # seconds within which a repeated stop signal is one request, not a second Ctrl-C
FORWARDED_PORTS = ("heroku", "public")  # X-Forwarded-Port: Heroku's 80/443, or the router's port


@dataclass(frozen=True)
class RunOptions:
    formation: Mapping[str, int] = field(default_factory=dict)
    port: int = DEFAULT_PORT
    size: str | None = None
    dirty: bool = False
    sandbox: str = "auto"
    timeouts: Timeouts = Timeouts()
    crash_policy: CrashPolicy = CrashPolicy()
    cycle: CycleSchedule | None = CycleSchedule()
    cache_dir: Path | None = None
    ephemeral_ignore: tuple[str, ...] = DEFAULT_IGNORE
    report_json: Path | None = None
    strict: bool = False  # exit EXIT_EPHEMERAL when a dyno wrote state a restart loses
    addons: tuple[AddonRequest, ...] = ()  # on top of app.json's
    addons_backend: str = "auto"
    host: str = "127.0.0.1"  # where the router listens
    preboot: bool = False
    router_timeouts: RouterTimeouts = RouterTimeouts()
    forwarded_port: str = "heroku"  # one of FORWARDED_PORTS
    watch: bool = False  # deploy every new commit

    def __post_init__(self) -> None:
        if self.forwarded_port not in FORWARDED_PORTS:
            raise DynosimError(f"forwarded_port is {self.forwarded_port!r}: use one of {', '.join(FORWARDED_PORTS)}")


EXIT_EPHEMERAL = 3


def _filter_lines(lines: Iterable[LogLine], request: Mapping[str, Any]) -> list[LogLine]:
    """`heroku logs --dyno/-d web.1|web|router|api --source app|heroku`."""
    dyno, source = request.get("dyno"), request.get("source")
    return [
        line for line in lines
        if (not source or line.source == source)
        and (not dyno or line.dyno == dyno or line.dyno.split(".")[0] == dyno)
    ]


def _head(path: Path) -> str:
    result = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip()


def _watch_refs(git: Path, changed: Callable[[], None]) -> Any:
    """A watchdog observer on the repository's HEAD and refs: a commit or a checkout touches them."""
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: Any) -> None:
            # git writes refs as NAME.lock and renames it into place: the rename is what counts
            path = str(getattr(event, "dest_path", "") or event.src_path)
            if not path.endswith(".lock"):
                changed()

    observer = Observer()
    observer.daemon = True
    observer.schedule(Handler(), str(git), recursive=False)  # HEAD, packed-refs
    if (git / "refs" / "heads").is_dir():
        observer.schedule(Handler(), str(git / "refs" / "heads"), recursive=True)
    observer.start()
    return observer


class WebDynos:
    """What the router may ask the dyno manager: which web dynos can take a request."""

    def __init__(self, manager: DynoManager) -> None:
        self._manager = manager

    def web_dynos_up(self) -> list[WebDyno]:
        return [WebDyno(name, port) for name, port in self._manager.web_dynos()]

    def web_state(self) -> str:
        return self._manager.web_state()

    async def wait_for_web(self, timeout: float) -> bool:
        return await self._manager.wait_for_web(timeout)


class RunLock:
    """`.dynosim/run.json`: one supervisor per app, and what a killed one left behind."""

    def __init__(self, app: AppFolder) -> None:
        self.app = app
        self.path = app.state_dir / "run.json"
        self.run_id = os.urandom(16).hex()

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
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"pid": os.getpid(), "identity": process_identity(os.getpid()), "run_id": self.run_id}, handle)

    def record(self, **details: object) -> None:
        """Add what one-off dynos of this run need (its config vars: hence mode 0600)."""
        data = {**(self._read() or {}), **details}
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)

    def active(self) -> dict[str, object] | None:
        """The record of the run going on in this app, if any."""
        record = self._read()
        return record if record is not None and _alive(record) else None

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
        pid = int(record["pid"])  # type: ignore[call-overload]
    except (KeyError, TypeError, ValueError):
        return False
    return still_running(pid, record.get("identity"))


class Run:
    """One `dynosim run` of an app: build, release, release phase, formation, until stopped."""

    def __init__(self, app_dir: Path, options: RunOptions, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.out = out
        self.app = load_app(app_dir)
        self.history = ReleaseHistory(self.app.state_dir)
        self._new_release = False  # whether prepare() made a release, whose release phase settles it
        self.formations = FormationStore(self.app.state_dir)
        stored = self.formations.load()
        own = resolve_formation(self.app.procfile, self.app.manifest, app=stored)
        self.formation: Formation = resolve_formation(
            self.app.procfile, self.app.manifest, options.formation, options.size, app=stored
        )
        self._formation_note = (
            f"formation for this run: {self.formation.describe()} (from the command line); the app's own, "
            f"{own.describe()}, stays for the next run (`dynosim ps:scale` changes it)"
            if self.formation != own else None
        )
        self.logs = LogStream()
        self.ledger = Ledger(self.logs, options.ephemeral_ignore)
        self.lock = RunLock(self.app)
        self.manager: DynoManager | None = None
        self.router: Router | None = None
        self._tls_maker: threading.Thread | None = None
        requests = [*(AddonRequest(spec.plan, spec.as_name, dict(spec.options)) for spec in self.app.manifest.addons), *Addons.declared(self.app.state_dir)]
        self.addons = Addons(self.app.state_dir, [*requests, *options.addons], backend=options.addons_backend, say=self.say)
        self.attachments: list[Attachment] = []

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def prepare(self) -> tuple[Release, Sandbox]:
        self._tls: Future[ssl.SSLContext | None] = Future()  # made once the dynos are starting
        for warning in self.app.procfile.warnings:
            self.say(f" !     {warning}")
        if self._formation_note is not None:
            self.say(self._formation_note)
        claim_port(self.options.port, self.options.host)  # the router's, before a long build
        self.lock.acquire(self.say)
        slug: Slug = build_slug(
            self.app.path, cache_dir=self.options.cache_dir or default_cache_dir(), dirty=self.options.dirty,
            config_vars=self.app.config_vars, say=self.say,
        )
        config_vars = dict(self.app.config_vars)
        if self.addons.resolved:
            self.say("-----> Starting add-ons")
            self.attachments = self.addons.start()
            watch_for_addon_failures(self.logs, self.attachments)  # Heroku's fix, once, when a dyno fails against an add-on as it would there
            config_vars.update(self._addon_vars(config_vars))
        release, self._new_release = self.history.create(
            slug, config_vars, self.app.user(), slug.description, release_phase=self.app.procfile.release is not None
        )
        self.lock.record(release=release.version, config_vars=config_vars)
        sandbox = choose_sandbox(self.options.sandbox, self.app.runtime_dir, protect=[self.app.path])
        self.say(f"dyno sandbox: {sandbox.mode} ({sandbox.reason})")
        return release, sandbox

    def _addon_vars(self, config_vars: Mapping[str, str], quiet: bool = False) -> dict[str, str]:
        """Add-on config vars win, as on Heroku where an attached add-on owns its vars."""
        result: dict[str, str] = {}
        for attachment in self.attachments:
            names = ", ".join(attachment.config_vars)
            if not quiet:
                self.say(f"       {attachment.plan} ({attachment.name}): {attachment.service} on {attachment.endpoint}, "
                         f"{attachment.backend} backend; sets {names}")
            for name, value in attachment.config_vars.items():
                if name in config_vars and config_vars[name] != value and not quiet:
                    self.say(f" !     {name} from .env/app.json is replaced by the {attachment.plan} add-on's, as on Heroku")
                result[name] = value
        return result

    async def serve(
        self, release: Release, sandbox: Sandbox, stop: asyncio.Event, on_started: Callable[[], None] = lambda: None
    ) -> None:
        """The router, the release phase, then the formation until `stop` is set; then Heroku's shutdown."""
        self.manager = manager = DynoManager(
            release, self.app.procfile, self.formation, sandbox, self.logs,
            run_id=self.lock.run_id,
            timeouts=self.options.timeouts, policy=self.options.crash_policy,
            cycle=self.options.cycle, ledger=self.ledger, preboot=self.options.preboot,
        )
        self.router = Router(
            WebDynos(manager), self.logs, host=self.options.host, port=self.options.port,
            timeouts=self.options.router_timeouts, tls=self._tls, forwarded_port=self.options.forwarded_port,
        )
        await self.router.start()
        manager.on_web_stop = self.router.forget
        try:
            await self._serve(manager, release, stop, on_started)
        finally:
            await self.router.stop()

    def _make_tls(self) -> None:
        try:
            self._tls.set_result(self._router_tls())
        except BaseException as error:  # handed to serve(), which raises it on its own thread
            self._tls.set_exception(error)

    def _router_tls(self) -> ssl.SSLContext | None:
        """HTTPS on the router's port, with a certificate from dynosim's CA; a CA that cannot be used
        turns HTTPS off for this run, in one line, and plain HTTP is served all the same."""
        try:
            return LocalCA.load_or_create(say=self.say).server_cert(say=self.say).context()
        except (TLSError, OSError) as error:  # OSError: ssl.SSLError from a certificate or key it cannot load
            self.say(f" !     HTTPS is off for this run: {error}")
            return None

    async def _serve(
        self, manager: DynoManager, release: Release, stop: asyncio.Event, on_started: Callable[[], None]
    ) -> None:
        user = self.app.user()
        self.logs.api(f"{release.slug.description} by user {user}")
        phase = asyncio.ensure_future(manager.release_phase(user))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait((phase, stopped), return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set() and not phase.done():
            await manager.stop()
        try:
            await phase
        except ReleaseError as error:  # the release command failed or was interrupted
            if self._new_release:
                self.history.settle(release, succeeded=False)
            advice = "" if stop.is_set() else ". Fix it and run again"  # an interrupted one needs no fix
            raise ReleaseError(f"{error}; no dyno was started{advice}") from None
        if self._new_release:
            self.history.settle(release, succeeded=True)
        self.logs.api(f"Scaled to {self.formation.describe()} by user {user}")
        manager.start()
        # the router's certificate is made while the dynos boot: a run's start never waits for it
        self._tls_maker = threading.Thread(target=self._make_tls, daemon=True)
        self._tls_maker.start()
        control = ControlServer(self.app.state_dir, self._handlers(), self._tail)
        await control.start()
        watching = asyncio.ensure_future(self._watch_commits(stop)) if self.options.watch else None
        if watching is not None:
            watching.add_done_callback(self._watch_ended)
        on_started()
        try:
            await stopped
        finally:
            if watching is not None:
                watching.cancel()
            await control.stop()
            await manager.stop()

    # what the control socket offers other terminals
    def _handlers(self) -> dict[str, Callable[[Mapping[str, Any]], Any]]:
        manager = self.manager
        assert manager is not None

        async def ping(_: Mapping[str, Any]) -> str:
            return "pong"

        async def ps(_: Mapping[str, Any]) -> list[dict[str, object]]:
            return manager.ps()

        async def scale(request: Mapping[str, Any]) -> dict[str, int]:
            counts = {str(k): int(v) for k, v in dict(request.get("counts", {})).items()}
            formation = await manager.scale(counts)
            self.formations.scale(manager.procfile, counts)
            self.logs.api(f"Scaled to {formation.describe()} by user {self.app.user()}")
            return dict(formation.quantities)

        async def resize(request: Mapping[str, Any]) -> dict[str, str]:
            sizes = {str(k): str(v) for k, v in dict(request.get("sizes", {})).items()}
            formation = await manager.resize(sizes)
            self.formations.resize(manager.procfile, sizes)
            self.logs.api(f"Scaled to {formation.describe()} by user {self.app.user()}")
            return {kind: size.name for kind, size in formation.sizes.items()}

        async def restart(request: Mapping[str, Any]) -> list[str]:
            target = request.get("target")
            names = await manager.restart(str(target) if target else None)
            if target and not names:
                raise DynosimError(f"no dyno or process type {target!r} is running")
            return names

        async def logs(request: Mapping[str, Any]) -> list[str]:
            return [line.format() for line in _filter_lines(self.logs.recent, request)][-int(request.get("n", 100)):]

        async def config(_: Mapping[str, Any]) -> dict[str, str]:
            return dict(manager.release.config_vars)

        async def deploy(request: Mapping[str, Any]) -> int:
            fields = dict(request.get("slug", {}))
            venv = Path(fields["venv"]) if fields.get("venv") else None
            return (await self.deploy(Slug(**{**fields, "path": Path(fields["path"]), "venv": venv}))).version

        async def config_set(request: Mapping[str, Any]) -> int:
            return (await self.set_config({str(k): v for k, v in dict(request.get("changes", {})).items()})).version

        async def maintenance(request: Mapping[str, Any]) -> bool:
            assert self.router is not None
            if "on" in request:
                self.router.maintenance = bool(request["on"])
                verb = "Enable" if self.router.maintenance else "Disable"
                self.logs.api(f"{verb} maintenance mode by user {self.app.user()}")
            return self.router.maintenance

        return {"ping": ping, "ps": ps, "ps:scale": scale, "ps:resize": resize, "restart": restart, "logs": logs, "config": config,
                "config:set": config_set, "maintenance": maintenance, "deploy": deploy}

    async def _tail(self, request: Mapping[str, Any]) -> AsyncIterator[str]:
        queue: asyncio.Queue[LogLine] = asyncio.Queue(maxsize=10000)

        def receive(lines: Sequence[LogLine]) -> None:
            for line in lines:
                if queue.full():  # a reader that cannot keep up loses lines, never slows the app (L11)
                    return
                queue.put_nowait(line)

        for line in list(_filter_lines(self.logs.recent, request))[-int(request.get("n", 100)):]:
            yield line.format()
        self.logs.subscribe(receive)
        try:
            while True:
                line = await queue.get()
                if _filter_lines((line,), request):
                    yield line.format()
        finally:
            self.logs.unsubscribe(receive)

    async def set_config(self, changes: Mapping[str, str | None]) -> Release:
        """`config:set`/`config:unset`: a new release that restarts every dyno, as on Heroku."""
        manager = self.manager
        assert manager is not None
        store = ConfigStore(self.app.state_dir)
        store.change(changes, elsewhere=manager.release.config_vars)
        config_vars = resolve_config_vars(self.app.path, self.app.manifest, store)
        config_vars.update(self._addon_vars(config_vars, quiet=True))
        user = self.app.user()
        description = config_change_description(changes)
        release, created = self.history.create(
            manager.release.slug, config_vars, user, description, release_phase=manager.procfile.release is not None
        )
        self.logs.api(f"{description} by user {user}")
        await self._roll_out(release, created, user)
        return release

    async def deploy(self, slug: Slug) -> Release:
        """`git push heroku main`: a release of a new slug (with its own Procfile), rolled onto every dyno."""
        manager = self.manager
        assert manager is not None
        user = self.app.user()
        procfile = load_procfile(slug.path)
        release, created = self.history.create(
            slug, manager.release.config_vars, user, slug.description, release_phase=procfile.release is not None
        )
        self.logs.api(f"{slug.description} by user {user}")
        await self._roll_out(release, created, user, procfile)
        return release

    async def _roll_out(self, release: Release, created: bool, user: str, procfile: Procfile | None = None) -> None:
        """Release phase, then every dyno restarted onto the release; a failed release phase
        leaves the running release serving, as on Heroku."""
        manager = self.manager
        assert manager is not None
        previous = manager.release, manager.procfile
        manager.release, manager.procfile = release, procfile or manager.procfile
        try:
            await manager.release_phase(user)
        except ReleaseError as error:
            manager.release, manager.procfile = previous
            if created:
                self.history.settle(release, succeeded=False)
            raise ReleaseError(f"{error}; {previous[0].name} still serves, as on Heroku when a release command fails") from None
        if created:
            self.history.settle(release, succeeded=True)
        if manager.procfile.release is None:
            self.logs.api(f"Release {release.name} created by user {user}")
        self.lock.record(release=release.version, config_vars=dict(release.config_vars))
        await manager.deploy(release)

    async def _watch_commits(self, stop: asyncio.Event) -> None:
        """`--watch`: every new commit is built and deployed, as a push would be."""
        from .buildpack.source import git_dir

        git = git_dir(self.app.path)
        if git is None:
            self.logs.hint("build", f"--watch: {self.app.path} is not in a git repository; nothing to watch")
            return
        changed = asyncio.Event()
        loop = asyncio.get_running_loop()
        observer = _watch_refs(git, lambda: loop.call_soon_threadsafe(changed.set))
        head = _head(self.app.path)
        try:
            while not stop.is_set():
                await changed.wait()
                await asyncio.sleep(0.3)  # a commit moves several refs: one deploy for all of them
                changed.clear()
                now = _head(self.app.path)
                if now == head:
                    continue
                head = now
                await self._build_and_deploy(loop)
        finally:
            observer.stop()

    def _watch_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.logs.hint("build", f"--watch stopped, a bug of dynosim's (please report it): {task.exception()!r}")

    async def _build_and_deploy(self, loop: asyncio.AbstractEventLoop) -> None:
        user = self.app.user()
        self.logs.api(f"Build started by user {user}")
        try:
            slug = await asyncio.to_thread(
                build_slug, self.app.path, cache_dir=self.options.cache_dir or default_cache_dir(),
                config_vars=self.app.config_vars, say=lambda line: loop.call_soon_threadsafe(self.logs.hint, "build", line),
            )
        except DynosimError as error:
            self.logs.api(f"Build failed by user {user}")
            self.logs.hint("build", str(error))
            return
        self.logs.api(f"Build succeeded by user {user}")
        try:
            await self.deploy(slug)
        except DynosimError as error:
            self.logs.hint("build", str(error))

    def run(self) -> int:
        """The CLI's `dynosim run`: Ctrl-C or SIGTERM stops gracefully, a second Ctrl-C forces."""
        try:
            release, sandbox = self.prepare()
            code = asyncio.run(self._main(release, sandbox))
        finally:
            self._finish()
        if self.options.strict and self.ledger.losses:
            self.say(f"dynosim: --strict: dynos wrote {len(self.ledger.losses)} file(s) that Heroku would lose (listed above)")
            return EXIT_EPHEMERAL
        return code

    def _finish(self) -> None:
        """What every end of a run does, a failed start included."""
        self.ledger.close()
        self.addons.stop()
        # each dyno wiped its own folder; the run's folder goes if empty, with those of killed runs
        sweep_left_behind(self.app.runtime_dir.parent)
        self.lock.release()
        self._write_report()
        # a daemon thread still printing when the interpreter exits makes Python abort
        if self._tls_maker is not None:
            self._tls_maker.join(30)

    def _write_report(self) -> None:
        if self.options.report_json is not None:
            self.options.report_json.write_text(json.dumps(self.ledger.as_json(), indent=1) + "\n")

    async def _main(self, release: Release, sandbox: Sandbox) -> int:
        loop = asyncio.get_running_loop()
        printer = TerminalPrinter(self.out)
        self.logs.subscribe(printer)
        printer.start()
        stop = asyncio.Event()
        first: tuple[int, float] | None = None  # the signal that began the stop, and when

        def on_signal(signum: int, when: float) -> None:
            nonlocal first
            if first is None:
                first = (signum, when)
                self.logs.hint("supervisor", "stopping all dynos (Ctrl-C again to force)")
                stop.set()
            elif signum == first[0] and when - first[1] < SAME_SIGNAL:
                return  # `timeout`, and wrappers that forward a terminal's Ctrl-C, deliver one request twice
            else:
                self.logs.hint("supervisor", "forcing: SIGKILL to every dyno")
                if self.manager is not None:
                    self.manager.kill()

        def arrived(signum: int, frame: object) -> None:
            # Python runs this as the signal comes, between two bytecodes of whatever the loop is doing;
            # asyncio's handler runs when the loop is free, which can be too late to tell one request
            # delivered twice from a second Ctrl-C
            loop.call_soon_threadsafe(on_signal, signum, time.monotonic())

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, lambda: None)  # asyncio's wake-up of the loop when a signal comes…
            signal.signal(signum, arrived)  # …and which signal it was, and when
        try:
            await self.serve(release, sandbox, stop)
        except ReleaseError:
            if stop.is_set():
                return 0
            raise
        finally:
            await printer.stop()
        return 0


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> object:
        return json.loads(self.body)


class LogView:
    """The run's log stream, for tests: every line so far, searchable, and waitable."""

    def __init__(self, stream: LogStream) -> None:
        self._stream = stream
        self._lines: list[LogLine] = []
        self._changed = threading.Condition()
        stream.subscribe(self._receive)

    def _receive(self, lines: Sequence[LogLine]) -> None:
        with self._changed:
            self._lines.extend(lines)
            self._changed.notify_all()

    def lines(self, dyno: str | None = None, source: str | None = None) -> list[LogLine]:
        with self._changed:
            return [l for l in self._lines if dyno in (None, l.dyno) and source in (None, l.source)]

    def text(self) -> str:
        return "\n".join(line.format() for line in self.lines())

    def search(self, pattern: str) -> list[LogLine]:
        regex = re.compile(pattern)
        return [line for line in self.lines() if regex.search(line.format())]

    def wait_for(self, pattern: str, timeout: float = 30.0, *, after: int = 0) -> LogLine:
        """The first line (from index `after`) whose Heroku-format text matches `pattern`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self._lines[after:]:
                    if regex.search(line.format()):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    tail = "\n".join(l.format() for l in self._lines[-40:])
                    raise TimeoutError(f"no log line matching {pattern!r} within {timeout}s; last lines:\n{tail}")
                self._changed.wait(remaining)

    def __len__(self) -> int:
        with self._changed:
            return len(self._lines)


class App:
    """A Procfile app run the way Heroku runs it, in the background, for tests and scripts.

        with dynosim.App("path/to/app", addons=["heroku-postgresql"]) as app:
            assert app.get("/").status == 200
            app.restart()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        formation: Mapping[str, int] | str | None = None,
        addons: Sequence[str] = (),
        addons_backend: str = "auto",
        port: int | None = None,
        forwarded_port: str = "heroku",
        cycle_every: float | None = None,
        jitter: bool = True,
        dirty: bool = True,
        sandbox: str = "auto",
        boot_timeout: float = 60.0,
        stop_timeout: float = 30.0,
        crash_backoff_scale: float = 1.0,
        memory: MemoryPolicy = MemoryPolicy(),
        cache_dir: str | os.PathLike[str] | None = None,
        ready_timeout: float = 300.0,
        echo: TextIO | None = None,
    ) -> None:
        from .formation import parse_formation
        from .runtime.ports import free_port

        if isinstance(formation, str):
            formation = parse_formation(formation, "formation")
        self.port = port or free_port()
        self.options = RunOptions(
            formation=dict(formation or {}), port=self.port, forwarded_port=forwarded_port, dirty=dirty, sandbox=sandbox,
            timeouts=Timeouts(boot=boot_timeout, stop=stop_timeout, memory=memory),
            crash_policy=CrashPolicy().scaled(crash_backoff_scale),
            cycle=CycleSchedule(cycle_every, jitter=jitter) if cycle_every else CycleSchedule(),
            cache_dir=Path(cache_dir) if cache_dir else None,
            addons=tuple(AddonRequest(plan) for plan in addons), addons_backend=addons_backend,
        )
        self._build_output = io.StringIO()
        self._run = Run(Path(path), self.options, out=echo or self._build_output)
        self.logs = LogView(self._run.logs)
        self._ready_timeout = ready_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._started = threading.Event()

    # lifecycle
    def __enter__(self) -> App:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="dynosim-app", daemon=True)
        self._thread.start()
        if not self._started.wait(self._ready_timeout) or self._failure is not None:
            self.stop()
            raise self._failure or TimeoutError("the app did not start in time")
        late = self._call(self._run.manager.wait_up(self._ready_timeout))  # type: ignore[union-attr]
        if late:
            self.stop()
            raise DynosimError(f"dynos not up after {self._ready_timeout:g}s: {', '.join(late)}\n{self.logs.text()}")

    def _main(self) -> None:
        try:
            release, sandbox = self._run.prepare()
        except BaseException as exc:  # handed to the caller's thread
            self._failure = exc
            self._started.set()
            return
        asyncio.run(self._serve(release, sandbox))

    async def _serve(self, release: Release, sandbox: Sandbox) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self._run.serve(release, sandbox, self._stop, on_started=self._started.set)
        except BaseException as exc:  # handed to the caller's thread
            self._failure = exc
            self._started.set()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(self.options.timeouts.stop + 30)
            self._thread = None
        self._run._finish()

    def _call(self, coroutine: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    # what a test looks at
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ephemeral(self) -> Ledger:
        return self._run.ledger

    @property
    def addon_urls(self) -> dict[str, str]:
        return {name: value for a in self._run.attachments for name, value in a.config_vars.items()}

    @property
    def build_output(self) -> str:
        return self._build_output.getvalue()

    def request(self, method: str, path: str, data: bytes | None = None, headers: Mapping[str, str] | None = None,
                timeout: float = 30.0) -> Response:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self.url + path, data=data, method=method, headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return Response(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as error:
            return Response(error.code, dict(error.headers), error.read())

    def get(self, path: str = "/", **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, data: bytes | str | Mapping[str, str] = b"", **kwargs: Any) -> Response:
        if isinstance(data, Mapping):
            from urllib.parse import urlencode

            data = urlencode(data).encode()
        elif isinstance(data, str):
            data = data.encode()
        return self.request("POST", path, data=data, **kwargs)

    # what a test does to it
    def restart(self, target: str | None = None, *, wait: bool = True) -> list[str]:
        """`heroku restart [TYPE|DYNO]`: a full restart, each dyno on a fresh filesystem."""
        names = self._call(self._run.manager.restart(target))  # type: ignore[union-attr]
        if wait:
            self.wait_up()
        return names  # type: ignore[no-any-return]

    def cycle(self, target: str | None = None) -> list[str]:
        """What the daily cycle does, now."""
        manager = self._run.manager
        assert manager is not None
        slots = [s for s in manager.slots if target in (None, s.name, s.process.name)]

        async def cycle_all() -> None:
            await asyncio.gather(*(s.restart("Cycling", "the daily cycle") for s in slots))

        self._call(cycle_all())
        self.wait_up()
        return [s.name for s in slots]

    def wait_up(self, timeout: float | None = None) -> None:
        late = self._call(self._run.manager.wait_up(timeout or self._ready_timeout))  # type: ignore[union-attr]
        if late:
            raise DynosimError(f"dynos not up: {', '.join(late)}")

    def exec(self, command: str) -> tuple[int, str]:
        """A one-off dyno of the running release: (exit status, output)."""
        status, lines = self._call(self._run.manager.one_off(command))  # type: ignore[union-attr]
        return status, "\n".join(lines)

    def dynos(self) -> dict[str, str]:
        manager = self._run.manager
        return {s.name: (s.dyno.state if s.dyno else "down") for s in manager.slots} if manager else {}
