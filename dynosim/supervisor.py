"""The supervisor: one `dynosim run` of an app, from its build to its last dyno's stop, and what the
control socket lets other terminals (and the public API) ask of it while it runs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .addons import AddonRequest, Addons, Attachment, app_requests, manifest_requests
from .addons.backups import run_schedules
from .addons.capacity import CHECK_EVERY
from .addons.hints import watch_for_addon_failures
from .addons.recovery import Recovery, ServerState
from .app import load_app
from .buildpack import Slug, build_slug, default_cache_dir
from .ca import LocalCA, TLSError
from .config import ConfigStore, resolve_config_vars
from .control import ControlServer, Handler
from .ephemeral import DEFAULT_IGNORE, Ledger
from .errors import DynosimError, ReleaseError
from .faults import FaultRequest
from .faults.board import FaultBoard
from .faults.plan import Chaos, PlannedFault, run_plan, run_targets
from .faults.report import Witness, describe, outcomes
from .formation import DEFAULT_SIZE, Formation, FormationStore, check_limits, dyno_size, resolve_formation
from .gitwatch import new_commits
from .logs import LogLine, LogStream, TerminalPrinter
from .logview import select
from .metrics import Metrics
from .privatefile import write_private
from .procfile import Procfile, load_procfile
from .releases import Release, ReleaseHistory, config_change_description, slug_from_record
from .router import Router, RouterTimeouts, WebDyno
from .runlock import RunLock
from .runtime.dyno import Dyno, Timeouts
from .runtime.manager import AttachedDyno, CrashPolicy, CycleSchedule, DynoManager
from .runtime.ports import claim_port
from .runtime.sandbox import Sandbox, choose_sandbox, sweep_left_behind
from .scheduler import Job, SchedulerClock, SchedulerJobs

if TYPE_CHECKING:  # imported where they are used: a run's start does not wait for them (50-140 ms)
    from . import snapshots
    from .addons.data import Context
    from .dashboard import Dashboard

DEFAULT_PORT = 5000
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
SAME_SIGNAL = 0.1  # seconds within which a repeated stop signal is one request, not a second Ctrl-C
FORWARDED_PORTS = ("heroku", "public")  # X-Forwarded-Port: Heroku's 80/443, or the router's port


@dataclass(frozen=True)
class RunOptions:
    procfile: Path | None = None  # -f: another Procfile than the app's
    env_file: Path | None = None  # -e: another env file than the app's .env
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
    clock_speed: float = 1.0  # Scheduler jobs' clock: 3600 runs an hour in a second
    faults: tuple[PlannedFault, ...] = ()  # --faults plan.json: timed faults, after the formation is up
    chaos: Chaos | None = None  # --chaos SEED: seeded random faults
    metrics: bool = True  # --no-metrics: no 1-second metrics (`dynosim metrics`), the benchmark's baseline
    dashboard: bool = True  # --no-dashboard
    dashboard_port: int | None = None  # None: the router's port + 1; 0: any free port

    def __post_init__(self) -> None:
        if self.forwarded_port not in FORWARDED_PORTS:
            raise DynosimError(f"forwarded_port is {self.forwarded_port!r}: use one of {', '.join(FORWARDED_PORTS)}")


EXIT_EPHEMERAL = 3
ONE_OFF_NAME = re.compile(r"run\.\d+")
LINE_SOURCES = ("app", "heroku", "dynosim")
DASHBOARD_AFTER_UP = 0.5  # seconds after the formation is up that the dashboard starts: the first requests come first
LEDGER_WRITES = 500  # the ledger's latest writes the dashboard is sent; their count is sent too


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


class OneOffFeed:
    """What a one-off dyno in another terminal says of itself: its own lines (as no other dyno's) go
    into the run's log stream, its state and memory into `ps`."""

    def __init__(self, dyno: AttachedDyno, logs: LogStream, detach: Callable[[], None]) -> None:
        self.dyno = dyno
        self.logs = logs
        self.detach = detach

    def receive(self, message: Mapping[str, Any]) -> None:
        lines: list[LogLine] = []
        for item in message.get("lines") or ():
            try:
                when, source, text = item
                if source in LINE_SOURCES:
                    lines.append(LogLine(float(when), source, self.dyno.name, str(text)))
            except (TypeError, ValueError):
                continue
        if lines:
            self.logs.publish(lines)
        if isinstance(message.get("state"), str):
            self.dyno.state = message["state"]
        if isinstance(message.get("since"), (int, float)):
            self.dyno.since = float(message["since"])
        if isinstance(message.get("memory_mb"), (int, float)):
            self.dyno.memory_mb = float(message["memory_mb"])

    def close(self) -> None:
        self.detach()


class Run:
    """One `dynosim run` of an app: build, release, release phase, formation, until stopped."""

    def __init__(self, app_dir: Path, options: RunOptions, out: TextIO = sys.stdout) -> None:
        self.options = options
        self.out = out
        self.app = load_app(app_dir, options.procfile, options.env_file)
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
            if self.formation != own
            else None
        )
        self.logs = LogStream()
        self.ledger = Ledger(self.logs, options.ephemeral_ignore)
        self.lock = RunLock(self.app)
        self.manager: DynoManager | None = None
        self.router: Router | None = None
        self._tls_maker: threading.Thread | None = None
        requests = [*app_requests(self.app.manifest.addons, self.app.state_dir), *options.addons]
        self.addons = Addons(self.app.state_dir, requests, backend=options.addons_backend, say=self.say)
        # a crashed add-on server started again, with the dynos' crash back-off (addons/recovery.py)
        self.recovery = Recovery(self.addons, self.logs, options.crash_policy)
        self.attachments: list[Attachment] = []
        self.clock = SchedulerClock(options.clock_speed)
        self._scheduler_error = ""
        self.faults = FaultBoard(self)
        self.witness = Witness(self.logs)  # what the resilience report reads, from the first fault on
        self.metrics = Metrics(self._metered_dynos) if options.metrics else None
        if self.metrics is not None:
            self.logs.subscribe(self.metrics)
        self._check_planned_faults()
        postdeploy = self.app.manifest.postdeploy
        self._postdeploy_size = (
            dyno_size(postdeploy.size, "app.json scripts.postdeploy.size")
            if postdeploy is not None and postdeploy.size is not None
            else None
        )
        self._postdeploy_task: asyncio.Task[None] | None = None
        self.dashboard: Dashboard | None = None
        self._dashboard_start: asyncio.Future[None] | None = None  # started with the formation

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
            self.app.path,
            cache_dir=self.options.cache_dir or default_cache_dir(),
            dirty=self.options.dirty,
            config_vars=self.app.config_vars,
            say=self.say,
        )
        config_vars = dict(self.app.config_vars)
        if self.addons.resolved:
            self.say("-----> Starting add-ons")
            self.attachments = self.addons.start()
            watch_for_addon_failures(
                self.logs, self.attachments
            )  # Heroku's fix, once, when a dyno fails against an add-on as it would there
            config_vars.update(self._addon_vars(config_vars))
        # fresh as a new Heroku app is: no release of it ever succeeded, so its add-on data is new too
        self._fresh = self.history.current_version() is None
        release, self._new_release = self.history.create(
            slug,
            config_vars,
            self.app.user(),
            slug.description,
            release_phase=self.app.procfile.release is not None,
            addons=self._addon_names,
        )
        self.lock.record(release=release.version, config_vars=config_vars)
        sandbox = choose_sandbox(self.options.sandbox, self.app.runtime_dir, protect=[self.app.path])
        self.say(f"dyno sandbox: {sandbox.mode} ({sandbox.reason})")
        return release, sandbox

    @property
    def _addon_names(self) -> list[str]:
        """The attached add-ons' names, as `dynosim addons` shows them, which each release records."""
        return [attachment.name for attachment in self.attachments]

    def _addon_vars(self, config_vars: Mapping[str, str], quiet: bool = False) -> dict[str, str]:
        """Add-on config vars win, as on Heroku where an attached add-on owns its vars."""
        result: dict[str, str] = {}
        for attachment in self.attachments:
            names = ", ".join(attachment.config_vars)
            if not quiet:
                self.say(
                    f"       {attachment.plan} ({attachment.name}): {attachment.service} on {attachment.endpoint}, "
                    f"{attachment.backend} backend; sets {names}"
                )
            for name, value in attachment.config_vars.items():
                if name in config_vars and config_vars[name] != value and not quiet:
                    self.say(
                        f" !     {name} from .env/app.json is replaced by the {attachment.plan} add-on's, as on Heroku"
                    )
                result[name] = value
        return result

    async def serve(
        self, release: Release, sandbox: Sandbox, stop: asyncio.Event, on_started: Callable[[], None] = lambda: None
    ) -> None:
        """The router, the release phase, then the formation until `stop` is set; then Heroku's shutdown."""
        self.manager = manager = DynoManager(
            release,
            self.app.procfile,
            self.formation,
            sandbox,
            self.logs,
            run_id=self.lock.run_id,
            timeouts=self.options.timeouts,
            policy=self.options.crash_policy,
            cycle=self.options.cycle,
            ledger=self.ledger,
            preboot=self.options.preboot,
        )
        self.router = Router(
            WebDynos(manager),
            self.logs,
            host=self.options.host,
            port=self.options.port,
            timeouts=self.options.router_timeouts,
            tls=self._tls,
            forwarded_port=self.options.forwarded_port,
        )
        await self.router.start()
        manager.on_web_stop = self.router.forget
        if self.metrics is not None:
            self.metrics.start()
        self.recovery.start()  # from the release phase on, which a killed database would fail too
        try:
            await self._serve(manager, release, stop, on_started)
        finally:
            await self.recovery.stop()  # before the run's end stops the servers: that is no crash
            if self.metrics is not None:
                self.metrics.stop()
            if self.attachments:  # the kept psql of resets, before the add-ons' servers stop
                from .addons.data import close_sessions

                close_sessions(self.attachments)
            await self.router.stop()

    def _metered_dynos(self) -> list[Dyno]:
        """The formation's dynos up now, whose memory the metrics sample."""
        slots = self.manager.slots if self.manager is not None else []
        return [slot.dyno for slot in slots if slot.dyno is not None and slot.dyno.state == "up"]

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
        if self.attachments:  # no add-on, no baseline: not even a thread to start and wait for
            await self._capture_baselines()
        self.logs.api(f"Scaled to {self.formation.describe()} by user {user}")
        manager.start()
        # the control socket at once (no thread, a millisecond): `dynosim ps`, `logs` and faults reach the
        # run as soon as a dyno can be up
        handlers = self._handlers()
        control = ControlServer(self.app.state_dir, handlers, self._tail, {"one-off": self._one_off})
        await control.start()
        # the dynos' boots are what the first request waits for: the run's own threads (the certificate's
        # and the dashboard's) start once each dyno's command runs and its writes are watched; started
        # beside them, they held the GIL while the ledger's watch and the bind check waited for it (the
        # watch took 70-130 ms, 15-25 ms alone)
        await manager.wait_booted()
        self._start_postdeploy(manager, release)
        scheduling = asyncio.ensure_future(manager.run_scheduler(self._scheduler_jobs, self.clock))
        # pg:backups:schedule's daily backups, on the same clock
        backing_up = asyncio.ensure_future(run_schedules(self.app.state_dir, self.clock.now, self.clock.poll, self.say))
        capacity = asyncio.ensure_future(self._watch_capacity())
        # the router's certificate is made while the dynos boot: a run's start never waits for it
        self._tls_maker = threading.Thread(target=self._make_tls, daemon=True)
        self._tls_maker.start()
        self._dashboard_start = asyncio.ensure_future(self._start_dashboard(handlers, manager))
        watching = asyncio.ensure_future(self._watch_commits()) if self.options.watch else None
        planned = self._start_planned_faults()
        if watching is not None:
            watching.add_done_callback(self._watch_ended)
        on_started()
        try:
            await stopped
        finally:
            scheduling.cancel()
            backing_up.cancel()
            capacity.cancel()
            if watching is not None:
                watching.cancel()
            if planned is not None:
                planned.cancel()
                await asyncio.wait([planned])  # a fault it is switching on is on before clear() below
            await control.stop()
            self._dashboard_start.cancel()
            await asyncio.wait([self._dashboard_start])
            if self.dashboard is not None:
                await self.dashboard.stop()
            await self.faults.clear()  # what a fault changed is put back before the dynos stop
            await manager.stop()
            if self._postdeploy_task is not None:  # its dyno stopped with the others: its record is written
                await self._postdeploy_task

    async def _start_dashboard(self, handlers: Mapping[str, Handler], manager: DynoManager) -> None:
        """The dashboard, through the control socket's handlers, once the formation is up; a port taken is
        one line and the app runs on without it."""
        if not self.options.dashboard:
            return
        # aiohttp's import holds the GIL for 115 ms even on a thread, while the router and the web dyno's
        # boot want it: after the formation's boot, the first request (bench/startup.py) is 11% sooner
        await manager.wait_up(self.options.timeouts.boot)
        await asyncio.sleep(DASHBOARD_AFTER_UP)
        port = self.options.port + 1 if self.options.dashboard_port is None else self.options.dashboard_port
        from .dashboard import Dashboard

        dashboard = Dashboard(handlers, self._tail, port)
        try:
            await dashboard.start()
        except OSError as error:
            why = os.strerror(error.errno).lower() if error.errno else str(error)
            self.say(
                f" !     dashboard: cannot listen on 127.0.0.1:{port} ({why}); the app runs without it. Give it "
                "another port with --dashboard-port N, or turn it off with --no-dashboard"
            )
            return
        self.dashboard = dashboard
        self.say(f"dashboard: {dashboard.login_url()} (a one-time link; `dynosim dashboard` opens a new one)")

    def _fault_targets(self) -> list[tuple[str, str, str]]:
        return [(e.offering.addon, e.as_name, e.offering.service) for e in self.addons.resolved]

    def _check_planned_faults(self) -> None:
        """--faults: every planned target is one this run has, before anything starts."""
        targets = run_targets(self.formation.quantities, self._fault_targets())
        for planned in self.options.faults:
            targets.check(planned)

    def _start_planned_faults(self) -> asyncio.Task[None] | None:
        """--faults and --chaos: their faults on the board at their offsets, the report watching."""
        self.witness.formation_started()
        planned: list[PlannedFault] | Iterator[PlannedFault] = list(self.options.faults)
        if self.options.chaos is not None:
            planned = self.options.chaos.schedule(run_targets(self.formation.quantities, self._fault_targets()))
        elif not planned:
            return None
        self.witness.watch()
        return asyncio.ensure_future(run_plan(planned, self.faults, self.options.timeouts.boot))

    async def _watch_capacity(self) -> None:
        """Heroku Postgres' storage check (addons/capacity.py) every CHECK_EVERY of dynosim's clock, at
        most once a second; a change of status is said on the log stream as app[heroku-postgres]."""
        every = max(1.0, CHECK_EVERY.total_seconds() / self.clock.speed)
        while self.addons.watching:
            await asyncio.sleep(every)
            for line in await asyncio.to_thread(self.addons.check_capacity, self.clock.now()):
                self.logs.app_output("heroku-postgres", [line])

    def _start_postdeploy(self, manager: DynoManager, release: Release) -> None:
        """app.json's `scripts.postdeploy`, once in the app's life: after its first successful release,
        beside the formation; a failure is said and stops nothing, as on Heroku's review apps."""
        postdeploy = self.app.manifest.postdeploy
        record = self.app.state_dir / "postdeploy.json"
        if postdeploy is None or not self._fresh or record.exists():
            return

        async def run() -> None:
            name, status = await manager.postdeploy(postdeploy.command, self._postdeploy_size)
            # written whatever the status: Heroku runs it once, and a failed one is not run again either
            write_private(record, json.dumps({"release": release.version, "dyno": name, "status": status}) + "\n")
            if status != 0 and not manager.stopping:
                self.logs.hint(
                    name,
                    f"app.json scripts.postdeploy `{postdeploy.command}` failed (exited with status {status}); "
                    "the dynos keep running, and it does not run again (run it by hand with `dynosim exec`)",
                )

        self._postdeploy_task = asyncio.ensure_future(run())

    # what a running app is asked: the control socket's handlers (the CLI's, the public API's) come here
    def running(self) -> DynoManager:
        if self.manager is None:
            raise DynosimError("the run is not serving yet")
        return self.manager

    async def scale(self, counts: Mapping[str, int]) -> Formation:
        """`ps:scale`: now, and for the next runs too (the formation belongs to the app)."""
        manager = self.running()
        check_limits({**manager.formation.quantities, **counts}, manager.formation.sizes, "ps:scale")
        formation = await manager.scale(dict(counts))
        self.formations.scale(manager.procfile, counts)
        self.logs.api(f"Scaled to {formation.describe()} by user {self.app.user()}")
        return formation

    async def resize(self, sizes: Mapping[str, str]) -> Formation:
        """`ps:resize`: a restart of the resized types, and their size for the next runs too."""
        manager = self.running()
        resized = {**manager.formation.sizes, **{kind: dyno_size(size, "ps:resize") for kind, size in sizes.items()}}
        check_limits(manager.formation.quantities, resized, "ps:resize")
        formation = await manager.resize(dict(sizes))
        self.formations.resize(manager.procfile, sizes)
        self.logs.api(f"Scaled to {formation.describe()} by user {self.app.user()}")
        return formation

    async def restart(self, target: str | None = None) -> list[str]:
        """`heroku restart [TYPE|DYNO]`: the dynos restarted, each on a fresh filesystem."""
        names = await self.running().restart(target)
        if target and not names:
            raise DynosimError(f"no dyno or process type {target!r} is running")
        return names

    async def stop_dynos(self, target: str) -> list[str]:
        """`heroku ps:stop DYNO|TYPE`: each matching formation dyno stopped; the dyno manager starts
        it again at once, as Heroku does while the formation still asks for it."""
        manager = self.running()
        chosen = [slot for slot in manager.slots if target in (slot.name, slot.process.name)]
        if not chosen:
            raise DynosimError(f"ps:stop: no dyno or process type {target!r} is running; `dynosim ps` lists them")
        await asyncio.gather(
            *(slot.restart("Stopping (ps:stop); the formation still asks for this dyno", "ps:stop") for slot in chosen)
        )
        return [slot.name for slot in chosen]

    def _data(self) -> list[Context]:
        """Each add-on's data, as a reset or a snapshot works on it."""
        from .addons.data import context

        return [
            context(self.app.state_dir, attachment, self._restart_addon(attachment.name))
            for attachment in self.attachments
        ]

    def _restart_addon(self, name: str) -> Callable[[Callable[[], None]], None]:
        def restart(between: Callable[[], None]) -> None:
            self.addons.stop_server(name)
            try:
                between()
            finally:
                self.addons.start_server(name)

        return restart

    async def _capture_baselines(self) -> None:
        """What `reset()` returns the add-ons to, read after a release phase, before dynos connect; a
        database it cannot read is said once, and the run goes on without a reset for it."""
        try:
            from .addons.data import capture_baselines

            await asyncio.to_thread(capture_baselines, self._data())
        except DynosimError as error:
            self.logs.hint("reset", f"no reset this run: {error}")

    async def reset(self) -> dict[str, str]:
        """`App.reset()`: every add-on back to its state after the release phase (Postgres's tables
        and sequences, Redis, search and mail empty), the dynos and their connections left running."""
        self.running()
        from .addons.data import reset_all

        done = await asyncio.to_thread(reset_all, self._data())
        for name, what in done.items():
            self.logs.hint("reset", f"{name}: {what}")
        return done

    async def snapshot_save(self, name: str) -> snapshots.Snapshot:
        """`snapshot:save NAME`: every add-on's data, the config vars and the releases, the app running on."""
        from . import snapshots

        self.running()
        snapshots.check_name(name)
        config, releases = ConfigStore(self.app.state_dir).load(), self.history.entries()
        snapshot = await asyncio.to_thread(snapshots.save, self.app.state_dir, name, self._data(), config, releases)
        self.logs.hint(
            "snapshots", f"saved {name}: {len(snapshot.addons)} add-on(s), {len(snapshot.releases)} release(s)"
        )
        return snapshot

    async def snapshot_load(self, name: str) -> dict[str, str]:
        """`snapshot:load NAME`: the add-ons' data swapped in (each checked first, its connections ended as
        a restore ends them), then its config vars and releases, and a release when they change what the
        dynos run (which restarts them, as a config change does)."""
        before = self.running().release
        from . import snapshots

        snapshot = snapshots.read(self.app.state_dir, name)
        data = self._data()
        snapshots.check(snapshot, data)
        done = await asyncio.to_thread(snapshots.load_addons, self.app.state_dir, snapshot, data)
        for addon, what in done.items():
            self.logs.hint("snapshots", f"{name}: {addon} {what}")
        self.history.replace([dict(entry) for entry in snapshot.releases])
        store = ConfigStore(self.app.state_dir)
        store.save(snapshot.config)
        config_vars = resolve_config_vars(self.app.path, self.app.manifest, store, self.app.env_file)
        config_vars.update(self._addon_vars(config_vars, quiet=True))
        user = self.app.user()
        manager = self.running()
        release, created = self.history.create(
            manager.release.slug,
            config_vars,
            user,
            f"Load snapshot {name}",
            release_phase=manager.procfile.release is not None,
            addons=self._addon_names,
        )
        if created or release.version != before.version:  # the dynos run something else now
            self.logs.api(f"Load snapshot {name} by user {user}")
            await self._roll_out(release, created, user)
            done["release"] = f"{release.name}, every dyno restarted onto it"
        else:
            done["release"] = f"{release.name}, as running: no dyno restarted"
        return done

    async def snapshot_delete(self, name: str) -> snapshots.Snapshot:
        self.running()
        from . import snapshots

        return await asyncio.to_thread(snapshots.delete, self.app.state_dir, name, self._data())

    def maintenance(self, on: bool | None = None) -> bool:
        """`maintenance:on`/`off` (the router answers H80), or only whether it is on."""
        self.running()
        assert self.router is not None
        if on is not None:
            self.router.maintenance = on
            verb = "Enable" if on else "Disable"
            self.logs.api(f"{verb} maintenance mode by user {self.app.user()}")
        return self.router.maintenance

    def _handlers(self) -> dict[str, Handler]:
        async def ping(_: Mapping[str, Any]) -> str:
            return "pong"

        async def ps(request: Mapping[str, Any]) -> list[dict[str, object]]:
            rows = self.running().ps()
            if request.get("addons"):  # each add-on's server after the dynos, as `type: addon` rows
                rows += [self._addon_row(state) for state in self.recovery.states()]
            return rows

        async def scale(request: Mapping[str, Any]) -> dict[str, int]:
            counts = {str(k): int(v) for k, v in dict(request.get("counts", {})).items()}
            return dict((await self.scale(counts)).quantities)

        async def resize(request: Mapping[str, Any]) -> dict[str, str]:
            sizes = {str(k): str(v) for k, v in dict(request.get("sizes", {})).items()}
            return {kind: size.name for kind, size in (await self.resize(sizes)).sizes.items()}

        async def restart(request: Mapping[str, Any]) -> list[str]:
            target = request.get("target")
            return await self.restart(str(target) if target else None)

        async def logs(request: Mapping[str, Any]) -> list[str]:
            lines = select(self.logs.recent, request.get("dyno"), request.get("source"))
            return [line.format() for line in lines][-int(request.get("n", 100)) :]

        async def config(_: Mapping[str, Any]) -> dict[str, str]:
            return dict(self.running().release.config_vars)

        async def deploy(request: Mapping[str, Any]) -> int:
            return (await self.deploy(slug_from_record(dict(request.get("slug", {}))))).version

        async def config_set(request: Mapping[str, Any]) -> int:
            return (await self.set_config({str(k): v for k, v in dict(request.get("changes", {})).items()})).version

        async def addon_changed(request: Mapping[str, Any]) -> int:
            name, description, user = (str(request[key]) for key in ("name", "description", "user"))
            return (await self.addon_changed(name, description, user)).version

        async def faults(_: Mapping[str, Any]) -> list[dict[str, Any]]:
            return [fault.as_json() for fault in self.faults.active()]

        async def faults_add(request: Mapping[str, Any]) -> dict[str, Any]:
            self.running()  # no run serving yet: refused before anything changes
            self.witness.watch()
            return (await self.faults.add(FaultRequest.from_json(dict(request["fault"]), "fault"))).as_json()

        async def faults_remove(request: Mapping[str, Any]) -> dict[str, Any]:
            return (await self.faults.remove(str(request.get("id", "")))).as_json()

        async def faults_clear(_: Mapping[str, Any]) -> list[dict[str, Any]]:
            return [fault.as_json() for fault in await self.faults.clear()]

        async def maintenance(request: Mapping[str, Any]) -> bool:
            return self.maintenance(bool(request["on"]) if "on" in request else None)

        async def scheduler_run(request: Mapping[str, Any]) -> str | None:
            job = SchedulerJobs(self.app.state_dir).get(self.app.manifest, str(request.get("id", "")))
            return self.running().fire(job, self.clock.real_seconds(job.time_limit(self.clock.now())))

        async def scheduler_now(_: Mapping[str, Any]) -> str:
            return self.clock.now().isoformat()

        async def stop_dynos(request: Mapping[str, Any]) -> list[str]:
            return await self.stop_dynos(str(request.get("target", "")))

        async def metrics(request: Mapping[str, Any]) -> dict[str, Any]:
            if self.metrics is None:
                raise DynosimError("this run has no metrics: it was started with --no-metrics")
            since, window = request.get("since"), request.get("window")
            return self.metrics.series(
                float(since) if since is not None else None, float(window) if window is not None else None
            )

        async def reset(_: Mapping[str, Any]) -> dict[str, str]:
            return await self.reset()

        async def snapshot_save(request: Mapping[str, Any]) -> dict[str, Any]:
            return (await self.snapshot_save(str(request.get("name", "")))).as_json()

        async def snapshot_load(request: Mapping[str, Any]) -> dict[str, str]:
            return await self.snapshot_load(str(request.get("name", "")))

        async def snapshot_delete(request: Mapping[str, Any]) -> dict[str, Any]:
            return (await self.snapshot_delete(str(request.get("name", "")))).as_json()

        async def releases(_: Mapping[str, Any]) -> list[dict[str, object]]:
            return self.history.listing()

        async def addons(_: Mapping[str, Any]) -> list[dict[str, Any]]:
            # sizes are read off the disk (or the engine): never on the loop the router shares
            from .addons.manage import inventory

            rows = await asyncio.to_thread(inventory, self.app.state_dir, manifest_requests(self.app.manifest.addons))
            servers = {state.name: state.as_json() for state in self.recovery.states()}
            return [{**row.as_json(), "server": servers.get(row.name)} for row in rows]

        async def addon_servers(_: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
            return {state.name: state.as_json() for state in self.recovery.states()}

        async def ledger(_: Mapping[str, Any]) -> dict[str, object]:
            pending = await asyncio.to_thread(self.ledger.pending)
            record = self.ledger.as_json()
            writes = list(record["writes"])  # type: ignore[call-overload]  # a list of dicts
            return {
                **record,
                "writes": writes[-LEDGER_WRITES:],
                "writes_total": len(writes),
                "pending": [loss.as_dict() for loss in pending],
            }

        async def dashboard_url(_: Mapping[str, Any]) -> str:
            if self._dashboard_start is not None:  # asked in the moment before it listens
                await asyncio.shield(self._dashboard_start)
            if self.dashboard is None:
                raise DynosimError(
                    "this run has no dashboard (started with --no-dashboard, or its port was taken: see the "
                    "run's output); run again with --dashboard-port N"
                )
            return self.dashboard.login_url()

        async def rollback(request: Mapping[str, Any]) -> int:
            version = request.get("version")
            return (await self.rollback(int(version) if version is not None else None)).version

        return {
            "ping": ping,
            "ps": ps,
            "ps:scale": scale,
            "ps:resize": resize,
            "restart": restart,
            "logs": logs,
            "config": config,
            "config:set": config_set,
            "addons:changed": addon_changed,
            "faults": faults,
            "faults:add": faults_add,
            "faults:remove": faults_remove,
            "faults:clear": faults_clear,
            "maintenance": maintenance,
            "deploy": deploy,
            "releases:rollback": rollback,
            "ps:stop": stop_dynos,
            "scheduler:run": scheduler_run,
            "scheduler:now": scheduler_now,
            "metrics": metrics,
            "releases": releases,
            "reset": reset,
            "snapshot:save": snapshot_save,
            "snapshot:load": snapshot_load,
            "snapshot:delete": snapshot_delete,
            "addons": addons,
            "addons:servers": addon_servers,
            "ledger": ledger,
            "dashboard:url": dashboard_url,
        }

    def _addon_row(self, state: ServerState) -> dict[str, object]:
        """An add-on's server as a `ps` row: the keys a dyno's row has (its add-on as the type, its plan as
        the size), and its crashes and restarts."""
        return {
            "type": "addon",
            "name": state.name,
            "state": state.state,
            "since": state.since,
            "command": state.addon,
            "size": state.plan,
            "memory_mb": None,
            "sandbox": None,
            "last_exit": state.last_exit,
            "addon": state.addon,
            "pid": state.pid,
            "crashes": state.crashes,
            "restarts": state.restarts,
            "describe": state.describe(),
        }

    def _scheduler_jobs(self) -> list[Job]:
        try:
            return SchedulerJobs(self.app.state_dir).jobs(self.app.manifest)
        except DynosimError as error:  # a scheduler.json broken mid-run: said once, no job fires until fixed
            if str(error) != self._scheduler_error:
                self._scheduler_error = str(error)
                self.logs.hint("scheduler", str(error))
            return []

    async def _one_off(self, request: Mapping[str, Any]) -> OneOffFeed:
        """`dynosim exec` in another terminal: its one-off dyno, in `ps` and the logs while it runs."""
        manager = self.running()
        name, command = str(request.get("dyno", "")), str(request.get("process", ""))
        if not ONE_OFF_NAME.fullmatch(name) or not command:
            raise DynosimError("a one-off dyno is named run.NNNN and has a command")
        dyno = manager.attach(name, command, dyno_size(str(request.get("size", DEFAULT_SIZE)), "size"))
        self.logs.api(f"Starting process with command `{command}` by user {self.app.user()}")
        return OneOffFeed(dyno, self.logs, lambda: manager.detach(name))

    async def _tail(self, request: Mapping[str, Any]) -> AsyncIterator[str]:
        queue: asyncio.Queue[LogLine] = asyncio.Queue(maxsize=10000)
        dyno, source = request.get("dyno"), request.get("source")

        def receive(lines: Sequence[LogLine]) -> None:
            for line in lines:
                if queue.full():  # a reader that cannot keep up loses lines, never slows the app (L11)
                    return
                queue.put_nowait(line)

        for line in select(self.logs.recent, dyno, source)[-int(request.get("n", 100)) :]:
            yield line.format()
        self.logs.subscribe(receive)
        try:
            while True:
                line = await queue.get()
                if select((line,), dyno, source):
                    yield line.format()
        finally:
            self.logs.unsubscribe(receive)

    async def set_config(self, changes: Mapping[str, str | None]) -> Release:
        """`config:set`/`config:unset`: a new release that restarts every dyno, as on Heroku."""
        manager = self.running()
        store = ConfigStore(self.app.state_dir)
        store.change(changes, elsewhere=manager.release.config_vars)
        config_vars = resolve_config_vars(self.app.path, self.app.manifest, store, self.app.env_file)
        config_vars.update(self._addon_vars(config_vars, quiet=True))
        return await self._release_config(config_vars, config_change_description(changes), self.app.user())

    async def addon_changed(self, name: str, description: str, user: str) -> Release:
        """An add-on changed its config vars (a credential rotation): a new release with them, by the
        add-on, that restarts every dyno, as on Heroku. Processes that read the old values before keep them."""
        manager = self.running()
        attachment = next((a for a in self.attachments if a.name == name), None)
        if attachment is None:
            raise DynosimError(f"the running app has no add-on {name}; see `dynosim addons`")
        changed = self.addons.reattached(attachment)
        self.attachments = [changed if a is attachment else a for a in self.attachments]
        return await self._release_config({**manager.release.config_vars, **changed.config_vars}, description, user)

    async def _release_config(self, config_vars: Mapping[str, str], description: str, user: str) -> Release:
        """A new release of the running slug with these config vars, rolled onto every dyno."""
        manager = self.running()
        release, created = self.history.create(
            manager.release.slug,
            config_vars,
            user,
            description,
            release_phase=manager.procfile.release is not None,
            addons=self._addon_names,
        )
        self.logs.api(f"{description} by user {user}")
        await self._roll_out(release, created, user)
        return release

    async def deploy(self, slug: Slug) -> Release:
        """`git push heroku main`: a release of a new slug (with its own Procfile), rolled onto every dyno."""
        manager = self.running()
        user = self.app.user()
        procfile = load_procfile(slug.path)
        release, created = self.history.create(
            slug,
            manager.release.config_vars,
            user,
            slug.description,
            release_phase=procfile.release is not None,
            addons=self._addon_names,
        )
        self.logs.api(f"{slug.description} by user {user}")
        await self._roll_out(release, created, user, procfile)
        return release

    async def rollback(self, version: int | None) -> Release:
        """`releases:rollback`: a new release of an old one's slug and config vars (today's add-on
        vars, whose data stays), its release phase, every dyno restarted, as on Heroku."""
        self.running()  # no run serving yet: refused before anything changes
        target = self.history.rollback_target(version)
        ConfigStore(self.app.state_dir).save(target.config_set)
        config_vars = {**target.config_vars, **self._addon_vars(target.config_vars, quiet=True)}
        procfile = load_procfile(target.slug.path)
        user = self.app.user()
        release, created = self.history.create(
            target.slug,
            config_vars,
            user,
            target.description,
            release_phase=procfile.release is not None,
            addons=self._addon_names,
            replaces=target.replaces,
        )
        self.logs.api(f"{target.description} by user {user}")
        await self._roll_out(release, created, user, procfile)
        return release

    async def _roll_out(self, release: Release, created: bool, user: str, procfile: Procfile | None = None) -> None:
        """Release phase, then every dyno restarted onto the release; a failed release phase
        leaves the running release serving, as on Heroku."""
        manager = self.running()
        previous = manager.release, manager.procfile
        manager.release, manager.procfile = release, procfile or manager.procfile
        try:
            await manager.release_phase(user)
        except ReleaseError as error:
            manager.release, manager.procfile = previous
            if created:
                self.history.settle(release, succeeded=False)
            raise ReleaseError(
                f"{error}; {previous[0].name} still serves, as on Heroku when a release command fails"
            ) from None
        if created:
            self.history.settle(release, succeeded=True)
        if manager.procfile.release is None:
            self.logs.api(f"Release {release.name} created by user {user}")
        else:  # its release phase may have migrated: resets return to what it made
            await self._capture_baselines()
        self.lock.record(release=release.version, config_vars=dict(release.config_vars))
        await manager.deploy(release)

    async def _watch_commits(self) -> None:
        """`--watch`: every new commit is built and deployed, as a push would be."""
        loop = asyncio.get_running_loop()
        try:
            async for _ in new_commits(self.app.path):
                await self._build_and_deploy(loop)
        except DynosimError as error:  # not a git repository
            self.logs.hint("build", f"--watch: {error}")

    def _watch_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.logs.hint("build", f"--watch stopped, a bug of dynosim's (please report it): {task.exception()!r}")

    async def _build_and_deploy(self, loop: asyncio.AbstractEventLoop) -> None:
        user = self.app.user()

        def say(line: str) -> None:  # from the build's thread
            loop.call_soon_threadsafe(self.logs.hint, "build", line)

        self.logs.api(f"Build started by user {user}")
        try:
            slug = await asyncio.to_thread(
                build_slug,
                self.app.path,
                cache_dir=self.options.cache_dir or default_cache_dir(),
                config_vars=self.app.config_vars,
                say=say,
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
        """The CLI's `dynosim run`: Ctrl-C or SIGTERM stops gracefully at any moment (the build and the
        add-ons' start included), a second Ctrl-C forces once the dynos run."""
        _give_up_on_stop_signals()
        try:
            release, sandbox = self.prepare()
            code = asyncio.run(self._main(release, sandbox))
        finally:
            # the stop under way: a signal now must not cut finish() short and leave servers and folders
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_IGN)
            self.finish()
        if self.options.strict and self.ledger.losses:
            self.say(
                f"dynosim: --strict: dynos wrote {len(self.ledger.losses)} file(s) that Heroku would lose (listed above)"
            )
            return EXIT_EPHEMERAL
        return code

    def finish(self) -> None:
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
        found = outcomes(self.faults.spans(), self.witness, time.time())
        if found:  # the resilience report, after the run's own last lines
            for line in describe(found, self.witness.since):
                self.say(line)
        if self.options.report_json is not None:
            report = {**self.ledger.as_json(), "faults": [outcome.as_json() for outcome in found]}
            self.options.report_json.write_text(json.dumps(report, indent=1) + "\n")

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

        for signum in STOP_SIGNALS:
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


class StopSignal(KeyboardInterrupt):
    """SIGINT or SIGTERM before the run's loop handles them (the build, the add-ons' start, the release):
    the start given up, and finish() undoes it, as a Ctrl-C on a terminal would."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _give_up_on_stop_signals() -> None:
    """SIGINT and SIGTERM raise StopSignal until the run's loop takes them over. Set whatever the
    inherited handler was: a shell's background job starts with SIGINT ignored, and a run that ignored
    it while building but obeyed it once its dynos ran was a run that went on after a Ctrl-C; SIGTERM's
    default would kill dynosim before its add-ons' servers, lock and folders were put away."""

    def give_up(signum: int, frame: object) -> None:
        for each in STOP_SIGNALS:  # one request: finish() follows
            signal.signal(each, signal.SIG_IGN)
        raise StopSignal(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, give_up)
