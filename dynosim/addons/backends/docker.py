"""The docker backend: each add-on is a long-lived container of an official image, reused from run to run.

A container is found again by its labels (`dynosim.app` = a hash of the app's state folder,
`dynosim.addon` = the add-on's name) and is named `dynosim-<add-on name>`; its data lives in the named
volume `dynosim-<add-on name>`, so it outlives the container (which carries the volume's id label too,
`dynosim.volume-id`, so that a warm start need not look the volume up). A later run starts the stopped container
(or adopts one still running) instead of creating another: that is the warm start. A container whose
settings changed (image, port, password, command) is replaced, its volume kept. Stopping is a graceful
`docker stop`; nothing here ever removes a volume.

testcontainers creates new containers (`docker_tc.py`): its lifecycle is built for throwaway
containers (stop removes, Ryuk removes at exit, no reuse), so finding, starting, stopping and volumes
are docker-py's, here.

When dynosim is killed (SIGKILL), its containers are stopped all the same, gracefully, within about a
second, by a watcher process (`docker_reaper.py`, the Ryuk idea without an image): dynosim talks to it
over a pipe, and a pipe closed without a goodbye means dynosim died. The watcher holds the app's
`addons/docker.lock` until it is done, so the next run waits for it, then finds the stopped containers
and starts them. Should the watcher die too, the next run adopts whatever container still runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.constants
import docker.errors
import requests

from dynosim.addons import certs
from dynosim.addons.processes import (
    HOST,
    POLL,
    READY_POLL,
    Child,
    Spawner,
    accepts,
    check_port,
    check_tls_port,
)
from dynosim.addons.services import SERVICES
from dynosim.addons.spec import Endpoint, Running, ServiceSpec
from dynosim.errors import AddonError
from dynosim.privatefile import private_folder

if importlib.util.find_spec("testcontainers") is None:  # imported only when a container is made
    raise ImportError("No module named 'testcontainers'")

if TYPE_CHECKING:
    from docker.models.containers import Container

    from dynosim.addons.services.base import Service

READY_LATE = 0.05  # later, at most this share of the wait so far between two (up to POLL): the lag a probe adds
STATUS_EVERY = 0.25  # seconds between looks at the container's state while waiting
STOP_TIMEOUT = 30  # seconds `docker stop` waits before SIGKILL (Postgres checkpoints on the way out)
PROBE_TIMEOUT = 10  # seconds for the engine to answer the first call
API_TIMEOUT = 120  # seconds for any later call (pulls stream, stops add STOP_TIMEOUT themselves)
LOCK_WAIT = 60.0  # seconds to wait for a previous run's watcher to stop its containers
# what docker-py raises: its own errors, and requests' when the engine stops answering mid-run
ENGINE_ERRORS = (docker.errors.DockerException, requests.RequestException)
LABEL_APP = "dynosim.app"
LABEL_ADDON = "dynosim.addon"
LABEL_SERVICE = "dynosim.service"
LABEL_CONFIG = "dynosim.config"
LABEL_STATE = "dynosim.state-dir"
LABEL_VOLUME = "dynosim.volume-id"
# The watcher, run as a file: `-m` would import the dynosim.addons package first (≈ 90 ms of CPU, on the
# cores the engine is starting the container with); -P keeps this folder, with its docker.py, off sys.path;
# -S leaves site (≈ 20 ms) until there is something to stop.
REAPER = ("-P", "-S", str(Path(__file__).with_name("docker_reaper.py")))


class NoEngine(Exception):
    """No Docker engine answers; `reason` says where we looked and what happened, in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def probe() -> tuple[docker.DockerClient, str]:
    """A client of the engine that answers, and the engine's version; NoEngine when none does.

    One unversioned /_ping: its headers carry the API version docker-py would have asked /version for
    and, from Docker's engine, the engine's version (`Server: Docker/20.10.24 (linux)`). /version,
    which the engine answers only after asking containerd and runc theirs, is ≈ 10 ms; a ping, ≈ 1.
    Another engine (Podman says `Libpod/…`) is asked /version as before."""
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        # the version given only so that docker-py does not ask for it; the ping's replaces it
        client = docker.from_env(version=docker.constants.MINIMUM_DOCKER_API_VERSION, timeout=PROBE_TIMEOUT)
        answer = client.api._get(client.api._url("/_ping", versioned_api=False))
        client.api._raise_for_status(answer)
        api = answer.headers.get("Api-Version")
        client.api._version = api or client.api._retrieve_server_version()
        server = re.match(r"Docker/(\S+)", answer.headers.get("Server", ""))
        version = server.group(1) if server and api else str(client.version().get("Version") or "?")
    except Exception as error:  # docker-py raises DockerException, requests errors, OSError…
        raise NoEngine(f"{where}: {_why(error)}") from None
    client.api.timeout = API_TIMEOUT
    return client, version


