"""The formation: how many dynos of each process type run, and of which size."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import FormationError
from .manifest import Manifest, quoted
from .privatefile import write_private
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
_ALIASES = {
    "free": "eco",
    "hobby": "basic",
    "1x": "standard-1x",
    "2x": "standard-2x",
    "pm": "performance-m",
    "pl": "performance-l",
}


def dyno_size(name: str, where: str) -> DynoSize:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in SIZES:
        raise FormationError(f"{where}: unknown dyno size {quoted(name)}; sizes: {', '.join(SIZES)}")
    return SIZES[key]


@dataclass(frozen=True)
class Formation:
    quantities: Mapping[str, int]  # in Procfile order
    sizes: Mapping[str, DynoSize]

    def describe(self) -> str:
        """Heroku's `Scaled to web@1:Standard-1X worker@1:Standard-1X` form."""
        return " ".join(f"{kind}@{n}:{size_title(self.sizes[kind].name)}" for kind, n in self.quantities.items())


def size_title(size: str) -> str:
    """Heroku's `Standard-1X`, `Performance-L-RAM`, `Performance-XL`, `Eco`."""
    words = ("eco", "basic", "standard", "performance")
    return "-".join(part.capitalize() if part in words else part.upper() for part in size.split("-"))


_ENTRY = re.compile(r"^([A-Za-z0-9_-]+)=(-?[0-9]+)$")


def parse_formation(text: str, where: str = "--formation") -> dict[str, int]:
    """`web=2,worker=1` (or space separated) → {"web": 2, "worker": 1}."""
    result: dict[str, int] = {}
    for item in re.split(r"[,\s]+", text.strip()):
        if not item:
            continue
        match = _ENTRY.match(item)
        if not match:
            raise FormationError(f"{where}: {quoted(item)} is not TYPE=COUNT (for example web=2,worker=1)")
        kind, digits = match.groups()
        if digits.startswith("-"):
            raise FormationError(f"{where}: {quoted(item)}: a dyno count cannot be negative")
        if len(digits.lstrip("0")) > 9:  # far past any limit, and int() of thousands of digits raises
            raise FormationError(
                f"{where}: {quoted(item)}: Heroku limits an app to {APP_LIMIT} dynos; scale to {APP_LIMIT} or fewer"
            )
        result[kind] = int(digits)
    return result


@dataclass(frozen=True)
class AppFormation:
    """What `ps:scale` and `ps:resize` set, per process type."""

    quantities: Mapping[str, int]
    sizes: Mapping[str, str]


