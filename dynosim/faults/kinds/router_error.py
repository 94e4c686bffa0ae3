"""router-error: the router answers a request itself, with --status (503) and Heroku's error page for
--code, and logs `at=error code=H13 desc="…"` as Heroku's router does; the dyno never sees it. With
a status and no code, the code that fits the status (router/chaos.py's fitting_code)."""

from __future__ import annotations

from dynosim.errors import FaultError
from dynosim.faults import FaultRequest
from dynosim.faults.base import Platform
from dynosim.faults.kinds.router_rule import RouterKind
from dynosim.router.chaos import CODES, Error, fitting_code
from dynosim.router.codes import H26

DEFAULT_STATUS = 503  # what Heroku's router serves for its own errors


class RouterError(RouterKind):
    name = "router-error"
    summary = "the router answers itself with --status (503) and the page and log line of --code (H13)"
    options = ("status", "code")

    def check(self, request: FaultRequest, platform: Platform) -> None:
        super().check(request, platform)
        if request.status is not None and not 400 <= request.status <= 599:
            raise FaultError(f"--status {request.status}: the router's errors are 400..599, like --status 503")
        if request.code is not None and request.code.upper() not in CODES:
            raise FaultError(f"--code {request.code}: not one of Heroku's router codes here; codes: {', '.join(CODES)}")

    def action(self, request: FaultRequest) -> Error:
        status = request.status or (CODES[request.code.upper()].status if request.code else DEFAULT_STATUS)
        code = CODES[request.code.upper()] if request.code else fitting_code(status)
        return Error(code, status, "refused by a router-error fault" if code is H26 else "")
