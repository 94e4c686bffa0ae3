"""`dynosim deploy --to swarm` and `dynosim destroy --to swarm`: the app on the Docker engine's Swarm
mode, through the engine's API, with Heroku's runtime contract.

A deploy is Heroku's: HEAD's slug and the config vars make a release (in the app's one history); its
image is built (image.py); the add-ons run as services of their own, each with a named volume (none
with `--external-addons`); the release phase runs first, as a one-shot service whose task must exit 0,
and only then does each process type's service roll onto the release. A failed release phase changes no
process service, so the previous release keeps serving, as on Heroku.

Each process type is one replicated service with the formation's quantity, `DYNO` from the task's slot
(`web.1`, `web.2`), the dyno size's memory (reserved: the quota; limit: where Heroku kills, R15), a
30 s stop grace, and rolls start-first, one task at a time, like preboot: a new task joins the routing
mesh once its health check finds it listening on `$PORT` (Heroku's boot check), and an old one leaves
the mesh before it is sent SIGTERM. web is published on the router's port ($PORT, else 5000) through the
routing mesh.

Once deployed, `ps`, `ps:scale`, `logs` and `restart` with `--on swarm` reach the same services through
the engine's API: a dyno is a process service's task (`web.2`: the task in slot 2), its state the task's
(running is Heroku's up); a scale sets the service's replicas and is kept in the app's formation, so the
next deploy starts as many; the logs are the services' own, in Heroku's line format; a restart is a
forced rolling update (start-first, so it drops no request), or one task's container stopped.

Everything made carries the `dynosim.swarm.app` label (the app's name as tags have it), which is how
destroy finds all of it.
"""

from __future__ import annotations

import os
import queue
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .app import AppDir, load_app
from .buildpack import build_slug, default_cache_dir
from .errors import DynosimError, ReleaseError
from .export.model import ROUTER_PORT, STOP_GRACE_SECONDS, AddonModel, AppModel, ProcessModel, app_model, app_slug
from .formation import SIZES, FormationStore
from .image import DEFAULT_PORT, connect, default_base, release_image
from .logs import LogLine
from .releases import ReleaseHistory

if TYPE_CHECKING:
    import docker

LABEL_APP = "dynosim.swarm.app"
LABEL_ROLE = "dynosim.swarm.role"  # "process", "release", "addon"
LABEL_PROCESS = "dynosim.swarm.process"
LABEL_SIZE = "dynosim.swarm.size"  # the process service's dyno size, as `ps` shows it
LABEL_RELEASE = "dynosim.release"
SECOND = 1_000_000_000  # the engine's durations are in nanoseconds
MB = 2**20
POLL = 0.25
ADDON_TIMEOUT = 180.0  # an add-on's first boot: initdb, its health check
RELEASE_TIMEOUT = 3600.0  # Heroku lets a release command run for an hour
ROLL_TIMEOUT = 300.0  # every process service onto the release
UNPLACEABLE = ("insufficient resources", "no suitable node")
# a task's state as `heroku ps` words a dyno's (anything else, as the engine says it)
DYNO_STATES = {
    "new": "starting",
    "pending": "starting",
    "assigned": "starting",
    "accepted": "starting",
    "ready": "starting",
    "preparing": "starting",
    "starting": "starting",
    "running": "up",
    "complete": "down",
    "shutdown": "down",
    "failed": "crashed",
    "rejected": "crashed",
}
# The router service's proxy (see _router_service): each connection to one of the web tasks the swarm's
# DNS names (healthy ones only: a task joins service discovery once its health check passes, and leaves
# it before its SIGTERM), round robin, the next one tried when one refuses.
ROUTER = """
import asyncio, itertools, os, socket, time
WEB, PORT = os.environ["DYNOSIM_WEB"], int(os.environ["PORT"])
turn = itertools.count()

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        pass

async def upstream():
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            found = await asyncio.get_running_loop().getaddrinfo(WEB, PORT, type=socket.SOCK_STREAM)
        except socket.gaierror:
            found = []
        addresses = sorted({info[4][0] for info in found})
        start = next(turn)
        for i in range(len(addresses)):
            try:
                return await asyncio.wait_for(asyncio.open_connection(addresses[(start + i) % len(addresses)], PORT), 2)
            except (OSError, asyncio.TimeoutError):
                continue
        await asyncio.sleep(0.1)
    return None

async def handle(reader, writer):
    found = await upstream()
    if found is not None:
        await asyncio.gather(pipe(reader, found[1]), pipe(found[0], writer))
        found[1].close()
    writer.close()

async def main():
    server = await asyncio.start_server(handle, "0.0.0.0", PORT)
    await server.serve_forever()

asyncio.run(main())
"""
# web's health check, as Heroku's boot check: something listens on $PORT at the dyno's own address
LISTENING = (
    "import os, socket; socket.create_connection((socket.gethostbyname(socket.gethostname()), "
    "int(os.environ['PORT'])), 2).close()"
)


@dataclass(frozen=True)
class Deployed:
    version: int
    url: str | None  # where web answers through the routing mesh; None without a web process
    first_response: float | None  # seconds from the deploy's start to web's first answer there


