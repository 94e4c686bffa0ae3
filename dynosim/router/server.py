"""The router: Heroku's HTTP front door on the public port, spreading requests over the web dynos that are up."""
from __future__ import annotations

import asyncio
import ssl
from concurrent.futures import Future
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import PortError
from ..logs import LogLine, LogStream
from ..runtime.ports import claim_port
from .proxy import ClientConnection
from .tls import PortlessRedirects, RedirectLoops
from .upstream import UpstreamPool


@dataclass(frozen=True, slots=True)
class Backend:
    dyno: str  # "web.1"
    port: int  # the dyno's private port on 127.0.0.1


class Formation(Protocol):
    """What the router asks the dyno manager; the router never reaches into dynos."""

    def web_backends(self) -> Sequence[Backend]:
        """Web dynos that are up right now."""
        ...

    def web_state(self) -> str:
        """"up", "starting" (web dynos exist, none up yet), "crashed" (all crashed) or "none" (no web dynos)."""
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


LOG_BATCH = 0.01  # seconds a router line may wait to be published with others


class Router:
    def __init__(
        self,
        formation: Formation,
        logs: LogStream,
        *,
        host: str = "127.0.0.1",
        port: int = 5000,
        timeouts: RouterTimeouts = RouterTimeouts(),
        app_host: str = "localhost",
        tls: ssl.SSLContext | Future[ssl.SSLContext | None] | None = None,
        forwarded_port: str = "heroku",
    ) -> None:
        """With `tls` (a server context), the public port also speaks HTTPS: TLS is told apart from plain
        HTTP by a connection's first byte, and terminated here, as Heroku's router does.
        `forwarded_port`: "heroku" sends dynos `X-Forwarded-Port: 80` or `443` as Heroku's router does;
        "public" sends the port the client connected to, so URLs an app builds from it land here."""
        self.formation = formation
        self.logs = logs
        self.host = host
        self._port = port
        self.timeouts = timeouts
        self.app_host = app_host
        self.app_host_b = app_host.encode()
        self.tls = tls
        self.handshakes: set[asyncio.Task[None]] = set()
        self.redirects = RedirectLoops(self)
        self.public_forwarded_port = forwarded_port == "public"
        self.ports = PortlessRedirects(self)
        self.after_line: dict[object, str] = {}  # an exchange -> a hint to give just after its router line
        self.maintenance = False  # H80 for every request while True
        self.stopping = False
        self.connections: set[ClientConnection] = set()
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.pool: UpstreamPool = None  # type: ignore[assignment]
        self._server: asyncio.base_events.Server | None = None
        self._lines: list[LogLine] = []
        self._publish: asyncio.TimerHandle | None = None

    def log(self, text: str) -> None:
        """Publish a `heroku[router]` line. Lines go out in batches, at most LOG_BATCH seconds late:
        a printer woken per line would cost more than the request did."""
        self._lines.append(LogLine(time.time(), "heroku", "router", text))
        if self._publish is None:
            self._publish = self.loop.call_later(LOG_BATCH, self._flush_log)

    def hint(self, text: str) -> None:
        """A `dynosim[router]` line: what dynosim has to say about the app, after the router lines so far."""
        if self._publish is not None:
            self._publish.cancel()
            self._publish = None
        self._flush_log()
        self.logs.hint("router", text)

    def _flush_log(self) -> None:
        self._publish = None
        lines, self._lines = self._lines, []
        if lines:
            self.logs.publish(lines)

    async def tls_context(self) -> ssl.SSLContext | None:
        """The server context; given as a future, it is waited for by the first TLS client only, so
        making the certificate never delays the start of a run."""
        if isinstance(self.tls, Future):
            self.tls = await asyncio.wrap_future(self.tls)
        return self.tls

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.pool = UpstreamPool(self.loop)
        self.stopping = False
        try:
            self._server = await self.loop.create_server(
                lambda: ClientConnection(self), self.host, self._port, reuse_address=True, backlog=1024
            )
        except OSError as exc:
            claim_port(self._port, self.host)  # raises a PortError naming who holds the port
            raise PortError(
                f"cannot listen on {self.host}:{self._port}: {exc.strerror}; choose another with --port"
            ) from None
        self._port = self._server.sockets[0].getsockname()[1]

    def forget(self, port: int) -> None:
        """A web dyno is stopping: keep no idle connection open to it."""
        if self.pool is not None:
            self.pool.forget(port)

    async def stop(self) -> None:
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for task in list(self.handshakes):
            task.cancel()
        for conn in list(self.connections):
            conn.transport.abort()
        if self.pool is not None:
            self.pool.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        await asyncio.sleep(0)  # let the aborted connections run their connection_lost
        if self._publish is not None:
            self._publish.cancel()
        self._flush_log()
