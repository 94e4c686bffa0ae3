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

Everything made carries the `dynosim.swarm.app` label (the app's name as tags have it), which is how
destroy finds all of it.
"""

from __future__ import annotations

import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .app import load_app
from .buildpack import build_slug, default_cache_dir
from .errors import DynosimError, ReleaseError
from .export.model import ROUTER_PORT, STOP_GRACE_SECONDS, AddonModel, AppModel, ProcessModel, app_model
from .formation import SIZES
from .image import DEFAULT_PORT, connect, default_base, release_image
from .releases import ReleaseHistory

if TYPE_CHECKING:
    import docker

LABEL_APP = "dynosim.swarm.app"
LABEL_ROLE = "dynosim.swarm.role"  # "process", "release", "addon"
LABEL_PROCESS = "dynosim.swarm.process"
LABEL_RELEASE = "dynosim.release"
SECOND = 1_000_000_000  # the engine's durations are in nanoseconds
MB = 2**20
POLL = 0.25
ADDON_TIMEOUT = 180.0  # an add-on's first boot: initdb, its health check
RELEASE_TIMEOUT = 3600.0  # Heroku lets a release command run for an hour
ROLL_TIMEOUT = 300.0  # every process service onto the release
UNPLACEABLE = ("insufficient resources", "no suitable node")
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

    from .export.model import app_slug

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


def _ensure_manager(client: docker.DockerClient, init: bool, say: Callable[[str], None]) -> None:
    from docker.errors import APIError

    swarm = client.info().get("Swarm") or {}
    state = swarm.get("LocalNodeState")
    if state == "active":
        if not swarm.get("ControlAvailable"):
            raise DynosimError("this Docker engine is a swarm worker: deploy from a manager node (docker node ls)")
        return
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
        "name": f"{_dns(model.slug)}-{_dns(process.name)}",
        "labels": labels,
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
    web = f"tasks.{_dns(model.slug)}-web"
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


def _wait_running(
    client: docker.DockerClient, service_id: str, replicas: int, label: str | None, timeout: float, what: str
) -> None:
    """Until `replicas` tasks of the service (of release `label`) run, healthy where checked, and no update
    is under way; a rollback, a task that cannot be placed or the timeout is one line."""
    deadline = time.monotonic() + timeout
    while True:
        service = client.api.inspect_service(service_id)
        update = (service.get("UpdateStatus") or {}).get("State")
        if update in ("rollback_started", "rollback_completed", "rollback_paused", "paused"):
            message = (service.get("UpdateStatus") or {}).get("Message", update)
            raise DynosimError(
                f"{what} did not start on the new release ({message}): the swarm rolled it back and the previous "
                f"release keeps serving; see `docker service logs {service['Spec']['Name']}`"
            )
        tasks = client.api.tasks(filters={"service": service_id, "desired-state": "running"})
        running = [t for t in tasks if t["Status"]["State"] == "running" and _task_release(t) in (label, None)]
        if len(running) >= replicas and update in (None, "completed"):
            return
        stuck = next((t["Status"].get("Err", "") for t in tasks if t["Status"]["State"] == "pending"), "")
        if any(needle in stuck for needle in UNPLACEABLE):
            raise DynosimError(
                f"the swarm cannot place {what} ({stuck}): the previous release keeps serving; scale it "
                "down or use smaller dyno sizes (dynosim ps:scale, ps:resize) and deploy again"
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
