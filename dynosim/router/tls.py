"""HTTPS at the router: one public port for plain HTTP and TLS.

Heroku's router terminates TLS and hands dynos plain HTTP. Here the first byte of a new connection tells
the two apart: 0x16 opens a TLS handshake record, and no HTTP request starts with it. That byte is peeked
at, never read, so a plain connection goes on exactly as without TLS; a TLS one gets a TLSLayer (ssl.SSLObject
over memory BIOs) between its TCP transport and the same ClientConnection, which tells the dyno
`X-Forwarded-Proto: https` and logs `protocol=https`.

A handshake that fails or stalls closes that connection only, with one `heroku[router]` line:
`at=error code=H26 desc="Request Error" cause="TLS handshake failed: ..."` in Heroku's field order, with
empty method, path and status (no HTTP was spoken).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Protocol

from .codes import H26, log_line
from .http import new_request_id
from .state import RouterState
from .upstream import deadline

HANDSHAKE = 0x16  # the first byte of every TLS client: a record of type handshake
READ_SIZE = 1 << 16  # plaintext read from the TLS layer at once

_DISTRUST = ("ALERT_UNKNOWN_CA", "ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_UNKNOWN")


class Client(Protocol):
    """What TLS needs of the router's client connection (proxy.ClientConnection), which it sits below:
    its state, and the asyncio.Protocol methods the TLS layer calls as that connection's transport."""

    router: RouterState
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    peer: str
    sniffing: FirstByte | None
    handshaking: bool
    closed: bool

    def secured(self, transport: asyncio.Transport) -> None: ...

    def data_received(self, data: bytes) -> None: ...

    def eof_received(self) -> bool | None: ...

    def connection_lost(self, exc: Exception | None) -> None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


# -- which protocol: the first byte


def _peek(tsock: socket.socket) -> int | None:
    """The connection's first byte, left in the socket: None while nothing came yet, -1 at its end."""
    view = socket.socket(tsock.family, tsock.type, tsock.proto, tsock.fileno())  # the same socket: no syscall
    try:
        data = view.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return -1
    finally:
        view.detach()  # the transport keeps its socket
    return data[0] if data else -1


def sniff(conn: Client) -> FirstByte | None:
    """Called as a connection is made: go on as plain HTTP, start TLS, or wait for the first byte."""
    transport = conn.transport
    tsock = transport.get_extra_info("socket")
    first = _peek(tsock)
    if first is None:  # a client that connected and has not sent yet: its first byte decides
        transport.pause_reading()
        return FirstByte(conn, tsock)
    if first == HANDSHAKE:
        start(conn)
    return None  # plain HTTP (or an empty connection): the transport reads it as usual


class FirstByte:
    """Waits, with the transport's reading paused, for the first byte of a connection."""

    __slots__ = ("conn", "sock")

    def __init__(self, conn: Client, tsock: socket.socket) -> None:
        self.conn = conn
        # the loop watches a transport's own descriptor only through the transport: watch a duplicate
        self.sock: socket.socket | None = tsock.dup()
        conn.loop.add_reader(self.sock, self._ready)

    def _ready(self) -> None:
        try:
            data = self.sock.recv(1, socket.MSG_PEEK)  # type: ignore[union-attr]
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        self.cancel()
        conn = self.conn
        conn.sniffing = None
        if conn.closed:
            return
        if data and data[0] == HANDSHAKE:
            start(conn)
        else:
            conn.transport.resume_reading()

    def cancel(self) -> None:
        sock = self.sock
        if sock is not None:
            self.sock = None
            self.conn.loop.remove_reader(sock)
            sock.close()


# -- the handshake


def start(conn: Client) -> None:
    router = conn.router
    conn.handshaking = True
    conn.transport.pause_reading()  # not one byte of the handshake for the HTTP parser
    task = conn.loop.create_task(_handshake(conn))
    router.handshakes.add(task)
    task.add_done_callback(router.handshakes.discard)


async def _handshake(conn: Client) -> None:
    router = conn.router
    if conn.closed:
        conn.handshaking = False
        return
    context = await router.tls_context()
    if context is None:  # the certificate could not be made (said once at start): plain HTTP only
        conn.handshaking = False
        conn.transport.close()
        return
    layer = TLSLayer(conn.transport, context)
    try:
        async with deadline(router.timeouts.handshake):
            await layer.handshake
    except (TimeoutError, OSError) as exc:  # ssl.SSLError is an OSError
        if not conn.closed:
            if not router.stopping:
                router.log(failed_line(conn, exc))
            if isinstance(exc, ssl.SSLError):
                layer.close()  # the alert it made goes out first
            else:
                layer.abort()
            conn.connection_lost(None)
        return
    except asyncio.CancelledError:
        if not conn.closed:
            layer.abort()
            conn.connection_lost(None)
        raise
    finally:
        conn.handshaking = False
    if conn.closed:  # closed by the router (stopping) right after the handshake
        layer.abort()
        return
    conn.secured(layer)
    layer.hand_over(conn)


