"""The public API: what the CLI's commands and the pytest plugin do to an app, through one path each.

`App` runs an app in the background, for tests and scripts, and offers every operation the CLI has.
The functions below are those operations on an app folder: to its running `dynosim run` over the
control socket (an `App`'s run has one too), or, when none is active, to the state it keeps for the
next run, as the Heroku CLI's commands are calls to the platform.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TextIO, TypeVar

from .addons import AddonRequest, app_requests, provisioned_vars
from .app import load_app
from .buildpack import build_slug, default_cache_dir
from .config import ConfigStore, state_dir
from .control import NoRunError, request
from .ephemeral import Ledger
from .errors import DynosimError
from .faults.client import AppFaults
from .formation import DEFAULT_SIZE, FormationStore, parse_formation
from .logview import LogView
from .oneoff import OneOffOptions, run_oneoff
from .procfile import load_procfile
from .releases import Release, ReleaseHistory, RollbackTarget, slug_record
from .runtime.dyno import Timeouts
from .runtime.manager import CrashPolicy, CycleSchedule
from .runtime.memory import MemoryPolicy
from .runtime.ports import free_port
from .runtime.sandbox import Sandbox
from .snapshots import listing as snapshot_listing
from .supervisor import Run, RunOptions

T = TypeVar("T")


@dataclass(frozen=True)
class Applied(Generic[T]):
    """What a change did, and whether a running `dynosim run` applied it now (else the next run starts with it)."""

    value: T
    live: bool


def ps(app_dir: Path, addons: bool = False) -> list[dict[str, object]]:
    """`heroku ps`: the running app's dynos; with `addons`, then a row (`"type": "addon"`) for each add-on
    server the run supervises, with its state (`describe`), crashes and restarts."""
    if addons:
        return list(request(state_dir(app_dir.resolve()), "ps", addons=True))
    return list(request(state_dir(app_dir.resolve()), "ps"))


def scale(app_dir: Path, counts: Mapping[str, int]) -> Applied[dict[str, int]]:
    """`heroku ps:scale`: the formation's counts now, or (no run active) those kept for the next run."""
    folder = app_dir.resolve()
    try:
        return Applied(dict(request(state_dir(folder), "ps:scale", counts=dict(counts))), True)
    except NoRunError:
        FormationStore(state_dir(folder)).scale(load_procfile(folder), counts)
        return Applied(dict(counts), False)


def resize(app_dir: Path, sizes: Mapping[str, str]) -> Applied[dict[str, str]]:
    """`heroku ps:resize`: every type's size now, or (no run active) the sizes kept for the next run."""
    folder = app_dir.resolve()
    try:
        return Applied(dict(request(state_dir(folder), "ps:resize", sizes=dict(sizes))), True)
    except NoRunError:
        stored = FormationStore(state_dir(folder)).resize(load_procfile(folder), sizes)
        return Applied({kind: stored.sizes[kind] for kind in sizes}, False)


def restart(app_dir: Path, target: str | None = None) -> list[str]:
    """`heroku restart [TYPE|DYNO]`: the names of the dynos restarted."""
    return list(request(state_dir(app_dir.resolve()), "restart", target=target))


def stop_dynos(app_dir: Path, target: str) -> list[str]:
    """`heroku ps:stop DYNO|TYPE`: the names of the dynos stopped (the formation starts them again)."""
    return list(request(state_dir(app_dir.resolve()), "ps:stop", target=target))


def config(app_dir: Path) -> dict[str, str]:
    """`heroku config`: the running release's config vars, or (no run active) the app's as stored, with
    its add-ons' (which win, as in a run)."""
    folder = app_dir.resolve()
    try:
        return dict(request(state_dir(folder), "config"))
    except NoRunError:
        app = load_app(folder)
        return {**app.config_vars, **provisioned_vars(app.state_dir, app_requests(app.manifest.addons, app.state_dir))}


def change_config(app_dir: Path, changes: Mapping[str, str | None]) -> Applied[int | None]:
    """`config:set` (a value) and `config:unset` (None): the new release's version when a run is
    active (it restarts every dyno), else None (kept for the next run)."""
    folder = state_dir(app_dir.resolve())
    try:
        return Applied(int(request(folder, "config:set", changes=dict(changes))), True)
    except NoRunError:
        ConfigStore(folder).change(changes)
        return Applied(None, False)