def deploy_swarm(
    app_dir: Path,
    *,
    init: bool = False,
    external_addons: bool = False,
    base: str | None = None,
    cache_dir: Path | None = None,
    say: Callable[[str], None] = print,
) -> Deployed:
    """HEAD as a new release of the app on the swarm: its add-ons, its release phase, then its formation."""
    from docker.errors import DockerException

    began = time.monotonic()
    folder = app_dir.resolve()
    app = load_app(folder)
    model = _with_external_vars(app_model(folder, external_addons=external_addons), app.config_vars)
    _check_names(model)
    client = connect()
    _ensure_manager(client, init, say)
    slug = build_slug(folder, cache_dir=cache_dir or default_cache_dir(), config_vars=app.config_vars, say=say)
    history = ReleaseHistory(app.state_dir)
    release, new = history.create(
        slug,
        model.environment,
        app.user(),
        slug.description,
        release_phase=model.release_command is not None,
        addons=[addon.plan for addon in model.addons],
    )
    try:
        label = f"v{release.version}"
        image = release_image(slug, app_name=model.app, version=release.version, base=base, client=client, say=say)
        network = _network(client, model)
        for addon in model.addons:
            if not addon.external:
                _addon_service(client, model, addon, network, say)
        if _serving(client, model) != label and model.release_argv is not None:
            _release_phase(client, model, image.tag, label, network, say)
        say(f"-----> Launching {label} on the swarm...")
        port = _router_port()
        mesh = _routing_mesh(client, say)
        before = _formation_specs(client, model)
        try:
            services = [
                _process_service(client, model, process, image.tag, label, network, port if mesh else None)
                for process in model.processes
            ]
            if not mesh and any(process.web for process in model.processes):
                router_base = base or default_base(slug.python_version)
                services.append(_router_service(client, model, router_base, network, port))
            _converge(client, services, label)
        except DynosimError:
            _restore(client, model, before)
            raise
        _remove_gone(client, model)
    except DynosimError:
        if new:
            history.settle(release, False)
        raise
    except DockerException as error:  # the engine failing mid-deploy (a swarm left, a 503): one line
        if new:
            history.settle(release, False)
        raise DynosimError(
            f"the Docker engine refused the deploy of {label} ({_reason(error)}); check `docker info` (is this node "
            "still a swarm manager?) and deploy again"
        ) from None
    if new and model.release_command is not None:
        history.settle(release, True)
    url = f"http://127.0.0.1:{port}/" if any(p.web for p in model.processes if p.quantity) else None
    first = _first_response(url, began) if url else None
    return Deployed(release.version, url, first)


def destroy_swarm(app_name: str, *, say: Callable[[str], None] = print) -> dict[str, int]:
    """Every service, secret, config, network and volume a deploy of `app_name` made, removed; how many of each."""
    from docker.errors import APIError

    client = connect()
    label = f"{LABEL_APP}={app_slug(app_name)}"
    removed = {"services": 0, "networks": 0, "volumes": 0, "secrets": 0, "configs": 0}
    for service in client.api.services(filters={"label": label}):
        client.api.remove_service(service["ID"])
        removed["services"] += 1
    deadline = time.monotonic() + 60
    while client.api.containers(all=True, filters={"label": label}):  # a volume in use cannot go
        if time.monotonic() > deadline:
            raise DynosimError(f"{app_name}'s tasks did not stop within 60 s; run destroy again")
        time.sleep(POLL)
    for kind, listing, remove in (
        ("secrets", client.api.secrets, client.api.remove_secret),
        ("configs", client.api.configs, client.api.remove_config),
    ):
        for item in listing(filters={"label": label}):
            remove(item["ID"])
            removed[kind] += 1
    for network in client.api.networks(filters={"label": label}):
        _retry(client.api.remove_network, network["Id"], (APIError,), deadline)
        removed["networks"] += 1
    for volume in client.api.volumes(filters={"label": label}).get("Volumes") or []:
        _retry(client.api.remove_volume, volume["Name"], (APIError,), deadline)
        removed["volumes"] += 1
    parts = [f"{count} {kind if count != 1 else kind[:-1]}" for kind, count in removed.items() if count]
    say(f"Destroying {app_name} on the swarm... done ({', '.join(parts) or 'nothing of it was there'})")
    return removed


# --- the deployed formation: ps, ps:scale, logs, restart --------------------------------------------


def ps_swarm(app_dir: Path) -> list[dict[str, object]]:
    """`heroku ps` of the app on the swarm: each process service's tasks, one per slot, in `ps --json`'s
    rows (the local run's, with the task's id and state, and why it is pending or failed)."""
    with _engine("ps") as client:
        _, services = _deployment(client, app_dir, "ps")
        rows: list[dict[str, object]] = []
        for kind, service in services.items():
            spec = service["Spec"]
            command = (spec["TaskTemplate"]["ContainerSpec"].get("Args") or [""])[-1]
            size = (spec.get("Labels") or {}).get(LABEL_SIZE, "")
            for slot, task in sorted(_slots(client, service["ID"]).items()):
                status = task["Status"]
                rows.append(
                    {
                        "type": kind,
                        "name": f"{kind}.{slot}",
                        "state": DYNO_STATES.get(status["State"], status["State"]),
                        "since": _seconds(status["Timestamp"]),
                        "command": command,
                        "size": size,
                        "memory_mb": None,
                        "release": _task_release(task),
                        "task": task["ID"],
                        "task_state": status["State"],
                        "error": status.get("Err") or None,
                    }
                )
        return rows


