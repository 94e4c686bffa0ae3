"""Connections from the router to web dynos, and the keep-alive pool that reuses them (as Router 2.0 does)."""

from __future__ import annotations

import asyncio
import socket
from typing import Protocol

from .web import WebDyno

UPSTREAM_FULL = 1  # a reason the client's reading is paused: the dyno is not taking the body fast enough

POOL_IDLE_TIMEOUT = 90.0  # Router 2.0 closes a pooled dyno connection unused this long
POOL_MAX_IDLE = 64  # idle connections kept per dyno


deadline = asyncio.timeout  # no extra task per call, unlike wait_for


class Client(Protocol):
    """The client connection an exchange answers: paused while its dyno cannot take more."""

    def block(self, reason: int) -> None: ...

    def unblock(self, reason: int) -> None: ...


class Exchange(Protocol):
    """The request an upstream carries (the router's proxy.Exchange), told what the dyno sends."""

    @property
    def conn(self) -> Client: ...

    def response_data(self, data: bytes) -> None: ...

    def tunnel_from_dyno(self, data: bytes) -> None: ...

    def upstream_lost(self, up: Upstream) -> None: ...


class Upstream(asyncio.Protocol):
    """One TCP connection to a dyno; it carries one exchange at a time, or sits idle in the pool."""

    def __init__(self, pool: UpstreamPool, backend: WebDyno) -> None:
        self.pool = pool
        self.backend = backend
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.reused = False
        self.closed = False
        self.idle_since = 0.0
        self.write_blocked = False  # its send buffer is full, so the client's reading is paused
        self.read_paused = False  # the client is not reading fast enough, so this one is paused
        self.tunnel: asyncio.Transport | None = None  # the client, once a WebSocket upgrade succeeded

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.exchange.tunnel_from_dyno(data)  # type: ignore[union-attr]
            return
        exchange = self.exchange
        if exchange is None:  # a dyno talking on an idle connection: nothing can be trusted on it
            self.close()
            return
        exchange.response_data(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.upstream_lost(self)
        else:
            self.pool.discard(self)

    def pause_writing(self) -> None:
        self.write_blocked = True
        if self.exchange is not None:
            self.exchange.conn.block(UPSTREAM_FULL)

    def resume_writing(self) -> None:
        self.write_blocked = False
        if self.exchange is not None:
            self.exchange.conn.unblock(UPSTREAM_FULL)

    def pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def resume_reading(self) -> None:
        if self.read_paused and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    def write(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def close(self) -> None:
        self.closed = True
        self.exchange = None
        if self.transport is not None:
            self.transport.close()


class UpstreamPool:
    """Idle keep-alive connections per dyno. A connection goes back only after a complete exchange."""

    def __init__(self, loop: asyncio.AbstractEventLoop, idle_timeout: float = POOL_IDLE_TIMEOUT) -> None:
        self.loop = loop
        self.idle_timeout = idle_timeout
        self.idle: dict[int, list[Upstream]] = {}  # by the dyno's port (cheaper to hash than a WebDyno)
        self.retired: set[int] = set()  # ports of stopping dynos (a later dyno on the port clears it)
        self._sweeper: asyncio.TimerHandle | None = None

    def take(self, backend: WebDyno) -> Upstream | None:
        self.retired.discard(backend.port)  # chosen again: a new dyno took the port
        conns = self.idle.get(backend.port)
        while conns:
            up = conns.pop()
            if not up.closed:  # closed is set by close() and by connection_lost()
                up.reused = True
                return up
        return None

    async def connect(self, backend: WebDyno, timeout: float) -> Upstream:
        """A new connection to the dyno; TimeoutError (H19) or OSError (H21, refused) when it cannot be had.

        A plain non-blocking connect, then the transport: a third cheaper in CPU than
        create_connection(host, port), which matters when every request needs a new connection
        (a dyno that closes after each response, as HTTP/1.0 servers do).
        """
        loop = self.loop
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with deadline(timeout):
                await loop.sock_connect(sock, ("127.0.0.1", backend.port))
            _, up = await loop.create_connection(lambda: Upstream(self, backend), sock=sock)
        except BaseException:
            sock.close()
            raise
        return up

    def release(self, up: Upstream) -> None:
        up.exchange = None
        up.resume_reading()  # an idle connection must still notice the dyno closing it
        if up.closed:
            return
        if up.backend.port in self.retired:  # its dyno is stopping: no keep-alive holds it up
            up.close()
            return
        conns = self.idle.setdefault(up.backend.port, [])
        if len(conns) >= POOL_MAX_IDLE:
            up.close()
            return
        up.idle_since = self.loop.time()
        conns.append(up)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.idle_timeout / 2, self._sweep)

    def forget(self, port: int) -> None:
        """The dyno on `port` is stopping: close the idle connections that would keep it from exiting."""
        self.retired.add(port)
        for up in self.idle.pop(port, []):
            up.close()

    def discard(self, up: Upstream) -> None:
        conns = self.idle.get(up.backend.port)
        if conns and up in conns:
            conns.remove(up)

    def _sweep(self) -> None:
        self._sweeper = None
        horizon = self.loop.time() - self.idle_timeout
        for port, conns in list(self.idle.items()):
            for up in [up for up in conns if up.idle_since < horizon]:
                conns.remove(up)
                up.close()
            if not conns:
                del self.idle[port]
        if self.idle:
            self._sweeper = self.loop.call_later(self.idle_timeout / 2, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conns in self.idle.values():
            for up in conns:
                up.close()
        self.idle.clear()