def addon_changed(app_dir: Path, name: str, description: str, user: str) -> Applied[int | None]:
    """After an add-on's record changed its config vars (a credential rotation): when a run is active, its
    new release (`description` by `user`, e.g. "Update DATABASE by heroku-postgresql" by
    "heroku-postgresql@addons.heroku.com"), which restarts every dyno; else None (the next run starts with them)."""
    folder = state_dir(app_dir.resolve())
    try:
        return Applied(int(request(folder, "addons:changed", name=name, description=description, user=user)), True)
    except NoRunError:
        return Applied(None, False)


def deploy(app_dir: Path, *, cache_dir: Path | None = None, say: Callable[[str], None] = print) -> int:
    """`git push heroku main` to the running app: HEAD built here, released and rolled onto every dyno
    there; the new release's version."""
    folder = app_dir.resolve()
    state = state_dir(folder)
    request(state, "ping")  # no run: say so before building anything
    config_vars = load_app(folder).config_vars
    slug = build_slug(folder, cache_dir=cache_dir or default_cache_dir(), config_vars=config_vars, say=say)
    say("-----> Launching...")
    return int(request(state, "deploy", slug=slug_record(slug)))


def rollback(app_dir: Path, version: int | None = None) -> Applied[tuple[RollbackTarget, int]]:
    """`heroku releases:rollback [vN]`: what was rolled back to and the new release's version, and
    whether a running `dynosim run` restarted every dyno onto it (else the next run starts it)."""
    folder = app_dir.resolve()
    state = state_dir(folder)
    history = ReleaseHistory(state)
    target = history.rollback_target(version)  # a release that cannot be: said before anything changes
    try:
        return Applied((target, int(request(state, "releases:rollback", version=target.version))), True)
    except NoRunError:
        ConfigStore(state).save(target.config_set)
        release, _ = history.create(
            target.slug,
            target.config_vars,
            load_app(folder).user(),
            target.description,
            release_phase=load_procfile(target.slug.path).release is not None,  # run by the next `dynosim run`
            addons=history.addons(history.current_version()),  # a rollback adds or removes none
            replaces=target.replaces,
        )
        return Applied((target, release.version), False)


def maintenance(app_dir: Path, on: bool | None = None) -> bool:
    """`maintenance:on`/`off` (the router answers H80 to every request), or only whether it is on."""
    arguments = {} if on is None else {"on": on}
    return bool(request(state_dir(app_dir.resolve()), "maintenance", **arguments))


def scheduler_run(app_dir: Path, job_id: str) -> str | None:
    """`scheduler:run ID`: the job now, in the running app; its scheduler.NNNN dyno's name, or None when
    its concurrency policy (forbid) skips it."""
    result: str | None = request(state_dir(app_dir.resolve()), "scheduler:run", id=job_id)
    return result


def releases(app_dir: Path) -> list[dict[str, object]]:
    """`heroku releases --json`: newest first."""
    return ReleaseHistory(state_dir(app_dir.resolve())).listing()


def logs(app_dir: Path, n: int = 100, dyno: str | None = None, source: str | None = None) -> list[str]:
    """`heroku logs -n N [-d DYNO] [-s SOURCE]`: the running app's last lines, in Heroku's format."""
    return list(request(state_dir(app_dir.resolve()), "logs", n=n, dyno=dyno, source=source))


def metrics(app_dir: Path, since: float | None = None, window: float | None = None) -> dict[str, Any]:
    """`dynosim metrics --json`: the running app's 1-second points (memory per dyno, response time,
    requests by status class, events) from `since` (a Unix time) or for the last `window` seconds."""
    return dict(request(state_dir(app_dir.resolve()), "metrics", since=since, window=window))


def reset(app_dir: Path) -> dict[str, str]:
    """The running app's add-ons back to their state right after the release phase (see `App.reset`)."""
    done: dict[str, str] = request(state_dir(app_dir.resolve()), "reset")
    return done


def snapshot_save(app_dir: Path, name: str) -> dict[str, Any]:
    """`snapshot:save NAME`: the running app's add-ons' data, config vars and releases."""
    return dict(request(state_dir(app_dir.resolve()), "snapshot:save", name=name))