class FormationStore:
    """The app's formation, kept in .dynosim/formation.json until changed: on Heroku it belongs to
    the app, so a new run starts what the last `ps:scale` and `ps:resize` left."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "formation.json"

    def load(self) -> AppFormation:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return AppFormation({}, {})
        except (OSError, ValueError) as exc:
            raise FormationError(f"{self.path}: unreadable formation ({exc}); fix or delete the file") from None
        quantities, sizes = (data.get(key) if isinstance(data, dict) else None for key in ("quantities", "sizes"))
        if not (
            isinstance(quantities, dict)
            and all(isinstance(n, int) and n >= 0 for n in quantities.values())
            and isinstance(sizes, dict)
            and all(isinstance(s, str) for s in sizes.values())
        ):
            raise FormationError(
                f"{self.path}: not a formation (quantities and sizes per type); fix or delete the file"
            )
        return AppFormation(quantities, sizes)

    def scale(self, procfile: Procfile, counts: Mapping[str, int]) -> AppFormation:
        for kind, count in counts.items():
            _check_type(kind, procfile, "ps:scale")
            if count < 0:
                raise FormationError(f"ps:scale: {quoted(kind)}={count}: a dyno count cannot be negative")
        stored = self.load()
        return self._save(
            _within_limits(procfile, AppFormation({**stored.quantities, **counts}, stored.sizes), "ps:scale")
        )

    def resize(self, procfile: Procfile, sizes: Mapping[str, str]) -> AppFormation:
        named = {}
        for kind, size in sizes.items():
            _check_type(kind, procfile, "ps:resize")
            named[kind] = dyno_size(size, f"ps:resize {kind}").name
        stored = self.load()
        return self._save(
            _within_limits(procfile, AppFormation(stored.quantities, {**stored.sizes, **named}), "ps:resize")
        )

    def _save(self, formation: AppFormation) -> AppFormation:
        write_private(
            self.path, json.dumps({"quantities": dict(formation.quantities), "sizes": dict(formation.sizes)}, indent=1)
        )
        return formation


def resolve_formation(
    procfile: Procfile,
    manifest: Manifest,
    requested: Mapping[str, int] | None = None,
    size: str | None = None,
    app: AppFormation = AppFormation({}, {}),
) -> Formation:
    """One dyno of every type (as `heroku local`), then app.json `formation`, then the app's own
    (`ps:scale`, `ps:resize`), then the command line's for this run."""
    types = procfile.formation_types
    quantities = {kind: 1 for kind in types}
    sizes = {kind: dyno_size(size or DEFAULT_SIZE, "--size") for kind in types}
    for kind, spec in manifest.formation.items():
        _check_type(kind, procfile, "app.json formation")
        quantities[kind] = spec.quantity
        if spec.size and not size:
            sizes[kind] = dyno_size(spec.size, f"app.json formation.{kind}.size")
    # a type gone from the Procfile leaves the formation, as on Heroku
    quantities.update({kind: n for kind, n in app.quantities.items() if kind in types})
    if not size:
        sizes.update({kind: dyno_size(s, f"{kind}'s size") for kind, s in app.sizes.items() if kind in types})
    for kind, count in (requested or {}).items():
        _check_type(kind, procfile, "--formation")
        quantities[kind] = count
    check_limits(quantities, sizes, "--formation" if requested else "the formation")
    return Formation(quantities, sizes)


# Heroku's default scaling limits (Dev Center, "Dyno Scaling and Process Limits"): 100 dynos an app,
# 10 a process type of performance dynos, 1 a process type of eco or basic
APP_LIMIT = 100
PERFORMANCE_LIMIT = 10
SINGLE_SIZES = ("eco", "basic")


def check_limits(quantities: Mapping[str, int], sizes: Mapping[str, DynoSize], where: str) -> None:
    """FormationError past Heroku's scaling limits, before a dyno starts: a formation of thousands would
    take the machine down with it."""
    for kind, count in quantities.items():
        if kind not in sizes:  # not a process type: the caller's own check names it
            continue
        size = sizes[kind].name
        if size in SINGLE_SIZES and count > 1:
            raise FormationError(
                f"{where}: {kind}={count}: {size_title(size)} dynos run one per process type on Heroku; scale to 1, "
                f"or resize it first (ps:resize {kind}=standard-1x)"
            )
        if size.startswith("performance") and count > PERFORMANCE_LIMIT:
            raise FormationError(
                f"{where}: {kind}={count}: Heroku scales a process type of performance dynos to {PERFORMANCE_LIMIT} "
                "at most; scale to 10 or fewer"
            )
    total = sum(quantities.values())
    if total > APP_LIMIT:
        raise FormationError(
            f"{where}: {total} dynos in all: Heroku limits an app to {APP_LIMIT} dynos; scale to {APP_LIMIT} or fewer"
        )


def _within_limits(procfile: Procfile, formation: AppFormation, where: str) -> AppFormation:
    """`formation` when the Procfile's types under it stay within Heroku's scaling limits (a type not
    scaled yet counts as one dyno of the default size, as a run would start it)."""
    types = procfile.formation_types
    quantities = {kind: formation.quantities.get(kind, 1) for kind in types}
    sizes = {kind: dyno_size(formation.sizes.get(kind, DEFAULT_SIZE), f"{kind}'s size") for kind in types}
    check_limits(quantities, sizes, where)
    return formation


def _check_type(kind: str, procfile: Procfile, where: str) -> None:
    if kind == "release" and procfile.release is not None:
        raise FormationError(f'{where}: "release" runs once in the release phase and cannot be scaled')
    if kind not in procfile.formation_types:
        known = ", ".join(procfile.formation_types) or "none"
        raise FormationError(
            f"{where}: no process type {quoted(kind)} in {procfile.path.name} (types: {known}); "
            f"add it to the Procfile or fix the name"
        )
