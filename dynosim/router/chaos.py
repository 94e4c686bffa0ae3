"""Interference with the router's requests, as faults ask for it (`Chaos`): latency added before a
request goes to a dyno, the router answering with an error of its own, a request held past the
router's timeout (H12), a client connection reset (H24).

The router knows nothing of faults: the fault kinds (dynosim/faults/kinds/router_*.py) put `Rule`s
here and take them away. With none, `RouterState.chaos` is None, and a request pays one attribute
check for the feature.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from time import monotonic
from typing import Protocol

from . import codes
from .codes import H13, H26, H27, Code, log_line
from .web import RouterTimeouts, WebDyno, WebFormation

# Heroku's router error codes a router-error may log, by name
CODES: dict[str, Code] = {c.code: c for c in vars(codes).values() if isinstance(c, Code)}
# a client connection closed under a request: Heroku's router logs it so when its node goes away
H24 = Code("H24", "Forced close", 503)
# the code that fits a status, when router-error is given a status and no code
FITTING = {503: H13, 400: H26, 417: H26, 499: H27}
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST, not a FIN


def fitting_code(status: int) -> Code:
    """The H-code Heroku's router would log for a status it serves itself: its own (503 → H13, 400 →
    H26, 499 → H27), else a request error for a 4xx and a connection closed without a response for a 5xx."""
    return FITTING.get(status) or (H26 if status < 500 else H13)


def reason(status: int) -> bytes:
    """The reason phrase of a status the router answers with that codes.REASONS has not (router-error
    may answer any 400..599)."""
    from http import HTTPStatus  # here: only a router-error's answer needs it

    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Error"


@dataclass(frozen=True)
class Latency:
    seconds: float


@dataclass(frozen=True)
class Error:
    code: Code
    status: int
    cause: str = ""  # H26's cause= (Heroku's router names one for every request error)


@dataclass(frozen=True)
class Timeout:
    """The request is held past RouterTimeouts.service: the dyno never answers in time (H12)."""


@dataclass(frozen=True)
class Reset:
    """The client's connection is reset, as when the router node serving it goes away (H24)."""


Action = Latency | Error | Timeout | Reset


class Client(Protocol):
    """The client connection of a request (the router's proxy.ClientConnection)."""

    transport: asyncio.Transport
    closed: bool
    secure: bool

    def watch(self, due: float) -> None: ...


class Router(Protocol):
    """The router as its rules act through it (router.state.RouterState)."""

    chaos: Chaos | None
    formation: WebFormation
    timeouts: RouterTimeouts
    app_host: str

    def log(self, text: str) -> None: ...


class Request(Protocol):
    """A request a rule acts on (the router's proxy.Exchange), before any dyno has it."""

    task: asyncio.Task[None] | None
    backend: WebDyno | None
    connect_time: float | None
    sent_at: float
    resp_done: bool
    method: bytes
    target: bytes
    host: str
    request_id: str
    fwd: str

    @property
    def conn(self) -> Client: ...

    @property
    def router(self) -> Router: ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def fail(self, code: Code, cause: str = "", status: int | None = None) -> None: ...

    async def dispatch(self, backends: Sequence[WebDyno], fresh: bool = False) -> None: ...


@dataclass(frozen=True)
class Rule:
    """One fault's interference: what it does to a request it picks, and how it picks (its own seeded
    random source, so the same seed and the same requests pick the same ones)."""

    id: str  # the fault's id ("f2")
    action: Action
    probability: float
    rng: random.Random

    def picks(self) -> bool:
        return self.probability >= 1.0 or self.rng.random() < self.probability


class Chaos:
    """The rules on now, consulted in the order they were added for each request the router starts."""

    def __init__(self) -> None:
        self.rules: tuple[Rule, ...] = ()

    def takes(self, ex: Request) -> bool:
        """True if a rule took the request over (delayed, answered, held or reset); False: route it as
        usual. Every rule draws for every request, so one fault's pattern does not depend on another's."""
        delay = 0.0
        act: Action | None = None
        for rule in self.rules:
            if rule.picks():
                if isinstance(rule.action, Latency):
                    delay += rule.action.seconds
                elif act is None:
                    act = rule.action
        if delay > 0.0:
            ex.task = ex.loop.create_task(_delayed(ex, delay, act))
            return True
        return act is not None and _act(ex, act)


def switch_on(router: Router, rule: Rule) -> None:
    chaos = router.chaos or Chaos()
    chaos.rules = (*chaos.rules, rule)
    router.chaos = chaos


def switch_off(router: Router, rule_id: str) -> None:
    chaos = router.chaos
    if chaos is None:
        return
    chaos.rules = tuple(r for r in chaos.rules if r.id != rule_id)
    if not chaos.rules:
        router.chaos = None  # back to the one attribute check per request


async def _delayed(ex: Request, seconds: float, act: Action | None) -> None:
    await asyncio.sleep(seconds)  # ex.task: cancelled with the exchange if the client goes first
    if ex.resp_done or ex.conn.closed:
        return
    if act is not None and _act(ex, act):
        return
    backends = ex.router.formation.web_dynos_up()
    await ex.dispatch(random.sample(backends, len(backends)))
    if ex.connect_time is not None:
        ex.connect_time += seconds  # the router's log line shows the latency in connect=


def _act(ex: Request, act: Action) -> bool:
    """Do what the rule says to the request; False if it cannot (no dyno up to hold it at)."""
    if isinstance(act, Error):
        ex.fail(act.code, act.cause, act.status)
    elif isinstance(act, Timeout):
        return _hold(ex)
    else:
        _reset(ex)
    return True


def _hold(ex: Request) -> bool:
    """As if the request went to a dyno that never answered: the watchdog gives the client the H12
    page after RouterTimeouts.service, with dyno=, connect= and service=30000ms as Heroku logs it."""
    backends = ex.router.formation.web_dynos_up()
    if not backends:
        return False  # no dyno to time out at: the router's own H10/H14/H20 apply
    ex.backend = random.choice(backends)
    ex.connect_time = 0.0
    ex.sent_at = now = monotonic()
    ex.conn.watch(now + ex.router.timeouts.service)  # its fail(H12) answers the client
    return True


def _reset(ex: Request) -> None:
    """A RST to the client (it sees ECONNRESET), logged as Heroku's router logs a forced close."""
    ex.resp_done = True
    conn = ex.conn
    sock = conn.transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    ex.router.log(
        log_line(
            H24,
            method=ex.method.decode("latin-1"),
            path=ex.target.decode("utf-8", "replace"),
            host=ex.host or ex.router.app_host,
            request_id=ex.request_id,
            fwd=ex.fwd,
            dyno="",
            connect="",
            service="",
            status="",  # Heroku's H24 line has no status: none was sent
            nbytes="",
            protocol="https" if conn.secure else "http",
        )
    )
    conn.transport.abort()
