"""What the add-on kinds share (addon-outage, addon-restart, addon-failover, addon-latency, redis-oom):
the add-ons they fit, refused at faults:add otherwise, and an add-on's server stopped and started again
off the event loop (`Addons` blocks), each with a line on the log stream."""

from __future__ import annotations

import asyncio
import random
import time
import urllib.parse
from typing import TYPE_CHECKING, ClassVar

from dynosim.errors import FaultError
from dynosim.faults import Fault, FaultRequest
from dynosim.faults.base import FaultKind, Platform, addon

if TYPE_CHECKING:
    from dynosim.addons import Attachment

# how each service stops cleanly, as its own stop at a run's end: acknowledged writes are on disk
SHUTDOWN = {"postgres": "fast shutdown", "redis": "SIGTERM: it writes its append-only file and exits"}


class AddonKind(FaultKind):
    target = "addon"
    services: ClassVar[tuple[str, ...]] = ("postgres", "redis")
    by_chance: ClassVar[bool] = True  # --probability means something: a strike's, a connection's chance

    def check(self, request: FaultRequest, platform: Platform) -> None:
        super().check(request, platform)
        if request.probability < 1.0 and not self.by_chance:
            raise FaultError(
                f"{self.name} takes no --probability: the add-on has one server, and the fault is on for all of it"
            )
        attachment = addon(platform, request.target)
        if attachment.service not in self.services:
            fits = " and ".join(SERVICE_ADDONS[s] for s in self.services)
            raise FaultError(
                f"--target {request.target}: {self.name} acts on {fits} add-ons; "
                f"{attachment.name} is {attachment.plan.partition(':')[0]}"
            )
        away = platform.addons.away(attachment.name)
        if away is not None:
            raise FaultError(
                f"--target {request.target}: another fault has {attachment.name} now ({away}); "
                "wait for it to end or remove it first (see `dynosim faults`)"
            )


SERVICE_ADDONS = {"postgres": "heroku-postgresql", "redis": "heroku-redis"}


def address(attachment: Attachment) -> tuple[int, str, bool]:
    """Where the add-on answers now, as its config var says (a failover changes it): port, password, TLS."""
    url = urllib.parse.urlsplit(next(iter(attachment.config_vars.values())))
    return url.port or 0, urllib.parse.unquote(url.password or ""), url.scheme == "rediss"


def label(attachment: Attachment) -> str:
    return f"{attachment.plan.partition(':')[0]} ({attachment.name})"


async def struck_down(fault: Fault, platform: Platform, rng: random.Random) -> Attachment | None:
    """A one-shot strike's opening: by its probability, unless another fault has the add-on now, its
    server stopped cleanly; the add-on, or None when this strike passes it by."""
    if rng.random() >= fault.request.probability:
        return None
    attachment = addon(platform, fault.request.target)
    if platform.addons.away(attachment.name) is not None:  # another fault has it down now
        return None
    await stop_server(fault, platform, attachment)
    return attachment


async def stop_server(fault: Fault, platform: Platform, attachment: Attachment) -> None:
    started = time.monotonic()
    await asyncio.to_thread(platform.addons.stop_server, attachment.name)
    platform.logs.hint(
        "faults",
        f"{fault.id}: {label(attachment)} is down ({SHUTDOWN[attachment.service]}, in "
        f"{(time.monotonic() - started) * 1000:.0f} ms); its clients' connections are refused",
    )


async def start_server(fault: Fault, platform: Platform, attachment: Attachment, port: int | None = None) -> None:
    started = time.monotonic()
    answers = await asyncio.to_thread(platform.addons.start_server, attachment.name, port)
    platform.logs.hint(
        "faults",
        f"{fault.id}: {label(attachment)} is up again on port {answers}, same data "
        f"(in {(time.monotonic() - started) * 1000:.0f} ms){', behind the proxy' if port is not None else ''}",
    )