def snapshot_load(app_dir: Path, name: str) -> dict[str, str]:
    """`snapshot:load NAME`: what was done, by add-on, and the release it made."""
    return dict(request(state_dir(app_dir.resolve()), "snapshot:load", name=name))


def snapshot_delete(app_dir: Path, name: str) -> dict[str, Any]:
    return dict(request(state_dir(app_dir.resolve()), "snapshot:delete", name=name))


def snapshots(app_dir: Path) -> list[dict[str, Any]]:
    """`dynosim snapshots --json`: the app's snapshots, oldest first (no run needed)."""
    return [snapshot.as_json() for snapshot in snapshot_listing(state_dir(app_dir.resolve()))]


def dashboard_url(app_dir: Path) -> str:
    """`dynosim dashboard --url`: a new one-time link to the running app's dashboard."""
    url: str = request(state_dir(app_dir.resolve()), "dashboard:url")
    return url


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
        clock_speed: float = 1.0,
        dirty: bool = True,
        sandbox: str = "auto",
        boot_timeout: float = 60.0,
        stop_timeout: float = 30.0,
        crash_backoff_scale: float = 1.0,
        memory: MemoryPolicy = MemoryPolicy(),
        cache_dir: str | os.PathLike[str] | None = None,
        ready_timeout: float = 300.0,
        echo: TextIO | None = None,
        dashboard: bool = False,
    ) -> None:
        if isinstance(formation, str):
            formation = parse_formation(formation, "formation")
        self.port = port or free_port()
        self.options = RunOptions(
            formation=dict(formation or {}),
            port=self.port,
            forwarded_port=forwarded_port,
            dirty=dirty,
            sandbox=sandbox,
            timeouts=Timeouts(boot=boot_timeout, stop=stop_timeout, memory=memory),
            crash_policy=CrashPolicy().scaled(crash_backoff_scale),
            cycle=CycleSchedule((cycle_every or CycleSchedule.period) / clock_speed, jitter=jitter),
            clock_speed=clock_speed,
            cache_dir=Path(cache_dir) if cache_dir else None,
            addons=tuple(AddonRequest(plan) for plan in addons),
            addons_backend=addons_backend,
            dashboard=dashboard,
            dashboard_port=0,  # a harness runs many apps side by side: any free port
        )
        self._build_output = io.StringIO()
        self._out = echo or self._build_output
        self._run = Run(Path(path), self.options, out=self._out)
        self.path = self._run.app.path
        self.logs = LogView(self._run.logs)
        self._ready_timeout = ready_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._started = threading.Event()

    @property
    def faults(self) -> AppFaults:
        """The running app's faults: `app.faults.dyno_crash("web.1")`, `with app.faults.add(...):`."""
        return AppFaults(self.path)

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
        late = self._call(self._run.running().wait_up(self._ready_timeout))
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
        self._run.finish()

    def _call(self, coroutine: Any) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    # what a test looks at
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> dict[str, str]:
        """Every add-on back to its state right after the release phase, in milliseconds: Postgres's
        tables as the migrations left them (their seeded rows kept, sequences rewound; the dynos'
        connections stay open), Redis, search and captured mail empty. What was done, by add-on."""
        done: dict[str, str] = self._call(self._run.reset())
        return done

    def snapshot_save(self, name: str) -> dict[str, Any]:
        """Every add-on's data, the config vars and the releases, saved as snapshot `name`."""
        snapshot: dict[str, Any] = self._call(self._run.snapshot_save(name)).as_json()
        return snapshot

    def snapshot_load(self, name: str) -> dict[str, str]:
        """Snapshot `name` loaded: the add-ons' data swapped in (the app's database connections end, as a
        restore ends them), its config vars and releases back; what was done."""
        done: dict[str, str] = self._call(self._run.snapshot_load(name))
        return done

    def snapshots(self) -> list[dict[str, Any]]:
        return snapshots(self.path)

    def dashboard_url(self) -> str:
        """A new one-time link to this app's dashboard (`App(..., dashboard=True)`)."""
        return dashboard_url(self.path)

    @property
    def ephemeral(self) -> Ledger:
        return self._run.ledger

    @property
    def addon_urls(self) -> dict[str, str]:
        return {name: value for a in self._run.attachments for name, value in a.config_vars.items()}

    @property
    def build_output(self) -> str:
        return self._build_output.getvalue()

    def request(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Response:
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

    def ps(self) -> list[dict[str, object]]:
        """`dynosim ps --json`."""
        return ps(self.path)

    def dynos(self) -> dict[str, str]:
        """Each dyno's state, by name."""
        return {str(row["name"]): str(row["state"]) for row in self.ps()}

    def releases(self) -> list[dict[str, object]]:
        """`dynosim releases --json`."""
        return releases(self.path)

    def metrics(self, since: float | None = None, window: float | None = None) -> dict[str, Any]:
        """`dynosim metrics --json`: the run's 1-second points."""
        return metrics(self.path, since, window)

    # what a test does to it: the CLI's operations, by the CLI's path
    def restart(self, target: str | None = None, *, wait: bool = True) -> list[str]:
        """`heroku restart [TYPE|DYNO]`: a full restart, each dyno on a fresh filesystem."""
        names = restart(self.path, target)
        if wait:
            self.wait_up()
        return names

    def scale(self, counts: Mapping[str, int] | str, *, wait: bool = True) -> dict[str, int]:
        """`heroku ps:scale web=2 worker=0` (a mapping, or that text): the formation's counts."""
        quantities = scale(self.path, parse_formation(counts, "ps:scale") if isinstance(counts, str) else counts).value
        if wait:
            self.wait_up()
        return quantities

    def resize(self, sizes: Mapping[str, str], *, wait: bool = True) -> dict[str, str]:
        """`heroku ps:resize web=standard-2x`: every type's size."""
        applied = resize(self.path, sizes).value
        if wait:
            self.wait_up()
        return applied

    def config_set(self, values: Mapping[str, str], *, wait: bool = True) -> int:
        """`heroku config:set`: the new release's version, once every dyno restarted onto it."""
        return self._change_config(values, wait)

    def config_unset(self, *names: str, wait: bool = True) -> int:
        """`heroku config:unset` (of vars set with config:set): the new release's version."""
        return self._change_config({name: None for name in names}, wait)

    def _change_config(self, changes: Mapping[str, str | None], wait: bool) -> int:
        version = change_config(self.path, changes).value
        assert version is not None  # this app's run is active
        if wait:
            self.wait_up()
        return version

    def config(self) -> dict[str, str]:
        """`heroku config`: the running release's config vars."""
        return config(self.path)

    def deploy(self, *, wait: bool = True) -> int:
        """`git push heroku main`: the app's HEAD built, released and rolled out; the new release's version."""
        version = deploy(self.path, cache_dir=self.options.cache_dir, say=lambda line: print(line, file=self._out))
        if wait:
            self.wait_up()
        return version

    def maintenance(self, on: bool | None = None) -> bool:
        """`heroku maintenance:on`/`off`, or only whether it is on."""
        return maintenance(self.path, on)

    def scheduler_run(self, job_id: str) -> str | None:
        """`scheduler:run ID`: the job's scheduler.NNNN dyno, or None when forbid skips it."""
        return scheduler_run(self.path, job_id)

    def cycle(self, target: str | None = None) -> list[str]:
        """What the daily cycle does, now."""
        names: list[str] = self._call(self._run.running().cycle_now(target))
        self.wait_up()
        return names

    def wait_up(self, timeout: float | None = None) -> None:
        late = self._call(self._run.running().wait_up(timeout or self._ready_timeout))
        if late:
            raise DynosimError(f"dynos not up: {', '.join(late)}")

    def exec(self, command: str, *, size: str = DEFAULT_SIZE, env: Mapping[str, str] | None = None) -> tuple[int, str]:
        """`dynosim exec COMMAND` (a Procfile type runs its command), by the CLI's path: a one-off dyno of
        the running release, in `ps` and the logs while it runs; (exit status, output)."""
        options = OneOffOptions(
            size=size,
            sandbox=self.options.sandbox,
            cache_dir=self.options.cache_dir,
            ephemeral_ignore=self.options.ephemeral_ignore,
            env=dict(env or {}),
            timeouts=self.options.timeouts,
            attach=False,
        )
        result = run_oneoff(self.path, [command], options, err=self._out)
        return result.status, "\n".join(result.output)
