"""Faults on demand: Heroku's failure modes switched on and off while the app runs, as LocalStack's
Chaos API does for AWS. Plain data here: what the user asks for (`FaultRequest`), a fault that is on
(`Fault`), and the parsing of durations and probabilities every interface shares (CLI, plan files,
the Python API). What each kind does is its own module in `kinds/`; `board.py` keeps a run's faults.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dynosim.errors import FaultError
from dynosim.manifest import quoted

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
MAX_DURATION = 366 * 86400.0


def parse_duration(text: str | float, what: str) -> float:
    """Seconds from "10s", "200ms", "2m", "1h" or a bare number of seconds; `what` names the argument
    in the error ("--for", "faults.json: faults[2].for")."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.fullmatch(str(text).strip())
        if match is None:
            raise FaultError(f"{what}: {quoted(str(text))} is not a duration; write it like 10s, 200ms or 2m")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if math.isnan(seconds):
        raise FaultError(f"{what}: {text} is not a duration; write it like 10s, 200ms or 2m")
    if seconds < 0:
        raise FaultError(f"{what}: a duration cannot be negative")
    if seconds > MAX_DURATION:  # a deadline past what time.time() and asyncio's timers can hold
        raise FaultError(
            f"{what}: {quoted(str(text))} is longer than a year; leave it out for a fault on until removed"
        )
    return seconds


def parse_probability(value: str | float, what: str) -> float:
    try:
        probability = float(value)
    except (TypeError, ValueError):
        raise FaultError(
            f"{what}: {quoted(str(value))} is not a probability; give a number from 0 to 1, like 0.25"
        ) from None
    if not 0.0 <= probability <= 1.0:
        raise FaultError(f"{what}: {probability:g} is outside 0..1; give a number from 0 to 1, like 0.25")
    return probability


@dataclass(frozen=True)
class FaultRequest:
    """One fault as asked for: `dynosim faults:add`, a plan file's entry, `app.faults.…()`."""

    kind: str  # "dyno-crash"
    target: str | None = None  # "web.2", "web", "heroku-postgresql"; None for the router's kinds
    probability: float = 1.0  # the share of chances it acts on (requests, dynos, connections)
    duration: float | None = None  # seconds it stays on; None: until removed (or once, for one-shot kinds)
    latency: float | None = None  # seconds added (router-latency, addon-latency)
    status: int | None = None  # the HTTP status router-error answers with
    code: str | None = None  # the H-code router-error logs ("H13")
    seed: int | None = None  # makes its random choices repeatable; None: one is picked and reported

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "probability": self.probability,
            "for": self.duration,
            "latency": self.latency,
            "status": self.status,
            "code": self.code,
            "seed": self.seed,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> FaultRequest:
        """A request from JSON (a plan file's entry, a control request), checked: `where` names it in errors."""
        known = {"kind", "target", "probability", "for", "latency", "status", "code", "seed", "at"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FaultError(f"{where}: unknown field {quoted(unknown[0])}; fields are {', '.join(sorted(known))}")
        kind = data.get("kind")
        if not isinstance(kind, str) or not kind:
            raise FaultError(
                f'{where}: "kind" is missing; name one like "dyno-crash" (see `dynosim faults:add --help`)'
            )
        target = data.get("target")
        if target is not None and not isinstance(target, str):
            raise FaultError(f'{where}: "target" must be a string like "web.1", "web" or "heroku-postgresql"')
        duration, latency = data.get("for"), data.get("latency")
        status, seed, code = data.get("status"), data.get("seed"), data.get("code")
        for name, value in (("status", status), ("seed", seed)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise FaultError(f'{where}: "{name}" must be a whole number, got {quoted(value)}')
        if code is not None and not isinstance(code, str):
            raise FaultError(f'{where}: "code" must be an H-code like "H13", got {quoted(code)}')
        return cls(
            kind=kind,
            target=target,
            probability=parse_probability(data.get("probability", 1.0), f"{where}: probability"),
            duration=None if duration is None else parse_duration(duration, f"{where}: for"),
            latency=None if latency is None else parse_duration(latency, f"{where}: latency"),
            status=status,
            code=code,
            seed=seed,
        )


@dataclass(frozen=True)
class Fault:
    """A fault that is on (or was): its id, what was asked, when it began and ends."""

    id: str  # "f1", in the order they were added in this run
    request: FaultRequest
    seed: int  # the seed its random choices use (the request's, or the one picked)
    started: float  # time.time()
    ends: float | None  # time.time() it goes off by itself; None: when removed

    @property
    def kind(self) -> str:
        return self.request.kind

    def describe(self) -> str:
        """How the log stream and `dynosim faults` name it: "f2 addon-outage on heroku-postgresql for 5s"."""
        r = self.request
        parts = [f"{self.id} {r.kind}"]
        if r.target:
            parts.append(f"on {r.target}")
        if r.probability < 1.0:
            parts.append(f"at p={r.probability:g}")
        if r.latency is not None:
            parts.append(f"+{_seconds(r.latency)}")
        if r.status is not None or r.code is not None:
            parts.append(" ".join(str(x) for x in (r.status, r.code) if x is not None))
        if r.duration is not None:
            parts.append(f"for {_seconds(r.duration)}")
        return " ".join(parts)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, **self.request.as_json(), "seed": self.seed, "started": self.started, "ends": self.ends}


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:g}s"