def _why(error: BaseException) -> str:
    text = str(error)
    for needle, meaning in (
        ("FileNotFoundError", "no such socket"),
        ("No such file", "no such socket"),
        ("ConnectionRefused", "connection refused"),
        ("Connection refused", "connection refused"),
        ("PermissionError", "permission denied (is your user in the docker group?)"),
        ("Permission denied", "permission denied (is your user in the docker group?)"),
        ("timed out", "timed out"),
    ):
        if needle in text:
            return meaning
    text = re.sub(r"^Error while fetching server API version: ", "", text)
    return text.splitlines()[0][:200] if text else type(error).__name__


class EngineUnavailable(AddonError):
    """The docker backend was asked for and no engine answers; `reason` says where we looked and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"--addons docker: no Docker engine answers ({reason}); start Docker or run with --addons native"
        )
        self.reason = reason


class DockerBackend:
    name = "docker"

    def __init__(
        self,
        say: Callable[[str], None],
        client: docker.DockerClient | None = None,
        engine: str | None = None,
    ) -> None:
        if client is None:
            try:
                client, engine = probe()
            except NoEngine as error:
                raise EngineUnavailable(error.reason) from None
        self.say = say
        self.client = client
        self.engine = engine or "?"
        self._guard: Guard | None = None
        self.found: dict[str, object] = {}  # looked up once per run: the certificates
        self.spawner: Spawner | None = None  # forks the TLS proxies (native.Spawner), made when one is needed

    def start(self, spec: ServiceSpec) -> Running:
        recipe = SERVICES.get(spec.service)
        if recipe is None or not recipe.default_image:
            raise AddonError(f"{spec.label}: the docker backend cannot run a {spec.service} service")
        guard = self._guard_for(spec)
        try:
            service = start_service(self, spec, recipe, guard)
        except ENGINE_ERRORS as error:  # an engine error we did not foresee: still one line
            raise AddonError(f"{spec.label}: the Docker engine failed: {_explain(error)}") from None
        if spec.tls_port is None:
            return service
        try:
            service.proxy = self._tls_proxy(spec)
        except BaseException:
            service.stop()
            raise
        return service

    def _tls_proxy(self, spec: ServiceSpec) -> Child:
        """https on spec.tls_port in front of the container's plain port (SEARCHBOX_SSL_URL): an Elasticsearch
        container without its security plugin has no TLS. dynosim's child, as the native servers are."""
        check_tls_port(spec)
        chain = certs.server_cert(self.found, self.say)
        if self.spawner is None:
            self.spawner = Spawner()
        child = Child.spawn(
            self.spawner,
            [sys.executable, "-m", "dynosim.addons.tlsproxy", "--port", str(spec.tls_port),
             "--to", f"{HOST}:{spec.port}", "--cert", str(chain.cert), "--key", str(chain.key)],
            what="the TLS proxy",
            label=spec.label,
            log=spec.folder / "tlsproxy.log",
            stop_signal=signal.SIGTERM,
            death_signal=signal.SIGTERM,
        )  # fmt: skip
        took = child.wait_ready(lambda: accepts(spec.tls_port or 0))
        self.say(f"{spec.label}: https on {HOST}:{spec.tls_port} (dynosim's TLS proxy) in {took * 1000:.0f} ms")
        return child

    def close(self) -> None:
        if self._guard is not None:
            self._guard.release()
            self._guard = None
        if self.spawner is not None:
            self.spawner.close()
            self.spawner = None
        self.client.close()

    def _guard_for(self, spec: ServiceSpec) -> Guard:
        state_dir = spec.folder.parent.parent
        if self._guard is None:
            self._guard = Guard.take(spec.folder.parent, self.say)
        elif self._guard.folder != spec.folder.parent:
            raise AddonError(f"one docker backend serves one app; {state_dir} is another")  # our bug
        return self._guard


# --- one add-on's container ------------------------------------------------------------------------


class RunningContainer:
    """A started add-on container: what `Addons` holds and stops."""

    backend = "docker"

    def __init__(self, container: Container, endpoint: Endpoint, label: str) -> None:
        self.container = container
        self.endpoint = endpoint
        self.label = label
        self.proxy: Child | None = None  # the TLS proxy in front of it, if any

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        try:
            self.container.stop(timeout=STOP_TIMEOUT)  # SIGTERM/the image's stop signal, then SIGKILL
        except docker.errors.NotFound:
            pass  # removed behind our back: nothing left to stop
        except ENGINE_ERRORS as error:
            raise AddonError(
                f"{self.label}: stopping container {_name(self.container)} failed: {_explain(error)}"
            ) from None