def scale_swarm(app_dir: Path, counts: Mapping[str, int]) -> dict[str, int]:
    """`heroku ps:scale` on the swarm: Heroku's limits checked and the quantities kept in the app's formation
    (the next deploy starts as many), then each service's replicas set and waited on until they run. A
    quantity the swarm cannot place is put back, in the swarm and the formation, and said in one line."""
    with _engine("ps:scale") as client:
        app, services = _deployment(client, app_dir, "ps:scale")
        for kind in counts:
            if kind not in services and kind in app.procfile.formation_types:
                raise DynosimError(
                    f"ps:scale: {kind} is in the Procfile but not on the swarm yet: dynosim deploy --to swarm "
                    "(it starts the formation's quantity), then scale"
                )
        before = {kind: _replicas(services[kind]) for kind in counts if kind in services}
        store = FormationStore(app.state_dir)
        store.scale(app.procfile, counts)  # an unknown type, Heroku's limits: refused before the swarm changes
        try:
            _set_replicas(client, services, counts)
            for kind, count in counts.items():
                service = client.api.inspect_service(services[kind]["ID"])
                _wait_running(
                    client,
                    service["ID"],
                    count,
                    (service["Spec"].get("Labels") or {}).get(LABEL_RELEASE),
                    ROLL_TIMEOUT,
                    f"{kind}={count}",
                    rolling=False,
                )
                _wait_stopped(client, service, count, f"{kind}={count}")
        except Unplaceable as error:
            _set_replicas(client, services, before)
            store.scale(app.procfile, before)
            raise DynosimError(
                f"ps:scale: the swarm cannot place {', '.join(f'{k}={n}' for k, n in counts.items())} ({error.why}); "
                f"put back to {', '.join(f'{k}={n}' for k, n in before.items())}: scale to fewer, or resize to a "
                "smaller dyno (ps:resize)"
            ) from None
        return dict(counts)


def restart_swarm(app_dir: Path, target: str | None = None) -> list[str]:
    """`heroku restart [TYPE|DYNO]` on the swarm: a process type's service force-updated (a rolling update,
    start-first, one task at a time, so no request is dropped), or one dyno's container stopped (SIGTERM,
    the 30 s grace) for the swarm to start its slot again; waited on until the new tasks run. The names of
    the dynos restarted."""
    with _engine("restart") as client:
        _, services = _deployment(client, app_dir, "restart")
        kind, _, slot = (target or "").partition(".")
        if target is not None and kind not in services:
            raise DynosimError(
                f"restart: no process type {kind!r} on the swarm (there: {', '.join(services)}); "
                "name a type (web) or a dyno (web.1)"
            )
        if slot:
            return [_restart_task(client, services[kind], kind, slot)]
        chosen = {k: s for k, s in services.items() if k == kind} if target else services
        names = [f"{k}.{n}" for k, service in chosen.items() for n in sorted(_slots(client, service["ID"]))]
        forced = {}
        for service in chosen.values():
            current = client.api.inspect_service(service["ID"])
            spec = current["Spec"]
            forced[current["ID"]] = int(spec["TaskTemplate"].get("ForceUpdate", 0)) + 1
            _update_spec(
                client,
                current,
                {**spec, "TaskTemplate": {**spec["TaskTemplate"], "ForceUpdate": forced[current["ID"]]}},
            )
        for service_id, force in forced.items():
            service = client.api.inspect_service(service_id)
            _wait_running(
                client,
                service_id,
                _replicas(service),
                (service["Spec"].get("Labels") or {}).get(LABEL_RELEASE),
                ROLL_TIMEOUT,
                service["Spec"]["Name"],
                force_update=force,
            )
        return names


def logs_swarm(app_dir: Path, *, n: int = 100, dyno: str | None = None, tail: bool = False) -> Iterator[str]:
    """`heroku logs [-n N] [-d web|web.1] [--tail]` on the swarm: the process services' logs (the engine's,
    timestamped), in Heroku's line format with each task's dyno; the last `n` of them, then (`tail`) every
    new one until the caller stops."""
    with _engine("logs") as client:
        _, services = _deployment(client, app_dir, "logs")
        kind = (dyno or "").partition(".")[0]
        if dyno is not None and kind not in services:
            raise DynosimError(
                f"logs: no process type {kind!r} on the swarm (there: {', '.join(services)}); "
                "--dyno takes a type (web) or a dyno (web.1)"
            )
        chosen = {k: s for k, s in services.items() if k == kind} if dyno else services
        names = _TaskNames(client)
        lines = sorted(
            (
                line
                for k, service in chosen.items()
                for raw in _service_logs(client, service["ID"], tail=n)
                if (line := _log_line(raw, k, service["ID"], names)) is not None and dyno in (None, k, line.dyno)
            ),
            key=lambda line: line.time,
        )[-n:]
    yield from (line.format() for line in lines)
    if tail:
        yield from _follow(client, chosen, dyno, names, max((line.time for line in lines), default=time.time()))


@contextmanager
def _engine(verb: str) -> Iterator[docker.DockerClient]:
    """The engine's client, and an engine error on the way (a swarm gone, a 503) as one line."""
    from docker.errors import DockerException

    client = connect()
    try:
        _ensure_manager(client, False, print, verb)
        yield client
    except DockerException as error:
        raise DynosimError(
            f"the Docker engine refused {verb} ({_reason(error)}); check `docker info` (is this node still a "
            "swarm manager?) and try again"
        ) from None


