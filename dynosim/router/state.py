"""The router's shared state (`RouterState`): what its connections and TLS layer read and report to."""

from __future__ import annotations

import asyncio
import ssl
import time
from concurrent.futures import Future
from typing import Protocol

from ..logs import LogLine, LogStream
from .chaos import Chaos
from .redirects import PortlessRedirects, RedirectLoops
from .upstream import UpstreamPool
from .web import RouterTimeouts, WebFormation

LOG_BATCH = 0.01  # seconds a router line may wait to be published with others


class Connection(Protocol):
    """A client connection, as the router holds it until it closes (to cut it off when stopping)."""

    transport: asyncio.Transport


class RouterState:
    """What every connection of the router shares: the web dynos it routes to, its timeouts and log, the
    app's host, TLS, the keep-alive pool. The layers below the server (connections, TLS) see the router
    as this; `Router` adds the listening socket."""

    def __init__(
        self,
        formation: WebFormation,
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
        self.redirects = RedirectLoops()
        self.public_forwarded_port = forwarded_port == "public"
        self.ports = PortlessRedirects(watching=not self.public_forwarded_port)
        self.after_line: dict[object, str] = {}  # an exchange -> a hint to give just after its router line
        self.maintenance = False  # H80 for every request while True
        self.chaos: Chaos | None = None  # the faults' rules for requests, while any is on
        self.stopping = False
        self.connections: set[Connection] = set()
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self.pool: UpstreamPool = None  # type: ignore[assignment]
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
