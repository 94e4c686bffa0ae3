"""router-latency: --latency added to a request before the router sends it to a dyno (the router's
log line shows it in connect=), for a share of requests given by --probability."""

from __future__ import annotations

from dynosim.errors import FaultError
from dynosim.faults import FaultRequest
from dynosim.faults.base import Platform
from dynosim.faults.kinds.router_rule import RouterKind
from dynosim.router.chaos import Latency


class RouterLatency(RouterKind):
    name = "router-latency"
    summary = "add --latency before the router sends a request on to a dyno (connect= shows it)"
    options = ("latency",)

    def check(self, request: FaultRequest, platform: Platform) -> None:
        super().check(request, platform)
        if not request.latency:
            raise FaultError(f"{self.name} needs --latency, like --latency 200ms")

    def action(self, request: FaultRequest) -> Latency:
        return Latency(request.latency or 0.0)