def _deployment(client: docker.DockerClient, app_dir: Path, verb: str) -> tuple[AppDir, dict[str, dict[str, Any]]]:
    """The app, and its process services on the swarm by process type (in the Procfile's order)."""
    app = load_app(app_dir.resolve())
    found = {
        (service["Spec"].get("Labels") or {}).get(LABEL_PROCESS, ""): service
        for service in client.api.services(
            filters={"label": [f"{LABEL_APP}={app_slug(app.name)}", f"{LABEL_ROLE}=process"]}
        )
    }
    if not found:
        raise DynosimError(
            f"{verb}: {app.name} is not deployed on this swarm: dynosim deploy --to swarm first "
            "(or drop --on swarm for the local run)"
        )
    order = list(app.procfile.formation_types)
    return app, dict(
        sorted(found.items(), key=lambda item: (order.index(item[0]) if item[0] in order else len(order), item[0]))
    )


def _slots(client: docker.DockerClient, service_id: str) -> dict[int, dict[str, Any]]:
    """The service's tasks meant to run, the newest of each slot (a rolling update has two a while)."""
    newest: dict[int, dict[str, Any]] = {}
    for task in client.api.tasks(filters={"service": service_id, "desired-state": "running"}):
        slot = int(task.get("Slot") or 0)
        if slot not in newest or task["Version"]["Index"] > newest[slot]["Version"]["Index"]:
            newest[slot] = task
    return newest


def _replicas(service: Mapping[str, Any]) -> int:
    return int(service["Spec"]["Mode"]["Replicated"]["Replicas"])


def _set_replicas(
    client: docker.DockerClient, services: Mapping[str, Mapping[str, Any]], counts: Mapping[str, int]
) -> None:
    for kind, count in counts.items():
        current = client.api.inspect_service(services[kind]["ID"])
        spec = current["Spec"]
        if _replicas(current) != count:
            _update_spec(client, current, {**spec, "Mode": {"Replicated": {"Replicas": count}}})


def _wait_stopped(client: docker.DockerClient, service: Mapping[str, Any], count: int, what: str) -> None:
    """Until the tasks a scale down removes have stopped (SIGTERM, their grace): until then they serve. The
    orchestrator marks them a moment after the update, so until then as many as before are meant to run."""
    deadline = time.monotonic() + STOP_GRACE_SECONDS + ROLL_TIMEOUT
    while True:
        tasks = client.api.tasks(filters={"service": service["ID"]})
        meant = [task for task in tasks if task["DesiredState"] == "running"]
        running = [task for task in tasks if task["Status"]["State"] == "running"]
        if len(meant) <= count and all(task["DesiredState"] == "running" for task in running):
            return
        if time.monotonic() > deadline:
            raise DynosimError(f"{what}: old tasks did not stop: see `docker service ps {service['Spec']['Name']}`")
        time.sleep(POLL)


def _restart_task(client: docker.DockerClient, service: Mapping[str, Any], kind: str, slot: str) -> str:
    """One dyno restarted: its task's container stopped as Heroku stops a dyno (SIGTERM, then SIGKILL after
    the grace), and the swarm's new task in its slot waited on until it runs."""
    name = f"{kind}.{slot}"
    task = _slots(client, service["ID"]).get(int(slot)) if slot.isdigit() else None
    container = ((task or {}).get("Status", {}).get("ContainerStatus") or {}).get("ContainerID")
    if task is None or not container:
        running = ", ".join(f"{kind}.{n}" for n in sorted(_slots(client, service["ID"]))) or "none"
        raise DynosimError(f"restart: no dyno {name} runs on the swarm (running: {running}); name one of them")
    here = (client.info().get("Swarm") or {}).get("NodeID")
    if task.get("NodeID") != here:
        raise DynosimError(
            f"restart: {name} runs on another node of the swarm, whose containers this engine cannot stop: "
            f"restart {kind} (a rolling restart of every {kind} dyno) instead"
        )
    client.api.stop(container, timeout=STOP_GRACE_SECONDS)
    deadline = time.monotonic() + ROLL_TIMEOUT
    while True:
        fresh = _slots(client, service["ID"]).get(int(slot))
        if fresh is not None and fresh["ID"] != task["ID"] and fresh["Status"]["State"] == "running":
            return name
        if time.monotonic() > deadline:
            raise DynosimError(
                f"restart: {name} did not run again within {ROLL_TIMEOUT:.0f}s: see `docker service ps "
                f"{service['Spec']['Name']}`"
            )
        time.sleep(POLL)


class _TaskNames:
    """Task id → dyno name (`web.2`), the service's tasks read again when a line names one not seen yet."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.names: dict[str, str] = {}
        self.lock = threading.Lock()  # _follow's readers share it

    def get(self, task_id: str, kind: str, service_id: str) -> str:
        with self.lock:
            if task_id not in self.names:
                for task in self.client.api.tasks(filters={"service": service_id}):
                    self.names[task["ID"]] = f"{kind}.{task.get('Slot') or 0}"
            return self.names.get(task_id, kind)


def _service_logs(client: docker.DockerClient, service_id: str, **options: Any) -> Iterator[bytes]:
    output = client.api.service_logs(service_id, stdout=True, stderr=True, timestamps=True, details=True, **options)
    return iter([output]) if isinstance(output, bytes) else iter(output)


def _log_line(raw: bytes, kind: str, service_id: str, names: _TaskNames) -> LogLine | None:
    """One of the engine's lines (`<RFC 3339 time> com.docker.swarm.node.id=…,…task.id=… <text>`) as the
    log stream's, from the dyno its task is."""
    when, _, rest = raw.decode(errors="replace").rstrip("\n").partition(" ")
    details, _, text = rest.partition(" ")
    try:
        seconds = _seconds(when)
    except ValueError:
        return None
    fields = dict(item.partition("=")[::2] for item in details.split(","))
    return LogLine(seconds, "app", names.get(fields.get("com.docker.swarm.task.id", ""), kind, service_id), text)


