"""Faults on a schedule: a plan file's timed faults (`dynosim run --faults plan.json`, for CI) and seeded
chaos (`dynosim run --chaos SEED`), both switched on through the run's FaultBoard at offsets counted from
the moment every dyno of the formation is first up.

A plan file:

    {"faults": [{"at": "10s", "kind": "addon-outage", "target": "heroku-postgresql", "for": "5s"},
                {"at": "30s", "kind": "dyno-cycle", "target": "worker"}]}

Every entry is checked before anything starts (FaultRequest.from_json's fields, the kind, `at`, the
target against the run's formation and add-ons), each error naming the file and `faults[N]`.

Chaos draws its faults from a random.Random(seed) alone, over the kinds that fit the app (its process
types, its add-ons' services, the router when it has a web), sorted by name, so one seed on one app gives
the same faults at the same offsets in every run (each fault's own seed is drawn from it too).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dynosim.errors import DynosimError, FaultError
from dynosim.faults import FaultRequest, parse_duration
from dynosim.faults.board import FaultBoard
from dynosim.faults.kinds import KINDS, kind_of
from dynosim.faults.kinds.addon_server import AddonKind
from dynosim.manifest import quoted

_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*/\s*(\d*(?:\.\d+)?)\s*(ms|s|sec|m|min|h|hour)")
_RATE_UNITS = {"ms": "ms", "s": "s", "sec": "s", "m": "m", "min": "m", "h": "h", "hour": "h"}
# what chaos gives the kinds that need a number: short enough for a run, long enough to be felt
CHAOS_FOR = (2.0, 8.0)  # seconds a lasting fault stays on
CHAOS_LATENCY = (0.2, 1.0)  # seconds added by router-latency, addon-latency


@dataclass(frozen=True)
class PlannedFault:
    at: float  # seconds after the formation is up
    request: FaultRequest
    where: str  # "plan.json: faults[2]", "chaos (seed 7)": how the log stream names its origin


@dataclass(frozen=True)
class RunTargets:
    """What a run's faults may aim at, known before it starts: its dynos and its add-ons."""

    formation: Mapping[str, int]  # process type -> dynos
    addons: Mapping[str, str]  # every name a target may give an add-on ("heroku-redis", "REDIS_URL") -> service

    def check(self, planned: PlannedFault) -> None:
        """The planned fault's target is one this run will have (the board checks it again when it fires)."""
        kind, target = kind_of(planned.request.kind), planned.request.target
        if kind.name.endswith("-latency") and not planned.request.latency:
            raise FaultError(f'{planned.where}: {kind.name} needs a "latency", like "200ms"')
        if kind.target == "none":
            if target:
                raise FaultError(f"{planned.where}: {kind.name} takes no target (it acts on the router)")
            if not self.formation.get("web"):
                raise FaultError(f"{planned.where}: {kind.name} acts on the router, and this run has no web dyno")
        elif not target:
            raise FaultError(f'{planned.where}: {kind.name} needs a "target"')
        elif kind.target == "dyno":
            kind_name, _, number = target.partition(".")
            count = self.formation.get(kind_name, 0)
            if count == 0 or (number and not (number.isdigit() and 1 <= int(number) <= count)):
                dynos = ", ".join(f"{t}.{i}" for t, n in self.formation.items() for i in range(1, n + 1)) or "none"
                raise FaultError(
                    f'{planned.where}: this run has no dyno or process type "{target}"; its dynos: {dynos}'
                )
        else:
            service = self.addons.get(target) or self.addons.get(target.upper())
            if service is None:
                names = ", ".join(sorted(n for n in self.addons if n.startswith("heroku-"))) or "none"
                raise FaultError(f'{planned.where}: this run has no add-on "{target}"; its add-ons: {names}')
            if isinstance(kind, AddonKind) and service not in kind.services:
                raise FaultError(f"{planned.where}: {kind.name} does not act on {target} (a {service} add-on)")


def load_plan(path: Path) -> tuple[PlannedFault, ...]:
    """A plan file's faults, each checked; a FaultError naming the file and the entry otherwise."""
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        raise FaultError(f"--faults {path}: cannot be read ({error.strerror}); give a plan file's path") from None
    except json.JSONDecodeError as error:
        raise FaultError(f"{path}: not JSON (line {error.lineno} column {error.colno}: {error.msg})") from None
    except UnicodeDecodeError:
        raise FaultError(f"{path}: not a text file; a plan is JSON like {_EXAMPLE}") from None
    if not isinstance(data, dict) or not isinstance(data.get("faults"), list):
        raise FaultError(f'{path}: a plan is an object with a "faults" list, like {_EXAMPLE}')
    planned = []
    for index, entry in enumerate(data["faults"]):
        where = f"{path}: faults[{index}]"
        if not isinstance(entry, dict):
            raise FaultError(f"{where}: each fault is an object, like {_EXAMPLE_ENTRY}")
        request = FaultRequest.from_json(entry, where)
        try:
            kind_of(request.kind)
        except FaultError as error:
            raise FaultError(f"{where}: {error}") from None
        if "at" not in entry:
            raise FaultError(f'{where}: "at" is missing; say when it starts after the dynos are up, like "10s"')
        planned.append(PlannedFault(parse_duration(entry["at"], f"{where}: at"), request, where))
    return tuple(sorted(planned, key=lambda p: p.at))


