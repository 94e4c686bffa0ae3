"""What the router sees of the app: its web dynos (through the dyno manager, as a `WebFormation`) and
Heroku's router timeouts. The bottom of the router: every layer above may use it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class WebDyno:
    dyno: str  # "web.1"
    port: int  # the dyno's private port on 127.0.0.1


class WebFormation(Protocol):
    """What the router asks the dyno manager; the router never reaches into dynos."""

    def web_dynos_up(self) -> Sequence[WebDyno]:
        """Web dynos that are up right now."""
        ...

    def web_state(self) -> str:
        """ "up", "starting" (web dynos exist, none up yet), "crashed" (all crashed) or "none" (no web dynos)."""
        ...

    async def wait_for_web(self, timeout: float) -> bool:
        """Until some web dyno is up; False after `timeout` seconds."""
        ...


@dataclass(frozen=True)
class RouterTimeouts:
    """Heroku's values as defaults; tests shrink them."""

    service: float = 30.0  # H12: first byte of the response
    idle: float = 55.0  # H15 / H28: rolling idle window, either direction
    connect: float = 5.0  # H19
    boot: float = 75.0  # H20: how long a request waits for a booting dyno
    headers: float = 30.0  # a request head must arrive whole within this (slow clients are cut off, H28)
    handshake: float = 10.0  # a TLS client must finish its handshake within this, or is cut off (H26)