def start_service(backend: DockerBackend, spec: ServiceSpec, recipe: Service, guard: Guard) -> RunningContainer:
    client = backend.client
    state_dir = spec.folder.parent.parent
    addon = spec.folder.name
    name = f"dynosim-{addon}"
    image = recipe.image()
    settings = recipe.settings(spec, image)
    labels = {
        LABEL_APP: app_id(state_dir),
        LABEL_ADDON: addon,
        LABEL_SERVICE: spec.service,
        LABEL_STATE: str(state_dir),
        LABEL_CONFIG: fingerprint(image, spec.port, settings),
    }
    private_folder(spec.folder)
    guard.watch(name)  # from here on, the watcher stops this container should dynosim die
    try:
        return _started(backend, spec, recipe, name, image, settings, labels)
    except BaseException:
        # a failed or interrupted start (a Ctrl-C while it is made or waited on) never reaches Addons,
        # which stops what it holds, and the run's end sends the watcher away: stopped here, or left running
        _stop_unreached(client, name, labels)
        raise


def _started(
    backend: DockerBackend,
    spec: ServiceSpec,
    recipe: Service,
    name: str,
    image: str,
    settings: dict[str, Any],
    labels: dict[str, str],
) -> RunningContainer:
    client = backend.client
    volume = name  # the add-on's named volume is called as its container is
    # the files it mounts (certificates, 5-25 ms) made while the engine is asked what exists and, for a
    # new container, makes its volume (each 2-15 ms)
    volume_id: str | None = None
    with ThreadPoolExecutor(2) as pool:
        prepared = pool.submit(recipe.prepare, spec, backend.found, backend.say)
        listed = pool.submit(image_id, client, image)
        container = find(client, labels)
        local_image = listed.result()
        made = container is None and local_image is not None
        if made:
            volume_id = ensure_volume(client, volume, labels, spec)
        prepared.result()
    if container is not None:
        changed = _changed(container, labels, local_image)
        if changed:
            backend.say(
                f"{spec.label}: {changed} since container {name} was made; replacing it "
                f"(the data stays in volume {volume})"
            )
            container.stop(timeout=STOP_TIMEOUT)
            container.remove(v=True)  # v: anonymous volumes only; named volumes are never removed
            container = None

    begun = time.monotonic()
    if container is None:
        how = f"new container {name}"
        if local_image is None:
            pull(backend, spec, recipe, image)
        if not made:  # after a pull (one that fails leaves no volume), or for a replaced container's volume
            volume_id = ensure_volume(client, volume, labels, spec)
        check_port(spec)
        begun = time.monotonic()
        from dynosim.addons.backends.docker_tc import create

        try:
            container = create(
                client, spec, recipe, image=image, name=name, volume=volume, settings=settings,
                labels={**labels, LABEL_VOLUME: volume_id} if volume_id else labels,
                ready=lambda made: wait_ready(made, lambda: recipe.probe(spec), recipe.ready_timeout, spec.label),
            )  # fmt: skip
        except docker.errors.APIError as error:
            if error.status_code == 409:  # the name is taken (looked up only then: one call fewer per create)
                _check_name_free(client, name, spec)
            raise
    else:
        volume_id = _labels(container).get(LABEL_VOLUME)
        if container.status == "running":
            how = f"container {name} was running"
            backend.say(f"{spec.label}: container {name} from an earlier run still runs; reusing it")
        else:
            how = f"container {name} started"
            check_port(spec)
            try:
                container.start()
            except docker.errors.APIError as error:
                raise AddonError(f"{spec.label}: starting container {name} failed: {_explain(error)}") from None
        wait_ready(container, lambda: recipe.probe(spec), recipe.ready_timeout, spec.label)
    took = time.monotonic() - begun

    recipe.provision_container(container, spec, volume_identity(client, volume, volume_id))
    backend.say(
        f"{spec.label}: {recipe.image_title(image)} (docker, {image}) ready on {HOST}:{spec.port} in "
        f"{took * 1000:.0f} ms ({how})"
    )
    return RunningContainer(container, recipe.endpoint(spec), spec.label)


