"""router-timeout: a request held as if its dyno never answered, until the router's 30 s are up
(RouterTimeouts.service): the client gets the H12 page and the router logs H12 with service=30000ms,
as Heroku's does. The dyno never sees the request."""

from __future__ import annotations

from dynosim.faults import FaultRequest
from dynosim.faults.kinds.router_rule import RouterKind
from dynosim.router.chaos import Timeout


class RouterTimeout(RouterKind):
    name = "router-timeout"
    summary = "hold a request past the router's 30 s: the client gets H12, as from a dyno that never answers"

    def action(self, request: FaultRequest) -> Timeout:
        return Timeout()