class TLSLayer(asyncio.Transport, asyncio.Protocol):
    """TLS over a client's TCP transport with an ssl.SSLObject and two memory BIOs: the protocol of that
    transport, and the transport of the ClientConnection above it. Records are encrypted as they are
    written, so the TCP transport's own buffer and flow control are the only ones. asyncio's start_tls
    cost the router three times nginx's CPU per request over TLS; this costs what OpenSSL does, plus
    a few calls.
    """

    def __init__(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        super().__init__()
        self.raw = raw
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.app: Client | None = None
        self.closing = False
        self.secure = False  # the handshake succeeded (what `handshake` says, without a call per read)
        self._early: list[bytes] = []  # data sent right behind the client's last handshake message
        self._ended = False  # the client's close_notify or EOF came before the hand-over
        self._lost: tuple[Exception | None] | None = None  # the connection was lost before the hand-over
        self._paused = False  # the TCP buffer was full before the hand-over
        raw.set_protocol(self)
        raw.resume_reading()

    # -- the TCP transport's protocol

    def data_received(self, data: bytes) -> None:
        self.incoming.write(data)
        if not self.secure:
            if self.handshake.done():  # failed: nothing more is read from this client
                return
            self._shake()
            if not self.secure:
                return
        self._read()

    def _shake(self) -> None:
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._send()
            return
        except (ssl.SSLError, OSError) as exc:
            self._send()
            self.handshake.set_exception(exc)
            return
        self._send()
        self.secure = True
        self.handshake.set_result(None)

    def _read(self) -> None:
        chunks: list[bytes] = []
        ended = False
        while True:
            try:
                chunk = self.sslobj.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                ended = True
                break
            except ssl.SSLError as exc:  # a corrupt record: nothing on this connection can be trusted
                self.raw.abort()
                self.connection_lost(exc)
                return
            if not chunk:  # the client's close_notify
                ended = True
                break
            chunks.append(chunk)
            if not self.incoming.pending and not self.sslobj.pending():
                break  # all read: spares the exception that says so
        self._send()  # TLS 1.3 answers some records with records of its own
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        app = self.app
        if app is None:
            if data:
                self._early.append(data)
            self._ended = self._ended or ended
            return
        if data:
            app.data_received(data)
        if ended and not self.closing and not app.eof_received():
            self.close()

    def eof_received(self) -> bool:
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionResetError("the client closed the connection"))
            return False
        if self.app is None:
            self._ended = True
            return True  # kept open until the hand-over says what the ClientConnection wants
        return bool(self.app.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(exc or ConnectionResetError("the client closed the connection"))
        if self._lost is not None:
            return
        self._lost = (exc,)
        if self.app is not None:
            self.app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.app is not None:
            self.app.pause_writing()
        else:
            self._paused = True

    def resume_writing(self) -> None:
        if self.app is not None:
            self.app.resume_writing()
        else:
            self._paused = False

    def hand_over(self, app: Client) -> None:
        self.app = app
        if self._paused:
            app.pause_writing()
        if self._early and not app.closed:
            data, self._early = b"".join(self._early), []
            app.data_received(data)
        if self._lost is not None:
            app.connection_lost(self._lost[0])
        elif self._ended and not self.closing and not app.eof_received():
            self.close()

    # -- the ClientConnection's transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing or self._lost is not None:
            return
        try:
            self.sslobj.write(data)
        except ssl.SSLError:
            self.abort()
            return
        self.raw.write(self.outgoing.read())

    def _send(self) -> None:
        if self.outgoing.pending:
            self.raw.write(self.outgoing.read())

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        if self.secure:
            try:
                self.sslobj.unwrap()  # close_notify; the client's own is not waited for
            except (ssl.SSLError, ValueError):
                pass
        self._send()
        self.raw.close()

    def abort(self) -> None:
        self.closing = True
        self.raw.abort()

    def is_closing(self) -> bool:
        return self.closing or self.raw.is_closing()

    def pause_reading(self) -> None:
        self.raw.pause_reading()

    def resume_reading(self) -> None:
        self.raw.resume_reading()

    def is_reading(self) -> bool:
        return self.raw.is_reading()

    def get_write_buffer_size(self) -> int:
        return self.raw.get_write_buffer_size()

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "ssl_object":
            return self.sslobj
        return self.raw.get_extra_info(name, default)


def failed_line(conn: Client, exc: BaseException) -> str:
    router = conn.router
    return log_line(
        H26,
        method="",
        path="",
        host=router.app_host,
        request_id=new_request_id(),
        fwd=conn.peer,
        dyno="",
        connect="",
        service="",
        status="",
        nbytes="",
        cause="TLS handshake failed: " + _why(exc, router.timeouts.handshake),
        protocol="https",
    )


def _why(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        said = reason.lower().replace("_", " ") or str(exc)
        if any(alert in reason for alert in _DISTRUST):
            return f"the client does not trust the certificate ({said}); `dynosim certs` says how to trust it"
        if reason == "TLSV1_ALERT_DECRYPT_ERROR":  # what a client trusting an older dynosim CA of the same name says
            return f"the client could not verify the certificate ({said}): does it trust another dynosim CA? `dynosim certs` names this one"
        if reason in ("UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE"):
            return f"{said} (the router speaks TLS 1.2 and 1.3, as Heroku's does)"
        return said.replace('"', "'")
    if isinstance(exc, (ConnectionAbortedError, asyncio.TimeoutError, TimeoutError)):
        return f"not finished within {timeout:g}s"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, EOFError)) or not str(exc):
        return "the client closed the connection"
    return str(exc).replace('"', "'")