def _follow(
    client: docker.DockerClient,
    services: Mapping[str, Mapping[str, Any]],
    dyno: str | None,
    names: _TaskNames,
    since: float,
) -> Iterator[str]:
    """Every service's new lines as they come, one reader thread a service (the engine follows one at a time)."""
    lines: queue.Queue[LogLine] = queue.Queue()

    def read(kind: str, service_id: str) -> None:
        from docker.errors import DockerException

        try:
            for raw in _service_logs(client, service_id, follow=True, since=f"{since:.9f}"):
                line = _log_line(raw, kind, service_id, names)
                if line is not None and line.time > since and dyno in (None, kind, line.dyno):
                    lines.put(line)
        except DockerException:
            return  # the service removed (a destroy): no more lines from it

    for kind, service in services.items():
        threading.Thread(target=read, args=(kind, service["ID"]), daemon=True).start()
    while True:
        yield lines.get().format()


def _seconds(stamp: str) -> float:
    """The engine's RFC 3339 time (nanoseconds, Z) as a Unix time."""
    return datetime.fromisoformat(stamp).timestamp()


def _check_names(model: AppModel) -> None:
    """DynosimError when two process types would be one service (my_worker and my-worker: a swarm's names
    take no '_'), or one would be the router's or the release phase's."""
    taken = {f"{_dns(model.slug)}-router": "the router service", f"{_dns(model.slug)}-release": "the release phase"}
    for process in model.processes:
        name = _service_name(model, process.name)
        if name in taken:
            raise DynosimError(
                f"Procfile: process type {process.name!r} would be the swarm service {name}, as {taken[name]} is; "
                "rename one of them in the Procfile"
            )
        taken[name] = f"process type {process.name!r}"


def _with_external_vars(model: AppModel, config_vars: Mapping[str, str]) -> AppModel:
    """The vars of the add-ons that run elsewhere (--external-addons, a mail add-on), as the user set them
    (config:set, .env): each add-on's first var (DATABASE_URL, REDIS_URL) is needed, the others pass along."""
    external = [addon for addon in model.addons if addon.external]
    missing = [addon.var_names[0] for addon in external if addon.var_names and addon.var_names[0] not in config_vars]
    if missing:
        raise DynosimError(
            f"{', '.join(missing)} must say where the add-ons that run elsewhere are: "
            f"dynosim config:set {missing[0]}=... (or drop --external-addons)"
        )
    given = {name: config_vars[name] for addon in external for name in addon.var_names if name in config_vars}
    return replace(model, config_vars=MappingProxyType({**model.config_vars, **given})) if given else model


# --- the swarm ----------------------------------------------------------------------------------------


def _ensure_manager(client: docker.DockerClient, init: bool, say: Callable[[str], None], verb: str = "deploy") -> None:
    from docker.errors import APIError

    swarm = client.info().get("Swarm") or {}
    state = swarm.get("LocalNodeState")
    if state == "active":
        if not swarm.get("ControlAvailable"):
            raise DynosimError(f"this Docker engine is a swarm worker: {verb} from a manager node (docker node ls)")
        return
    if verb != "deploy":
        raise DynosimError(
            f"this Docker engine is not in a swarm ({state or 'inactive'}), so nothing is deployed on it: "
            "dynosim deploy --to swarm --init first (or point DOCKER_HOST at the swarm's manager)"
        )
    if not init:
        raise DynosimError(
            f"this Docker engine is not in a swarm ({state or 'inactive'}): run `docker swarm init` "
            "(one node is a swarm) or pass --init"
        )
    say("-----> docker swarm init (a single-node swarm)")
    try:
        client.swarm.init()
    except APIError as error:
        if "advertise" not in str(error):
            raise DynosimError(f"docker swarm init failed ({_reason(error)}); run it yourself to see why") from None
        client.swarm.init(advertise_addr="127.0.0.1")  # several interfaces and none chosen: loopback serves one node


def _network(client: docker.DockerClient, model: AppModel) -> str:
    """The app's overlay network: its dynos and add-ons find each other on it by service name."""
    name = f"dynosim-{_dns(model.slug)}"
    if not client.api.networks(names=[name]):
        client.api.create_network(name, driver="overlay", attachable=True, labels=_labels(model, "network"))
    return name


def _serving(client: docker.DockerClient, model: AppModel) -> str | None:
    """The release the process services run, if they all run one."""
    found = {
        (service["Spec"].get("Labels") or {}).get(LABEL_RELEASE)
        for service in client.api.services(filters={"label": [f"{LABEL_APP}={model.slug}", f"{LABEL_ROLE}=process"]})
    }
    return found.pop() if len(found) == 1 else None


def _router_port() -> int:
    text = os.environ.get("PORT") or str(ROUTER_PORT)
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise DynosimError(f"PORT={text!r}: not a port; set PORT to the port web is published on, or unset it")
    return int(text)


# --- add-ons ------------------------------------------------------------------------------------------


