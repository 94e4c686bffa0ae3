"""The formation: how many dynos of each process type run, and of which size."""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import FormationError
from .manifest import Manifest
from .procfile import Procfile


@dataclass(frozen=True)
class DynoSize:
    name: str
    memory_mb: int  # the quota; R14 past it
    kill_factor: float  # R15 at memory_mb * kill_factor
    web_concurrency: int  # what the Python buildpack's WEB_CONCURRENCY.sh computes


SIZES: Mapping[str, DynoSize] = {
    size.name: size
    for size in (
        DynoSize("eco", 512, 2.0, 2),
        DynoSize("basic", 512, 2.0, 2),
        DynoSize("standard-1x", 512, 2.0, 2),
        DynoSize("standard-2x", 1024, 2.0, 4),
        DynoSize("performance-m", 2560, 2.0, 5),
        DynoSize("performance-l", 14336, 2.0, 17),
        DynoSize("performance-l-ram", 30720, 1.2, 9),
        DynoSize("performance-xl", 63488, 1.2, 17),
        DynoSize("performance-2xl", 129024, 1.2, 33),
    )
}
DEFAULT_SIZE = "standard-1x"
_ALIASES = {"free": "eco", "hobby": "basic", "1x": "standard-1x", "2x": "standard-2x", "pm": "performance-m", "pl": "performance-l"}


def dyno_size(name: str, where: str) -> DynoSize:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in SIZES:
        raise FormationError(f'{where}: unknown dyno size "{name}"; sizes: {", ".join(SIZES)}')
    return SIZES[key]


@dataclass(frozen=True)
class Formation:
    quantities: Mapping[str, int]  # in Procfile order
    sizes: Mapping[str, DynoSize]

    def describe(self) -> str:
        """Heroku's `Scaled to web@1:Standard-1X worker@1:Standard-1X` form."""
        return " ".join(
            f"{kind}@{n}:{_title(self.sizes[kind].name)}" for kind, n in self.quantities.items()
        )


def _title(size: str) -> str:
    return "-".join(part.upper() if part[-1:] == "x" else part.capitalize() for part in size.split("-"))


_ENTRY = re.compile(r"^([A-Za-z0-9_-]+)=(-?\d+)$")


def parse_formation(text: str, where: str = "--formation") -> dict[str, int]:
    """`web=2,worker=1` (or space separated) → {"web": 2, "worker": 1}."""
    result: dict[str, int] = {}
    for item in re.split(r"[,\s]+", text.strip()):
        if not item:
            continue
        match = _ENTRY.match(item)
        if not match:
            raise FormationError(f'{where}: "{item}" is not TYPE=COUNT (for example web=2,worker=1)')
        count = int(match.group(2))
        if count < 0:
            raise FormationError(f'{where}: "{item}": a dyno count cannot be negative')
        result[match.group(1)] = count
    return result


def resolve_formation(
    procfile: Procfile,
    manifest: Manifest,
    requested: Mapping[str, int] | None = None,
    size: str | None = None,
) -> Formation:
    """One dyno of every type (as `heroku local`), then app.json `formation`, then the command line."""
    types = procfile.formation_types
    quantities = {kind: 1 for kind in types}
    sizes = {kind: dyno_size(size or DEFAULT_SIZE, "--size") for kind in types}
    for kind, spec in manifest.formation.items():
        _check_type(kind, procfile, "app.json formation")
        quantities[kind] = spec.quantity
        if spec.size and not size:
            sizes[kind] = dyno_size(spec.size, f"app.json formation.{kind}.size")
    for kind, count in (requested or {}).items():
        _check_type(kind, procfile, "--formation")
        quantities[kind] = count
    return Formation(quantities, sizes)


def _check_type(kind: str, procfile: Procfile, where: str) -> None:
    if kind == "release" and procfile.release is not None:
        raise FormationError(f'{where}: "release" runs once in the release phase and cannot be scaled')
    if kind not in procfile.formation_types:
        known = ", ".join(procfile.formation_types) or "none"
        raise FormationError(
            f'{where}: no process type "{kind}" in {procfile.path.name} (types: {known}); '
            f"add it to the Procfile or fix the name"
        )
