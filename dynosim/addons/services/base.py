"""What every add-on service is, the same shape for each, the way testcontainers has one module per
service: a subclass of `Service` in services/<name>.py, whose one instance both backends and the
catalogue use.

- What the app is given: `endpoint` (where it answers, how to log in), `var_names` and `config_vars`
  (the config vars Heroku's add-on sets, in its formats).
- `probe`: whether it answers yet, as a client of the app would find out, whichever backend runs it.
- `start_native`: the native backend runs it as dynosim's child, ready when this returns.
- The docker backend's recipe: its image (overridable by an environment variable: a mirror, a local
  build, another version), environment, command, data path, mounts, the files it mounts (`prepare`),
  and what the app needs in it that the image does not make (`provision_container`). A service that
  has no image (`embedded`) runs natively under --addons docker too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from dynosim.addons.spec import Attached, Endpoint, Running, ServiceSpec

if TYPE_CHECKING:
    from docker.models.containers import Container

    from dynosim.addons.processes import Host

TLS_MOUNT = "/dynosim/tls"  # the add-on's tls/ folder (certificate, key…), mounted read-only in its container
TLS_DIR = "/etc/dynosim-tls"  # the server's own copies, owned by its user


class Service:
    name: ClassVar[str]  # "postgres": the catalogue's and addons.json's word for it
    title: ClassVar[str]  # how the ready line names it: "PostgreSQL"
    embedded: ClassVar[bool] = False  # no official image: dynosim runs it itself, on either backend

    # --- what the app is given ------------------------------------------------------------------

    def endpoint(self, spec: ServiceSpec) -> Endpoint:
        raise NotImplementedError

    def var_names(self, attached: Attached) -> list[str]:
        """The config vars it sets, without values (what `dynosim config` can list before it starts)."""
        return attached.names()

    def config_vars(self, attached: Attached, endpoint: Endpoint, keys: Mapping[str, str]) -> dict[str, str]:
        """The config vars it sets for the app, in Heroku's formats. `keys`: what the add-on hands out
        besides its endpoint (Mailgun's "domain", an "api_key")."""
        raise NotImplementedError

    # --- readiness ------------------------------------------------------------------------------

    def probe(self, spec: ServiceSpec) -> bool:
        """True once it answers on spec.port as the app's client would have it (a real connection from
        the host, through a container's published port), not merely once the port accepts."""
        raise NotImplementedError

    # --- the native backend ---------------------------------------------------------------------

    def start_native(self, spec: ServiceSpec, host: Host) -> Running:
        raise NotImplementedError

    # --- the docker backend ---------------------------------------------------------------------

    image_var: ClassVar[str] = ""  # the environment variable that overrides the image
    default_image: ClassVar[str] = ""  # "": no image, the docker backend cannot run it
    container_port: ClassVar[int] = 0  # where it listens inside its container
    ready_timeout: ClassVar[float] = 60.0

    def image(self) -> str:
        return os.environ.get(self.image_var) or self.default_image

    def image_title(self, image: str) -> str:
        return self.title

    def data_path(self, image: str) -> str:
        """Where the image keeps its data: the add-on's named volume is mounted there."""
        raise NotImplementedError

    def environment(self, spec: ServiceSpec, image: str) -> dict[str, str]:
        return {}

    def command(self, spec: ServiceSpec, image: str) -> list[str] | None:
        return None  # the image's own

    def create_options(self, image: str) -> dict[str, Any]:
        return {}  # extra docker create options: mem_limit…

    def mounts(self, spec: ServiceSpec) -> dict[str, str]:
        return {}  # host folder → where the container sees it, read-only

    def prepare(self, spec: ServiceSpec, found: dict[str, object], say: Callable[[str], None]) -> None:
        """Before the container starts: the files it mounts (certificates are renewed in place)."""

    def settings(self, spec: ServiceSpec, image: str) -> dict[str, Any]:
        """Everything the container is made with; a change to any of it makes a new container."""
        settings = {
            "env": self.environment(spec, image),
            "command": self.command(spec, image),
            "data": self.data_path(image),
            "container_port": self.container_port,
            "options": self.create_options(image),
        }
        if mounts := self.mounts(spec):
            settings["mounts"] = mounts
        return settings

    def provision_container(self, container: Container, spec: ServiceSpec, volume: str) -> None:
        """After it answers: anything the app needs in it that the image does not make. `volume` names
        the data volume it runs on (another volume of the same name is another identity)."""


def with_tls(owner: str, args: list[str]) -> list[str]:
    """A container's command: copy what is mounted at TLS_MOUNT to TLS_DIR, owned by the server's
    user (a mount keeps the host's owner, and Postgres refuses a key that is not its user's or is
    readable by others), then run `args` through the image's own entrypoint, as its CMD would be."""
    script = (
        f"set -e; mkdir -p {TLS_DIR}; cp {TLS_MOUNT}/* {TLS_DIR}/; chown -R {owner}:{owner} {TLS_DIR}; "
        f'chmod 700 {TLS_DIR}; chmod 600 {TLS_DIR}/server.key; exec docker-entrypoint.sh "$@"'
    )
    return ["sh", "-c", script, "dynosim-tls", *args]