def _addon_service(
    client: docker.DockerClient, model: AppModel, addon: AddonModel, network: str, say: Callable[[str], None]
) -> None:
    """The add-on's service, made once (its data outlives every deploy), and waited on until it is healthy."""
    from docker.types import ContainerSpec, EndpointSpec, Healthcheck, Mount, RestartPolicy, ServiceMode, TaskTemplate

    found = client.api.services(filters={"name": addon.name})
    service_id = next((s["ID"] for s in found if s["Spec"]["Name"] == addon.name), None)
    if service_id is None:
        volume = f"{_dns(model.slug)}-{addon.name}"
        client.api.create_volume(volume, labels=_labels(model, "addon"))
        spec = ContainerSpec(
            addon.image,
            args=list(addon.command) if addon.command else None,
            env=dict(addon.environment),
            mounts=[Mount(addon.volume_path, volume)],
            labels=_labels(model, "addon"),
            stop_grace_period=STOP_GRACE_SECONDS * SECOND,
            healthcheck=Healthcheck(
                test=["CMD", *addon.healthcheck],
                interval=SECOND,
                timeout=5 * SECOND,
                retries=3,
                start_period=120 * SECOND,
            )
            if addon.healthcheck
            else None,
        )
        say(f"-----> Creating {addon.plan} as {addon.name} on the swarm")
        service_id = client.api.create_service(
            TaskTemplate(spec, restart_policy=RestartPolicy("any", delay=SECOND), networks=[network]),
            name=addon.name,
            labels=_labels(model, "addon"),
            mode=ServiceMode("replicated", replicas=1),
            # its name resolves to its task, not to a virtual IP, which needs the kernel's IPVS
            endpoint_spec=EndpointSpec(mode="dnsrr"),
        )["ID"]
    _wait_running(client, service_id, 1, None, ADDON_TIMEOUT, f"add-on {addon.name}")


# --- the release phase --------------------------------------------------------------------------------


def _release_phase(
    client: docker.DockerClient, model: AppModel, image: str, label: str, network: str, say: Callable[[str], None]
) -> None:
    """The release command once, in its own one-shot service; ReleaseError unless its task exits 0."""
    from docker.types import ContainerSpec, Resources, RestartPolicy, ServiceMode, TaskTemplate

    assert model.release_argv is not None
    name = f"{_dns(model.slug)}-release"
    for stale in client.api.services(filters={"name": name}):  # a deploy killed during its release phase
        client.api.remove_service(stale["ID"])
    version = label.removeprefix("v")
    size = SIZES[model.release_size]
    spec = ContainerSpec(
        image,
        args=list(model.release_argv),
        env=_env(
            model,
            {"DYNO": f"release.{version}", "DYNO_TYPE": "release", "PORT": DEFAULT_PORT, **model.size_env(size.name)},
        ),
        labels={**_labels(model, "release"), LABEL_RELEASE: label},
        init=True,
    )
    say(f"-----> Running release command for {label}: {model.release_command}")
    service_id = client.api.create_service(
        TaskTemplate(
            spec,
            resources=Resources(mem_limit=int(size.memory_mb * size.kill_factor) * MB),
            restart_policy=RestartPolicy("none"),
            networks=[network],
        ),
        name=name,
        labels={**_labels(model, "release"), LABEL_RELEASE: label},
        mode=ServiceMode("replicated", replicas=1),
    )["ID"]
    try:
        task = _wait_done(client, service_id, RELEASE_TIMEOUT)
        output = client.api.service_logs(service_id, stdout=True, stderr=True)
        text = output if isinstance(output, bytes) else b"".join(output)
        for line in text.decode(errors="replace").splitlines():
            say(f"       {line}")
    finally:
        client.api.remove_service(service_id)
    status = task["Status"]
    if status["State"] != "complete":
        code = (status.get("ContainerStatus") or {}).get("ExitCode")
        why = f"exit {code}" if code is not None else status.get("Err") or status["State"]
        raise ReleaseError(
            f"the release command of {label} failed ({why}): the swarm keeps serving the previous release; "
            "fix it and deploy again"
        )


# --- the formation ------------------------------------------------------------------------------------


def _process_service(
    client: docker.DockerClient,
    model: AppModel,
    process: ProcessModel,
    image: str,
    label: str,
    network: str,
    port: int | None,
) -> str:
    """The process type's service on `label`, made or updated; its id. web is published on `port` through
    the routing mesh; None: the mesh cannot route here, the router service publishes it."""
    from docker.types import (
        ContainerSpec,
        EndpointSpec,
        Healthcheck,
        Resources,
        RestartPolicy,
        ServiceMode,
        TaskTemplate,
        UpdateConfig,
    )

    labels = {**_labels(model, "process"), LABEL_PROCESS: process.name, LABEL_RELEASE: label}
    dyno = {
        "DYNO": f"{process.name}.{{{{.Task.Slot}}}}",
        "DYNO_TYPE": process.name,
        "PORT": DEFAULT_PORT,
        **model.size_env(process.size),  # DYNO_RAM, WEB_CONCURRENCY, as the Python buildpack sets them
    }
    spec = ContainerSpec(
        image,
        args=list(process.argv),
        env=_env(model, dyno),
        labels=labels,
        stop_grace_period=STOP_GRACE_SECONDS * SECOND,
        init=True,
        healthcheck=Healthcheck(
            test=["CMD", "python", "-c", LISTENING],
            interval=SECOND // 2,
            timeout=2 * SECOND,
            retries=3,
            start_period=60 * SECOND,
        )
        if process.web
        else None,
    )
    template = TaskTemplate(
        spec,
        resources=Resources(mem_limit=process.memory_limit_mb * MB, mem_reservation=process.memory_mb * MB),
        restart_policy=RestartPolicy("any", delay=SECOND),
        networks=[network],
    )
    options: dict[str, Any] = {
        "name": _service_name(model, process.name),
        "labels": {**labels, LABEL_SIZE: process.size},
        "mode": ServiceMode("replicated", replicas=process.quantity),
        "update_config": UpdateConfig(
            parallelism=1, order="start-first", failure_action="rollback", monitor=5 * SECOND
        ),
        "rollback_config": {"Parallelism": 1, "Order": "start-first"},
        "endpoint_spec": EndpointSpec(ports={port: int(DEFAULT_PORT)})
        if process.web and port is not None
        else EndpointSpec(mode="dnsrr" if port is None else "vip"),
    }
    found = [s for s in client.api.services(filters={"name": options["name"]}) if s["Spec"]["Name"] == options["name"]]
    if not found:
        return str(client.api.create_service(template, **options)["ID"])
    current = client.api.inspect_service(found[0]["ID"])
    client.api.update_service(current["ID"], current["Version"]["Index"], template, **options)
    return str(current["ID"])


