"""Creating an add-on's container through testcontainers (imported only here, on the cold path).

testcontainers' `DockerContainer` describes the container (image, env, command, name, volume, labels,
extra create options) and `start()` creates and starts it and waits with a `WaitStrategy`; ours probes
the service through the published port. Two things are set around it:

- Ryuk is off for the call (and restored after): it would remove the container when dynosim exits,
  and the add-on must outlive the run. dynosim's own watcher stops it instead (docker_reaper.py).
- The port is published on 127.0.0.1 only: `with_bind_ports` can only bind every interface, so the
  port map gets the (address, port) form docker-py accepts.

Not used: `PostgresContainer` (its readiness runs psql inside the container once a second, and its
env is the same three variables we set), `RedisContainer` (it needs redis-py at import time, and has
no append-only file), `ElasticSearchContainer` (it sets `http.host`/`transport.host` for ES only).
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.waiting_utils import WaitStrategy, WaitStrategyTarget

from dynosim.addons.processes import HOST, READY_POLL
from dynosim.addons.spec import ServiceSpec

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import docker
    from docker.models.containers import Container

    from dynosim.addons.services.base import Service


class Answers(WaitStrategy):
    """Ready when `ready` (the docker backend's wait_ready: a real client from the host) returns."""

    def __init__(self, ready: Callable[[WaitStrategyTarget], object], timeout: float) -> None:
        super().__init__()
        self.ready = ready
        self.with_startup_timeout(timedelta(seconds=timeout)).with_poll_interval(READY_POLL)

    def wait_until_ready(self, container: WaitStrategyTarget) -> None:
        self.ready(container)


def create(
    client: docker.DockerClient,
    spec: ServiceSpec,
    recipe: Service,
    *,
    image: str,
    name: str,
    volume: str,
    labels: dict[str, str],
    settings: dict[str, Any],
    ready: Callable[[WaitStrategyTarget], object],
) -> Container:
    """Creates, starts and waits for the add-on's container; returns it as docker-py's object."""
    tc = DockerContainer(
        image,
        # the engine's API version, known already: testcontainers' client would ask /version for it (≈ 10 ms)
        docker_client_kw={"version": client.api.api_version},
        command=settings["command"],
        env=dict(settings["env"]),
        name=name,
    )
    # create() options; the default network named here spares testcontainers its search for another
    tc.with_kwargs(labels=labels, network="bridge", **settings["options"])
    tc.ports[f"{recipe.container_port}/tcp"] = (HOST, spec.port)  # type: ignore[assignment]
    tc.with_volume_mapping(volume, settings["data"], "rw")
    for host_path, container_path in settings.get("mounts", {}).items():
        tc.with_volume_mapping(host_path, container_path, "ro")
    tc.waiting_for(Answers(ready, recipe.ready_timeout))
    try:
        with _ryuk_off():
            tc.start()
        # docker-py's object on our client, from what testcontainers' create read (no look-up more);
        # its status says "created", and only its id and name are used from here
        return client.containers.prepare_model(tc.get_wrapped_container().attrs)
    finally:
        tc.get_docker_client().client.close()


@contextmanager
def _ryuk_off() -> Iterator[None]:
    before = testcontainers_config.ryuk_disabled
    testcontainers_config.ryuk_disabled = True
    try:
        yield
    finally:
        testcontainers_config.ryuk_disabled = before
