"""What each add-on service is in Docker: its image, environment, command, data path, readiness, setup.

One class per service with the same shape, the way testcontainers has one module per service. Each
image name can be overridden by an environment variable (a mirror, a local build, another version).
Readiness is always a real connection from the host through the published port, as an app makes it.
"""

from __future__ import annotations

import http.client
import os
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dynosim.addons.catalogue import Endpoint
from dynosim.addons.processes import HOST
from dynosim.addons.spec import ServiceSpec
from dynosim.errors import AddonError

if TYPE_CHECKING:
    from docker.models.containers import Container

TLS_MOUNT = "/dynosim/tls"  # the add-on's tls/ folder (certificate, key…), mounted read-only
TLS_DIR = "/etc/dynosim-tls"  # the server's own copies, owned by its user


def with_tls(owner: str, args: list[str]) -> list[str]:
    """The container's command: copy what is mounted at TLS_MOUNT to TLS_DIR, owned by the server's
    user (a mount keeps the host's owner, and Postgres refuses a key that is not its user's or is
    readable by others), then run `args` through the image's own entrypoint, as its CMD would be."""
    script = (
        f"set -e; mkdir -p {TLS_DIR}; cp {TLS_MOUNT}/* {TLS_DIR}/; chown -R {owner}:{owner} {TLS_DIR}; "
        f'chmod 700 {TLS_DIR}; chmod 600 {TLS_DIR}/server.key; exec docker-entrypoint.sh "$@"'
    )
    return ["sh", "-c", script, "dynosim-tls", *args]


class Recipe:
    service = ""
    name = ""  # how the ready line names it
    image_var = ""  # the environment variable that overrides the image
    default_image = ""
    port = 0  # inside the container
    ready_timeout = 60.0

    def image(self) -> str:
        return os.environ.get(self.image_var) or self.default_image

    def title(self, image: str) -> str:
        return self.name

    def data_path(self, image: str) -> str:
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
            "container_port": self.port,
            "options": self.create_options(image),
        }
        if mounts := self.mounts(spec):
            settings["mounts"] = mounts
        return settings

    def answers(self, spec: ServiceSpec) -> bool:
        raise NotImplementedError

    def endpoint(self, spec: ServiceSpec) -> Endpoint:
        return Endpoint(HOST, spec.port, password=spec.password)

    def provision(self, container: Container, spec: ServiceSpec, volume: str) -> None:
        """After the service answers: anything the app needs in it that the image does not make."""


class Postgres(Recipe):
    """The official postgres image: POSTGRES_USER is our superuser; the app gets its own role and
    database, created as Heroku creates them (owner of its database, not a superuser)."""

    service = "postgres"
    name = "PostgreSQL"
    image_var = "DYNOSIM_POSTGRES_IMAGE"
    default_image = "postgres:17"  # Heroku Postgres' default major version for new databases
    port = 5432
    ready_timeout = 120.0  # first boot runs initdb; a big WAL's crash recovery takes a while
    PGDATA = "/var/lib/postgresql/data"  # set explicitly: postgres:18+ moved its default

    def data_path(self, image: str) -> str:
        return self.PGDATA

    def environment(self, spec: ServiceSpec, image: str) -> dict[str, str]:
        from dynosim.addons.backends.native_postgres import SUPERUSER

        return {
            "POSTGRES_USER": SUPERUSER,
            "POSTGRES_PASSWORD": spec.admin_password or spec.password,
            "POSTGRES_DB": "postgres",
            "PGDATA": self.PGDATA,
        }

    # As native_postgres.HBA, for a server in a container: connections from the host come from the bridge's
    # gateway, and the image's entrypoint needs the unix socket without a password on first boot.
    HBA = """\
# Written by dynosim at every start, as Heroku Postgres has it: SSL only over TCP (TLS 1.2 or newer).
# TYPE   DATABASE  USER  ADDRESS    METHOD
local    all       all              trust
hostssl  all       all   0.0.0.0/0  scram-sha-256
hostssl  all       all   ::/0       scram-sha-256
"""

    def command(self, spec: ServiceSpec, image: str) -> list[str]:
        return with_tls("postgres", [
            "postgres",
            "-c", "ssl=on",
            "-c", f"ssl_cert_file={TLS_DIR}/server.crt",
            "-c", f"ssl_key_file={TLS_DIR}/server.key",
            "-c", "ssl_min_protocol_version=TLSv1.2",
            "-c", f"hba_file={TLS_DIR}/pg_hba.conf",
        ])  # fmt: skip

    def mounts(self, spec: ServiceSpec) -> dict[str, str]:
        return {str(spec.folder / "tls"): TLS_MOUNT}

    def prepare(self, spec: ServiceSpec, found: dict[str, object], say: Callable[[str], None]) -> None:
        from dynosim.addons import certs

        certs.install(certs.server_cert(found, say), spec.folder / "tls")
        certs.write_file(spec.folder / "tls" / "pg_hba.conf", self.HBA)

    def answers(self, spec: ServiceSpec) -> bool:
        from dynosim.addons.backends.native_postgres import accepting

        return accepting(spec.port)

    def endpoint(self, spec: ServiceSpec) -> Endpoint:
        return Endpoint(HOST, spec.port, spec.user, spec.password, spec.database or "")

    def provision(self, container: Container, spec: ServiceSpec, volume: str) -> None:
        """Creates the app's role and database once per data volume (a marker in the add-on's folder
        names the volume it was done for); the script is safe to run again anyway."""
        marker = spec.folder / "docker-provisioned"
        try:
            if marker.read_text().strip() == volume:
                return
        except OSError:
            pass
        from dynosim.addons.backends.native_postgres import (
            SUPERUSER,
            first_error,
            provision_sql,
        )

        result = container.exec_run(
            ["sh", "-c", 'printf "%s" "$DYNOSIM_SQL" | psql -X -q -v ON_ERROR_STOP=1 -U "$0" -d postgres -f -',
             SUPERUSER],
            environment={"DYNOSIM_SQL": provision_sql(spec), "PGPASSWORD": spec.admin_password or ""},
            user="postgres",
        )  # fmt: skip
        if result.exit_code != 0:
            raise AddonError(
                f"{spec.label}: creating the app's role and database failed: "
                f"{first_error(result.output.decode('utf-8', 'replace'))}"
            )
        marker.write_text(volume + "\n")


