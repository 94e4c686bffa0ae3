"""The native backend: each service's local server run as dynosim's own child, no Docker
(processes.py; the service's own `start_native` in services/). Postgres gets SIGINT when dynosim dies
(fast shutdown); Redis, the search stand-in and the SMTP sink SIGTERM.

The SMTP sink, for which no official image exists, runs here under `--addons docker` too
(services.EMBEDDED).
"""

from __future__ import annotations

from collections.abc import Callable

from dynosim.addons.processes import Spawner
from dynosim.addons.services import SERVICES
from dynosim.addons.spec import Running, ServiceSpec
from dynosim.errors import AddonError


class NativeBackend:
    name = "native"

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.spawner = Spawner()
        self.found: dict[str, object] = {}  # looked up once per run: binaries, user namespaces, the server user

    def start(self, spec: ServiceSpec) -> Running:
        service = SERVICES.get(spec.service)
        if service is None:
            raise AddonError(f"{spec.label}: the native backend cannot run a {spec.service} service")
        return service.start_native(spec, self)

    def close(self) -> None:
        self.spawner.close()