def _stop_unreached(client: docker.DockerClient, name: str, labels: Mapping[str, str]) -> None:
    """Stops container `name` if it is this add-on's (a name taken by another app's is not ours to stop);
    quiet, as the error that brought us here is what is said."""
    try:
        found = client.api.inspect_container(name)
        if (found.get("Config", {}).get("Labels") or {}).get(LABEL_STATE) == labels[LABEL_STATE]:
            client.api.stop(name, timeout=STOP_TIMEOUT)
    except ENGINE_ERRORS:
        pass  # never made, or the engine is what failed: the watcher's next run, or `docker ps`, has it


def wait_ready(container: Any, answers: Callable[[], bool], timeout: float, label: str) -> float:
    """Polls `answers` (a real connection from the host) until it says yes; returns the seconds it took.

    `container` is a docker-py container or a testcontainers one: only reload(), status and name are used.
    The container's exit is an error with its last log line.
    """
    started = time.monotonic()
    look = started + STATUS_EVERY
    while True:
        if answers():
            return time.monotonic() - started
        now = time.monotonic()
        if now >= look:
            container.reload()
            if container.status in ("exited", "dead"):
                wrapped = getattr(container, "get_wrapped_container", lambda: container)()
                raise AddonError(
                    f"{label}: container {_name(wrapped)} exited while starting "
                    f"(status {wrapped.attrs.get('State', {}).get('ExitCode', '?')}): {last_log_line(wrapped)}; "
                    f"see `docker logs {_name(wrapped)}`"
                )
            look = now + STATUS_EVERY
        if now - started > timeout:
            wrapped = getattr(container, "get_wrapped_container", lambda: container)()
            wrapped.stop(timeout=STOP_TIMEOUT)
            raise AddonError(
                f"{label}: container {_name(wrapped)} did not accept connections within {timeout:g} s "
                f"(last log line: {last_log_line(wrapped)}); see `docker logs {_name(wrapped)}`"
            )
        time.sleep(min(max((now - started) * READY_LATE, READY_POLL), POLL))


def last_log_line(container: Container) -> str:
    try:
        lines = [line.strip() for line in container.logs(tail=20).decode("utf-8", "replace").splitlines()]
    except ENGINE_ERRORS:
        return "(no log)"
    lines = [line for line in lines if line]
    return lines[-1] if lines else "(empty log)"


# --- finding what an earlier run left --------------------------------------------------------------


def app_id(state_dir: Path) -> str:
    return hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()[:16]


