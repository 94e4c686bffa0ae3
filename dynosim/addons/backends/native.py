"""The native backend: local server binaries run as dynosim's own children, no Docker (processes.py).
Postgres gets SIGINT when dynosim dies (fast shutdown); Redis, the search stand-in and the SMTP sink
SIGTERM.

The SMTP sink, for which no official image exists, runs here under `--addons docker` too
(catalogue.EMBEDDED).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from dynosim.addons.catalogue import Endpoint
from dynosim.addons.processes import (
    HOST,
    Child,
    Server,
    Spawner,
    accepts,
    check_port,
    port_free,
)
from dynosim.addons.spec import Running, ServiceSpec
from dynosim.errors import AddonError


class NativeBackend:
    name = "native"

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.spawner = Spawner()
        self.found: dict[str, object] = {}  # looked up once per run: binaries, user namespaces, the server user

    def start(self, spec: ServiceSpec) -> Running:
        if spec.service == "postgres":
            from dynosim.addons.backends.native_postgres import start_postgres

            return start_postgres(spec, self)
        if spec.service == "redis":
            from dynosim.addons.backends.native_redis import start_redis

            return start_redis(spec, self)
        if spec.service == "search":
            return start_search(spec, self)
        if spec.service == "smtp":
            from dynosim.addons.smtp import start_smtp

            return start_smtp(spec, self)
        raise AddonError(f"{spec.label}: the native backend cannot run a {spec.service} service")

    def close(self) -> None:
        self.spawner.close()


def start_search(spec: ServiceSpec, backend: NativeBackend) -> Running:
    """The embedded Elasticsearch stand-in (dynosim.addons.search), as a child process."""
    check_port(spec)
    data = spec.folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "dynosim.addons.search", "--data", str(data), "--port", str(spec.port)]
    if spec.tls_port is not None:  # SEARCHBOX_SSL_URL: https on a second port, a certificate of dynosim's CA
        from dynosim.addons import certs

        if not port_free(spec.tls_port):
            raise AddonError(
                f"{spec.label}: its https port {spec.tls_port} on {HOST} is taken by another program; stop that "
                f'program, or delete "tls_port" from this add-on in {spec.folder.parent.parent / "addons.json"}'
            )
        chain = certs.server_cert(backend.found, backend.say)
        args += ["--tls-port", str(spec.tls_port), "--cert", str(chain.cert), "--key", str(chain.key)]
    child = Child.spawn(
        backend.spawner,
        args,
        what="the search stand-in",
        label=spec.label,
        log=spec.folder / "search.log",
        stop_signal=signal.SIGTERM,
        death_signal=signal.SIGTERM,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    ports = [spec.port] if spec.tls_port is None else [spec.port, spec.tls_port]
    took = child.wait_ready(lambda: all(accepts(port) for port in ports))
    https = "" if spec.tls_port is None else f", https on {spec.tls_port}"
    backend.say(
        f"{spec.label}: search stand-in (embedded) ready on {HOST}:{spec.port}{https} in {took * 1000:.0f} ms"
    )
    return Server(child, Endpoint(HOST, spec.port, tls_port=spec.tls_port), backend="embedded")