class Redis(Recipe):
    """The official redis image: a password, and the append-only file in /data (survives a SIGKILL)."""

    service = "redis"
    name = "Redis"
    image_var = "DYNOSIM_REDIS_IMAGE"
    default_image = "redis:7"
    port = 6379
    ready_timeout = 60.0

    def data_path(self, image: str) -> str:
        return "/data"

    def command(self, spec: ServiceSpec, image: str) -> list[str]:
        args = ["redis-server", "--requirepass", spec.password, "--appendonly", "yes"]
        if not spec.tls:  # plain redis://, as app.json asked
            return args
        return with_tls("redis", [
            *args,
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", f"{TLS_DIR}/server.crt",
            "--tls-key-file", f"{TLS_DIR}/server.key",
            "--tls-ca-cert-file", f"{TLS_DIR}/server.crt",  # Redis 6 wants one, though it checks no client
            "--tls-auth-clients", "no",
            "--tls-protocols", "TLSv1.2 TLSv1.3",
        ])  # fmt: skip

    def mounts(self, spec: ServiceSpec) -> dict[str, str]:
        return {str(spec.folder / "tls"): TLS_MOUNT} if spec.tls else {}

    def prepare(self, spec: ServiceSpec, found: dict[str, object], say: Callable[[str], None]) -> None:
        if spec.tls:
            from dynosim.addons import certs

            certs.install(certs.keyvalue_cert(found, say), spec.folder / "tls")

    def answers(self, spec: ServiceSpec) -> bool:
        from dynosim.addons.backends.native_redis import answering

        return answering(spec.port, spec.password, tls=spec.tls)

    def endpoint(self, spec: ServiceSpec) -> Endpoint:
        return Endpoint(HOST, spec.port, password=spec.password, tls=spec.tls)


class Search(Recipe):
    """Elasticsearch 8, single node, security off, a bounded heap; OpenSearch when the image is one."""

    service = "search"
    name = "Elasticsearch"
    image_var = "DYNOSIM_SEARCH_IMAGE"
    default_image = "elasticsearch:8.17.0"
    port = 9200
    ready_timeout = 180.0  # a JVM's cold start
    HEAP = "512m"

    @staticmethod
    def _opensearch(image: str) -> bool:
        return "opensearch" in image.rsplit("/", 1)[-1]

    def title(self, image: str) -> str:
        return "OpenSearch" if self._opensearch(image) else self.name

    def data_path(self, image: str) -> str:
        return "/usr/share/opensearch/data" if self._opensearch(image) else "/usr/share/elasticsearch/data"

    def environment(self, spec: ServiceSpec, image: str) -> dict[str, str]:
        heap = f"-Xms{self.HEAP} -Xmx{self.HEAP}"
        if self._opensearch(image):
            return {
                "discovery.type": "single-node",
                "DISABLE_SECURITY_PLUGIN": "true",
                "DISABLE_INSTALL_DEMO_CONFIG": "true",
                "OPENSEARCH_JAVA_OPTS": heap,
            }
        return {"discovery.type": "single-node", "xpack.security.enabled": "false", "ES_JAVA_OPTS": heap}

    def create_options(self, image: str) -> dict[str, Any]:
        return {"mem_limit": "1g"}  # heap + the JVM's own; without a limit a JVM sizes itself to the host

    def answers(self, spec: ServiceSpec) -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{spec.port}/", timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, http.client.HTTPException, ValueError):
            return False  # also http.client errors: the proxy accepts, then closes, before the server is up

    def endpoint(self, spec: ServiceSpec) -> Endpoint:
        return Endpoint(HOST, spec.port, tls_port=spec.tls_port)  # https: docker.DockerBackend's TLS proxy


RECIPES: dict[str, Recipe] = {r.service: r for r in (Postgres(), Redis(), Search())}


def recipe_for(spec: ServiceSpec) -> Recipe:
    recipe = RECIPES.get(spec.service)
    if recipe is None:
        raise AddonError(f"{spec.label}: the docker backend cannot run a {spec.service} service")
    return recipe