def fingerprint(image: str, port: int, settings: dict[str, Any]) -> str:
    text = json.dumps({"image": image, "port": port, **settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def find(client: docker.DockerClient, labels: dict[str, str]) -> Container | None:
    """This add-on's container, running or not (the newest, should there be several), as the list
    describes it (sparse: no inspect of each; its Labels, ImageID, State and Names are all that is read)."""
    found = client.containers.list(
        all=True,
        sparse=True,
        filters={"label": [f"{LABEL_APP}={labels[LABEL_APP]}", f"{LABEL_ADDON}={labels[LABEL_ADDON]}"]},
    )
    if not found:
        return None
    found.sort(key=lambda c: c.attrs.get("Created", 0), reverse=True)
    return found[0]


def _labels(container: Container) -> dict[str, str]:
    """A container's labels, from a list's description of it (sparse) or an inspect's."""
    return container.attrs.get("Labels") or container.attrs.get("Config", {}).get("Labels") or {}


def _name(container: Container) -> str:
    """A container's name, from an inspect's description of it or a list's (sparse)."""
    return str(container.name or (container.attrs.get("Names") or ["?"])[0].lstrip("/"))


def _changed(container: Container, labels: dict[str, str], local_image: str | None) -> str | None:
    if _labels(container).get(LABEL_CONFIG) != labels[LABEL_CONFIG]:
        return "its settings (image, port, password or command) changed"
    if local_image is not None and container.attrs.get("ImageID", container.attrs.get("Image")) != local_image:
        return "its image was updated"
    return None


def _check_name_free(client: docker.DockerClient, name: str, spec: ServiceSpec) -> None:
    try:
        other = client.containers.get(name)
    except docker.errors.NotFound:
        return
    raise AddonError(
        f"{spec.label}: a container named {name} exists but is not this app's (its {LABEL_APP} label is "
        f"{other.labels.get(LABEL_APP)!r}); remove it with `docker rm -f {name}` if it is not needed"
    )


def image_id(client: docker.DockerClient, image: str) -> str | None:
    try:
        return str(client.images.get(image).id)
    except docker.errors.ImageNotFound:
        return None


def pull(backend: DockerBackend, spec: ServiceSpec, recipe: Service, image: str) -> None:
    backend.say(f"{spec.label}: pulling {image} (first time only)…")
    try:
        backend.client.images.pull(image)
    except ENGINE_ERRORS as error:
        raise AddonError(
            f"{spec.label}: cannot pull the image {image} ({_explain(error)}); set {recipe.image_var} to an "
            "image this engine has (see `docker images`) or can pull"
        ) from None


def ensure_volume(client: docker.DockerClient, name: str, labels: dict[str, str], spec: ServiceSpec) -> str | None:
    """The add-on's data volume, made when missing; its id label (see volume_identity). Docker's engine
    answers a create of a name in use with that volume as it is (its labels unchanged): one call where a
    look-up first would be two; Podman refuses it (409), and is then asked for the volume."""
    keep = {k: labels[k] for k in (LABEL_APP, LABEL_ADDON, LABEL_SERVICE, LABEL_STATE)}
    try:
        volume = client.volumes.create(name, labels={**keep, LABEL_VOLUME: uuid.uuid4().hex})
    except docker.errors.APIError as error:
        if error.status_code != 409:
            raise
        volume = client.volumes.get(name)
    found = volume.attrs.get("Labels") or {}
    owner = found.get(LABEL_APP)
    if owner not in (None, labels[LABEL_APP]):
        raise AddonError(
            f"{spec.label}: the volume {name} holds another app's data ({LABEL_APP}={owner}); nothing was "
            f"changed. Delete this add-on's record from {spec.folder.parent.parent / 'addons.json'} to get a new name"
        )
    return found.get(LABEL_VOLUME)


def volume_identity(client: docker.DockerClient, name: str, known: str | None = None) -> str:
    """What tells this data volume from another of the same name (one made after a `docker volume rm`):
    the id label it was created with. (Its CreatedAt will not do: the local driver reports the
    folder's mtime.) A volume made by hand has none, and is then provisioned on every start. `known`:
    the label as the add-on's container has it (dynosim.volume-id, set when it was made): a volume in
    use cannot be removed, so a container's is still the one it was made on. Looked up without it."""
    if known is None:
        try:
            known = (client.volumes.get(name).attrs.get("Labels") or {}).get(LABEL_VOLUME)
        except docker.errors.NotFound:
            pass
    return f"{name}@{known or uuid.uuid4().hex}"


def _explain(error: BaseException) -> str:
    text = getattr(error, "explanation", None) or str(error)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


# --- when dynosim dies -----------------------------------------------------------------------------


class Guard:
    """The app's docker lock and the watcher process that stops our containers if dynosim dies.

    The lock (flock on `<state_dir>/addons/docker.lock`) is shared with the watcher through an
    inherited file descriptor, so it stays held until both are gone: a new run waits for a dead run's
    watcher to finish stopping the containers, and two live runs of one app do not share containers.
    """

    def __init__(self, folder: Path, lock_fd: int, watcher: subprocess.Popen[bytes]) -> None:
        self.folder = folder
        self.lock_fd = lock_fd
        self.watcher = watcher

    @classmethod
    def take(cls, folder: Path, say: Callable[[str], None]) -> Guard:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "docker.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            _lock(fd, path, say)
            with open(folder / "docker-reaper.log", "ab") as log:  # the watcher has its own copy
                watcher = subprocess.Popen(
                    [sys.executable, *REAPER, "--lock-fd", str(fd)],
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(fd,),
                    start_new_session=True,  # a Ctrl-C meant for dynosim must not reach it
                )
        except BaseException:
            os.close(fd)
            raise
        return cls(folder, fd, watcher)

    def watch(self, name: str) -> None:
        self._tell(f"watch {name}")

    def release(self) -> None:
        """dynosim stopped its containers itself: the watcher leaves, and the lock is free."""
        self._tell("release")
        try:
            if self.watcher.stdin is not None:
                self.watcher.stdin.close()
        except OSError:
            pass
        try:
            self.watcher.wait(10)
        except subprocess.TimeoutExpired:
            self.watcher.kill()
            self.watcher.wait()
        os.close(self.lock_fd)

    def _tell(self, line: str) -> None:
        assert self.watcher.stdin is not None
        try:
            self.watcher.stdin.write(line.encode() + b"\n")
            self.watcher.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # the watcher is gone; the next run adopts what it finds


def _lock(fd: int, path: Path, say: Callable[[str], None]) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    say(f"add-ons: waiting for the previous run's containers to stop (lock {path})")
    deadline = time.monotonic() + LOCK_WAIT
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            continue
    raise AddonError(
        f"another dynosim run uses this app's docker add-ons (it holds {path}); stop it first, "
        "or run this one with --addons native"
    )
