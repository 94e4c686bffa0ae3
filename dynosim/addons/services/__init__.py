"""The add-on services, one module each and every one the same shape (base.Service): the table the
catalogue and both backends look a service up in, by the name addons.json records.

Adding a service: a module here with a `Service` subclass (its vars, probe, native start, docker
recipe), its instance in SERVICES, and an Offering naming it in catalogue.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from dynosim.addons.services.base import Service
from dynosim.addons.services.postgres import Postgres
from dynosim.addons.services.redis import Redis
from dynosim.addons.services.search import Search
from dynosim.addons.services.smtp import Smtp
from dynosim.errors import AddonError

SERVICES: Mapping[str, Service] = MappingProxyType({s.name: s for s in (Postgres(), Redis(), Search(), Smtp())})

# Services dynosim runs itself, for which no official image exists: the native backend runs them under
# --addons docker too, and their records say "embedded" whatever the backend.
EMBEDDED: frozenset[str] = frozenset(name for name, service in SERVICES.items() if service.embedded)


def service_for(name: str) -> Service:
    found = SERVICES.get(name)
    if found is None:  # our bug: the catalogue and this table disagree
        raise AddonError(f"no add-on service {name}")
    return found
