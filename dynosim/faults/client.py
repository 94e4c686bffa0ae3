"""Faults as the Python API, the pytest plugin and the CLI ask a running app for them, over its control
socket: `app.faults.addon_outage("heroku-postgresql", seconds=5)` switches one on, at once, and is
also a context manager that switches it off on leaving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dynosim.config import state_dir
from dynosim.control import request
from dynosim.faults import FaultRequest


def faults(app_dir: Path) -> list[dict[str, Any]]:
    """`dynosim faults`: the faults on now, oldest first."""
    return list(request(state_dir(app_dir.resolve()), "faults"))


def add_fault(app_dir: Path, fault: FaultRequest) -> dict[str, Any]:
    """`dynosim faults:add`: the fault, once it is on (a one-shot kind's has already struck)."""
    return dict(request(state_dir(app_dir.resolve()), "faults:add", fault=fault.as_json()))


def remove_fault(app_dir: Path, fault_id: str) -> dict[str, Any]:
    return dict(request(state_dir(app_dir.resolve()), "faults:remove", id=fault_id))


def clear_faults(app_dir: Path) -> list[dict[str, Any]]:
    return list(request(state_dir(app_dir.resolve()), "faults:clear"))


class ActiveFault:
    """A fault switched on by the API: its id and what the run said of it; `with` switches it off after."""

    def __init__(self, app_dir: Path, fault: dict[str, Any]) -> None:
        self.app_dir = app_dir
        self.id = str(fault["id"])
        self.fault = fault

    def remove(self) -> None:
        """Switches it off now, unless it already went off by itself (its duration, a one-shot)."""
        if any(f["id"] == self.id for f in faults(self.app_dir)):
            remove_fault(self.app_dir, self.id)

    def __enter__(self) -> ActiveFault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class AppFaults:
    """`App.faults`: one method per fault kind, each switching it on at once."""

    def __init__(self, app_dir: Path) -> None:
        self.app_dir = app_dir

    def add(self, kind: str, target: str | None = None, *, seconds: float | None = None, **options: Any) -> ActiveFault:
        """Any kind by its CLI name; `seconds` is --for; options: probability, latency (seconds),
        status, code, seed."""
        fault = FaultRequest(kind, target, duration=seconds, **options)
        return ActiveFault(self.app_dir, add_fault(self.app_dir, fault))

    def active(self) -> list[dict[str, Any]]:
        return faults(self.app_dir)

    def clear(self) -> None:
        clear_faults(self.app_dir)

    def dyno_crash(self, target: str, **options: Any) -> ActiveFault:
        return self.add("dyno-crash", target, **options)

    def dyno_hang(self, target: str, *, seconds: float | None = None, **options: Any) -> ActiveFault:
        return self.add("dyno-hang", target, seconds=seconds, **options)

    def dyno_cycle(self, target: str, **options: Any) -> ActiveFault:
        return self.add("dyno-cycle", target, **options)

    def deploy_restart(self, target: str | None = None, **options: Any) -> ActiveFault:
        return self.add("deploy-restart", target, **options)

    def memory_pressure(self, target: str, *, seconds: float | None = None, **options: Any) -> ActiveFault:
        return self.add("memory-pressure", target, seconds=seconds, **options)

    def addon_outage(self, target: str, *, seconds: float | None = None, **options: Any) -> ActiveFault:
        """The add-on's server stopped (for `seconds`, or until the `with` block ends), then back, same data."""
        return self.add("addon-outage", target, seconds=seconds, **options)

    def addon_restart(self, target: str, **options: Any) -> ActiveFault:
        return self.add("addon-restart", target, **options)

    def addon_failover(self, target: str, **options: Any) -> ActiveFault:
        return self.add("addon-failover", target, **options)

    def addon_latency(
        self, target: str, latency: float, *, seconds: float | None = None, **options: Any
    ) -> ActiveFault:
        """`latency` seconds more per round trip to the add-on, for `seconds` or until the `with` block ends."""
        return self.add("addon-latency", target, seconds=seconds, latency=latency, **options)

    def redis_oom(self, target: str = "heroku-redis", *, seconds: float | None = None, **options: Any) -> ActiveFault:
        return self.add("redis-oom", target, seconds=seconds, **options)

    def router_latency(self, latency: float, *, seconds: float | None = None, **options: Any) -> ActiveFault:
        """`latency` seconds added before the router sends a request on, for `seconds` or until the `with` ends."""
        return self.add("router-latency", seconds=seconds, latency=latency, **options)

    def router_error(self, status: int | None = None, code: str | None = None, **options: Any) -> ActiveFault:
        """The router answers itself with `status` (503) and `code`'s page and log line (one fitting the status)."""
        return self.add("router-error", status=status, code=code, **options)

    def router_timeout(self, **options: Any) -> ActiveFault:
        """Requests held past the router's 30 s: the client gets H12."""
        return self.add("router-timeout", **options)

    def router_reset(self, **options: Any) -> ActiveFault:
        """The client's connection reset (ECONNRESET), logged as H24."""
        return self.add("router-reset", **options)