def _routing_mesh(client: docker.DockerClient, say: Callable[[str], None]) -> bool:
    """Whether the swarm's routing mesh can route here: it balances with the kernel's IPVS, which some
    kernels lack (a local engine shares ours: /proc/sys/net/ipv4/vs is there when it has it)."""
    local = (os.environ.get("DOCKER_HOST") or "unix://").startswith("unix://")
    if not local or not sys.platform.startswith("linux") or Path("/proc/sys/net/ipv4/vs").is_dir():
        return True
    say(
        "       this kernel has no IPVS, which the swarm's routing mesh needs: web is published by a router "
        "service instead (one task, the port in host mode, connections spread over tasks.<web>)"
    )
    return False


def _router_service(client: docker.DockerClient, model: AppModel, base: str, network: str, port: int) -> str:
    """The routing mesh's stand-in: a TCP proxy on the base image (it outlives every release, so a deploy
    never restarts it), published on `port`, sending each connection to a healthy web task, round robin."""
    from docker.types import ContainerSpec, EndpointSpec, RestartPolicy, ServiceMode, TaskTemplate

    name = f"{_dns(model.slug)}-router"
    web = f"tasks.{_service_name(model, 'web')}"
    spec = ContainerSpec(
        base,
        command=["python3", "-c", ROUTER],
        env={"DYNOSIM_WEB": web, "PORT": DEFAULT_PORT},
        labels=_labels(model, "router"),
        init=True,
    )
    options: dict[str, Any] = {
        "name": name,
        "labels": _labels(model, "router"),
        "mode": ServiceMode("replicated", replicas=1),
        "endpoint_spec": EndpointSpec(mode="dnsrr", ports={port: (int(DEFAULT_PORT), "tcp", "host")}),
    }
    template = TaskTemplate(spec, restart_policy=RestartPolicy("any", delay=SECOND), networks=[network])
    found = [s for s in client.api.services(filters={"name": name}) if s["Spec"]["Name"] == name]
    if not found:
        return str(client.api.create_service(template, **options)["ID"])
    current = client.api.inspect_service(found[0]["ID"])
    if current["Spec"]["TaskTemplate"]["ContainerSpec"].get("Command") != spec["Command"]:
        client.api.update_service(current["ID"], current["Version"]["Index"], template, **options)
    return str(current["ID"])


def _formation_specs(client: docker.DockerClient, model: AppModel) -> dict[str, dict[str, Any]]:
    """The process and router services' specs before a deploy changes them, by service id."""
    return {
        service["ID"]: service["Spec"]
        for service in client.api.services(filters={"label": f"{LABEL_APP}={model.slug}"})
        if (service["Spec"].get("Labels") or {}).get(LABEL_ROLE) in ("process", "router")
    }


def _restore(client: docker.DockerClient, model: AppModel, before: Mapping[str, Mapping[str, Any]]) -> None:
    """A formation that did not come up put back as it was: the services this deploy made removed, the
    ones it changed given their spec of before (the swarm rolls them back, start-first)."""
    for service in client.api.services(filters={"label": f"{LABEL_APP}={model.slug}"}):
        spec = before.get(service["ID"])
        if (service["Spec"].get("Labels") or {}).get(LABEL_ROLE) not in ("process", "router"):
            continue
        if spec is None:
            client.api.remove_service(service["ID"])
        elif service["Spec"] != spec:
            _update_spec(client, service, spec)