_EXAMPLE_ENTRY = '{"at": "10s", "kind": "addon-outage", "target": "heroku-postgresql", "for": "5s"}'
_EXAMPLE = '{"faults": [' + _EXAMPLE_ENTRY + "]}"


def parse_rate(text: str, what: str = "--chaos-rate") -> float:
    """Faults a second from "1/min", "2/30s", "6/h"."""
    match = _RATE.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise FaultError(f"{what}: {quoted(text)} is not a rate; write it like 1/min, 2/30s or 6/h")
    per = parse_duration(f"{match.group(2) or 1}{_RATE_UNITS[match.group(3)]}", what)
    if per <= 0:
        raise FaultError(f"{what}: {quoted(text)} is not a rate; write it like 1/min, 2/30s or 6/h")
    return float(match.group(1)) / per


@dataclass(frozen=True)
class Chaos:
    seed: int
    rate: float  # faults a second, on average

    def kinds(self, targets: RunTargets) -> list[tuple[str, str | None]]:
        """(kind, target) pairs that fit the app, in a fixed order."""
        services = {service: name for name, service in sorted(targets.addons.items()) if name.startswith("heroku-")}
        pairs: list[tuple[str, str | None]] = []
        for name, kind in sorted(KINDS.items()):
            if kind.target == "none":
                pairs += [(name, None)] if targets.formation.get("web") else []
            elif kind.target == "dyno":
                pairs += [(name, t) for t, n in sorted(targets.formation.items()) if n > 0]
            elif isinstance(kind, AddonKind):
                pairs += [(name, services[s]) for s in sorted(services) if s in kind.services]
        return pairs

    def schedule(self, targets: RunTargets) -> Iterator[PlannedFault]:
        """Endless: faults at exponentially spread offsets (a Poisson process at `rate`)."""
        rng = random.Random(self.seed)
        pairs = self.kinds(targets)
        at = 0.0
        while pairs:
            at += rng.expovariate(self.rate)
            name, target = rng.choice(pairs)
            kind = KINDS[name]
            lasting = not kind.one_shot
            latency = round(rng.uniform(*CHAOS_LATENCY), 1) if name.endswith("-latency") else None
            request = FaultRequest(
                name,
                target,
                duration=round(rng.uniform(*CHAOS_FOR), 1) if lasting else None,
                latency=latency,
                status=503 if name == "router-error" else None,
                seed=rng.randrange(2**31),
            )
            yield PlannedFault(round(at, 1), request, f"chaos (seed {self.seed})")


async def run_plan(planned: Iterable[PlannedFault], board: FaultBoard, boot_timeout: float) -> None:
    """Switches each fault on at its offset from the moment every dyno is up (or the boot timeout has
    passed: a dyno that never boots is a finding, not a reason to hold the plan); one that cannot
    start is said and the plan goes on."""
    logs = board.platform.logs
    loop = asyncio.get_running_loop()
    await board.platform.running().wait_up(boot_timeout)
    zero = loop.time()
    for entry in planned:
        await asyncio.sleep(max(0.0, zero + entry.at - loop.time()))
        if entry.where.startswith("chaos"):
            on = f" on {entry.request.target}" if entry.request.target else ""
            logs.hint("faults", f"{entry.where}: {entry.request.kind}{on} at +{entry.at:g}s")
        adding = asyncio.ensure_future(board.add(entry.request))
        try:
            await asyncio.shield(adding)
        except DynosimError as error:
            logs.hint("faults", f"{entry.where}: {error}")
        except asyncio.CancelledError:  # the run is stopping: a fault half on would stay on, so it finishes
            await asyncio.wait([adding])  # and the run's clear() puts it back
            raise


def run_targets(formation: Mapping[str, int], addons: Sequence[tuple[str, str, str]]) -> RunTargets:
    """From the formation and each add-on's (add-on name, attachment name, service): the names a
    target may use for it, as faults.base.addon takes them (DATABASE, DATABASE_URL, heroku-postgresql)."""
    names: dict[str, str] = {}
    for addon, as_name, service in addons:
        names.update({addon: service, as_name: service, f"{as_name}_URL": service})
    return RunTargets(dict(formation), names)
