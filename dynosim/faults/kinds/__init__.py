"""Every fault kind, one module each, by the CLI's name for it."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from dynosim.errors import FaultError
from dynosim.faults.base import FaultKind
from dynosim.faults.kinds.addon_failover import AddonFailover
from dynosim.faults.kinds.addon_latency import AddonLatency
from dynosim.faults.kinds.addon_outage import AddonOutage
from dynosim.faults.kinds.addon_restart import AddonRestart
from dynosim.faults.kinds.deploy_restart import DeployRestart
from dynosim.faults.kinds.dyno_crash import DynoCrash
from dynosim.faults.kinds.dyno_cycle import DynoCycle
from dynosim.faults.kinds.dyno_hang import DynoHang
from dynosim.faults.kinds.memory_pressure import MemoryPressure
from dynosim.faults.kinds.redis_oom import RedisOom
from dynosim.faults.kinds.router_error import RouterError
from dynosim.faults.kinds.router_latency import RouterLatency
from dynosim.faults.kinds.router_reset import RouterReset
from dynosim.faults.kinds.router_timeout import RouterTimeout

KINDS: Mapping[str, FaultKind] = MappingProxyType(
    {
        kind.name: kind
        for kind in (
            DynoCrash(),
            DynoHang(),
            DynoCycle(),
            DeployRestart(),
            MemoryPressure(),
            AddonOutage(),
            AddonRestart(),
            AddonFailover(),
            AddonLatency(),
            RedisOom(),
            RouterLatency(),
            RouterError(),
            RouterTimeout(),
            RouterReset(),
        )
    }
)


def kind_of(name: str) -> FaultKind:
    kind = KINDS.get(name)
    if kind is None:
        raise FaultError(f'unknown fault kind "{name}"; kinds: {", ".join(KINDS)}')
    return kind