def _update_spec(client: docker.DockerClient, service: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
    """The service (as inspected) given `spec` whole: every field the engine would otherwise reset."""
    client.api.update_service(
        service["ID"],
        service["Version"]["Index"],
        task_template=spec["TaskTemplate"],
        name=spec["Name"],
        labels=spec.get("Labels"),
        mode=spec.get("Mode"),
        update_config=spec.get("UpdateConfig"),
        rollback_config=spec.get("RollbackConfig"),
        endpoint_spec=spec.get("EndpointSpec"),
    )


def _remove_gone(client: docker.DockerClient, model: AppModel) -> None:
    """A process type no longer in the Procfile leaves the formation, as on Heroku."""
    kept = {process.name for process in model.processes}
    for service in client.api.services(filters={"label": [f"{LABEL_APP}={model.slug}", f"{LABEL_ROLE}=process"]}):
        if (service["Spec"].get("Labels") or {}).get(LABEL_PROCESS) not in kept:
            client.api.remove_service(service["ID"])


def _converge(client: docker.DockerClient, services: list[str], label: str) -> None:
    """Every process service running its replicas of `label`, its rolling update done; else one line."""
    deadline = time.monotonic() + ROLL_TIMEOUT
    for service_id in services:
        service = client.api.inspect_service(service_id)
        replicas = int(service["Spec"]["Mode"]["Replicated"]["Replicas"])
        _wait_running(client, service_id, replicas, label, deadline - time.monotonic(), service["Spec"]["Name"])


# --- waiting on tasks ---------------------------------------------------------------------------------


class Unplaceable(DynosimError):
    """A task the swarm leaves pending: no node has the memory it reserves (or matches its constraints)."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


def _wait_running(
    client: docker.DockerClient,
    service_id: str,
    replicas: int,
    label: str | None,
    timeout: float,
    what: str,
    *,
    force_update: int | None = None,
    rolling: bool = True,
) -> None:
    """Until `replicas` tasks of the service (of release `label`; of the forced update `force_update`) run,
    healthy where checked, and (`rolling`) no update is under way; a rollback, a task that cannot be placed
    (Unplaceable) or the timeout is one line."""
    deadline = time.monotonic() + timeout
    while True:
        service = client.api.inspect_service(service_id)
        update = (service.get("UpdateStatus") or {}).get("State") if rolling else None
        if update in ("rollback_started", "rollback_completed", "rollback_paused", "paused"):
            message = (service.get("UpdateStatus") or {}).get("Message", update)
            raise DynosimError(
                f"{what} did not start on the new release ({message}): the swarm rolled it back and the previous "
                f"release keeps serving; see `docker service logs {service['Spec']['Name']}`"
            )
        tasks = client.api.tasks(filters={"service": service_id, "desired-state": "running"})
        running = [
            t
            for t in tasks
            if t["Status"]["State"] == "running"
            and _task_release(t) in (label, None)
            and force_update in (None, t["Spec"].get("ForceUpdate", 0))
        ]
        if len(running) >= replicas and update in (None, "completed"):
            return
        stuck = next((t["Status"].get("Err", "") for t in tasks if t["Status"]["State"] == "pending"), "")
        if any(needle in stuck for needle in UNPLACEABLE):
            raise Unplaceable(
                f"the swarm cannot place {what} ({stuck}): the previous release keeps serving; scale it "
                "down or use smaller dyno sizes (dynosim ps:scale, ps:resize) and deploy again",
                stuck,
            )
        if time.monotonic() > deadline:
            failed = next((t["Status"].get("Err") for t in tasks if t["Status"].get("Err")), None)
            raise DynosimError(
                f"{what} did not run {replicas} healthy task(s) within {timeout:.0f}s"
                + (f" ({failed})" if failed else "")
                + f": see `docker service ps {service['Spec']['Name']}`"
            )
        time.sleep(POLL)


def _task_release(task: Mapping[str, Any]) -> str | None:
    labels = task["Spec"]["ContainerSpec"].get("Labels") or {}
    return labels.get(LABEL_RELEASE)


def _wait_done(client: docker.DockerClient, service_id: str, timeout: float) -> dict[str, Any]:
    """The one-shot service's task once it has ended (complete, failed, rejected)."""
    deadline = time.monotonic() + timeout
    while True:
        for task in client.api.tasks(filters={"service": service_id}):
            state = task["Status"]["State"]
            if state in ("complete", "failed", "rejected", "shutdown", "orphaned"):
                return dict(task)
            err = task["Status"].get("Err", "")
            if state == "pending" and any(needle in err for needle in UNPLACEABLE):
                raise ReleaseError(f"the swarm cannot place the release command ({err}); nothing was changed")
        if time.monotonic() > deadline:
            raise ReleaseError(f"the release command ran past {timeout:.0f}s; nothing was changed")
        time.sleep(POLL)


def _first_response(url: str, began: float) -> float | None:
    """Seconds from the deploy's start to web's first HTTP answer through the routing mesh."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return time.monotonic() - began
        except urllib.error.HTTPError:
            return time.monotonic() - began  # an answer, if not a 200: the app's own
        except OSError:
            time.sleep(0.05)
    return None


# --- names and labels ---------------------------------------------------------------------------------


def _labels(model: AppModel, role: str) -> dict[str, str]:
    return {LABEL_APP: model.slug, LABEL_ROLE: role}


def _env(model: AppModel, dyno: Mapping[str, str]) -> dict[str, str]:
    """The dyno's environment. Swarm reads `{{` in a value as a template: the config vars' are escaped."""
    escaped = {name: value.replace("{{", '{{"{{"}}') for name, value in model.environment.items()}
    return {**escaped, **dyno}


def _service_name(model: AppModel, process: str) -> str:
    return f"{_dns(model.slug)}-{_dns(process)}"


def _dns(name: str) -> str:
    """A service name a swarm accepts and its DNS resolves: letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "app"


def _reason(error: Exception) -> str:
    return str(getattr(error, "explanation", None) or error).splitlines()[0]


def _retry(call: Callable[[str], object], name: str, errors: tuple[type[Exception], ...], deadline: float) -> None:
    """A removal the engine refuses while a task's container is still going away."""
    from docker.errors import NotFound

    while True:
        try:
            call(name)
            return
        except NotFound:
            return  # gone already
        except errors:
            if time.monotonic() > deadline:
                raise
            time.sleep(POLL)
