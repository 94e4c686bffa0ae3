"""Every fault kind, one module each, by the CLI's name for it."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from dynosim.errors import FaultError
from dynosim.faults.base import FaultKind
from dynosim.faults.kinds.dyno_crash import DynoCrash

KINDS: Mapping[str, FaultKind] = MappingProxyType({kind.name: kind for kind in (DynoCrash(),)})


def kind_of(name: str) -> FaultKind:
    kind = KINDS.get(name)
    if kind is None:
        raise FaultError(f'unknown fault kind "{name}"; kinds: {", ".join(KINDS)}')
    return kind
