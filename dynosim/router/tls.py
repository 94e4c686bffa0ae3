"""HTTPS at the router: one public port for plain HTTP and TLS, and the redirect loop TLS can reveal.

Heroku's router terminates TLS and hands dynos plain HTTP. Here the first byte of a new connection tells
the two apart: 0x16 opens a TLS handshake record, and no HTTP request starts with it. That byte is peeked
at, never read, so a plain connection goes on exactly as without TLS; a TLS one is handed to asyncio's own
TLS (`loop.start_tls`) and then served by the same ClientConnection, which tells the dyno
`X-Forwarded-Proto: https` and logs `protocol=https`.

A handshake that fails or stalls closes that connection only, with one `heroku[router]` line:
`at=error code=H26 desc="Request Error" cause="TLS handshake failed: ..."` in Heroku's field order, with
empty method, path and status (no HTTP was spoken).
"""
from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .codes import H26, log_line
from .http import new_request_id

if TYPE_CHECKING:
    from .proxy import ClientConnection, Exchange
    from .server import Router

HANDSHAKE = 0x16  # the first byte of every TLS client: a record of type handshake
REDIRECTS = frozenset({301, 302, 303, 307, 308})
REDIRECT_LOOP = 3  # an https request redirected to itself this many times in a row is a loop
_WATCHED_PATHS = 1000  # bound on the paths counted at once

_DISTRUST = ("ALERT_UNKNOWN_CA", "ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_UNKNOWN")


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


def sniff(conn: ClientConnection) -> FirstByte | None:
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

    def __init__(self, conn: ClientConnection, tsock: socket.socket) -> None:
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


def start(conn: ClientConnection) -> None:
    router = conn.router
    conn.handshaking = True
    conn.transport.pause_reading()  # not one byte of the handshake for the HTTP parser
    task = conn.loop.create_task(_handshake(conn))
    router.handshakes.add(task)
    task.add_done_callback(router.handshakes.discard)


async def _handshake(conn: ClientConnection) -> None:
    router = conn.router
    if conn.closed:
        conn.handshaking = False
        return
    context = await router.tls_context()
    if context is None:  # the certificate could not be made (said once at start): plain HTTP only
        conn.handshaking = False
        conn.transport.close()
        return
    handover = Handover()
    try:
        tls = await conn.loop.start_tls(
            conn.transport, handover, context,
            server_side=True, ssl_handshake_timeout=router.timeouts.handshake,
        )
    except (OSError, asyncio.TimeoutError) as exc:  # ssl.SSLError is an OSError, and so is a stalled handshake
        if not conn.closed:
            if not router.stopping:
                router.log(failed_line(conn, exc))
            conn.connection_lost(None)  # start_tls closed the transport, whose protocol is no longer conn
        return
    except asyncio.CancelledError:
        if not conn.closed:
            conn.connection_lost(None)
        raise
    finally:
        conn.handshaking = False
    if tls is None or conn.closed:  # closed by the router (stopping), or lost right after the handshake
        if not conn.closed:
            conn.connection_lost(None)
        return
    conn.secured(tls)  # type: ignore[arg-type]
    tls.set_protocol(conn)
    handover.hand_over(conn)


class Handover(asyncio.Protocol):
    """The TLS connection's protocol from the handshake until the ClientConnection takes it: a request sent
    right behind the client's last handshake message arrives before `start_tls` returns, and waits here."""

    def __init__(self) -> None:
        self.conn: ClientConnection | None = None
        self.data: list[bytes] = []
        self.lost = False
        self.exc: Exception | None = None
        self.paused = False

    def data_received(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.data_received(data)
        else:
            self.data.append(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.conn.connection_lost(exc)
        else:
            self.lost, self.exc = True, exc

    def pause_writing(self) -> None:
        if self.conn is not None:
            self.conn.pause_writing()
        else:
            self.paused = True

    def resume_writing(self) -> None:
        if self.conn is not None:
            self.conn.resume_writing()
        else:
            self.paused = False

    def hand_over(self, conn: ClientConnection) -> None:
        self.conn = conn  # what is still on its way here (a loss already scheduled) goes to conn too
        if self.paused:
            conn.pause_writing()
        if self.data and not conn.closed:
            data, self.data = b"".join(self.data), []
            conn.data_received(data)
        if self.lost:
            conn.connection_lost(self.exc)


def failed_line(conn: ClientConnection, exc: BaseException) -> str:
    router = conn.router
    return log_line(
        H26, method="", path="", host=router.app_host, request_id=new_request_id(), fwd=conn.peer,
        dyno="", connect="", service="", status="", nbytes="",
        cause="TLS handshake failed: " + _why(exc, router.timeouts.handshake), protocol="https",
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


# -- the redirect loop of an app that does not trust X-Forwarded-Proto


class RedirectLoops:
    """An app that redirects to https but does not trust X-Forwarded-Proto sees every request as plain
    HTTP, so it redirects https requests to themselves: the loop it shows on Heroku. Named once a run."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.counts: dict[tuple[str, bytes], int] = {}
        self.named = False
        self.waiting: Exchange | None = None  # the exchange whose router line the hint follows
        self.text = ""

    def response(self, ex: Exchange, status: int, head: Sequence[bytes]) -> None:
        """A response head to an https request, as a flat [status line (4), name, ": ", value, CRLF, ...]."""
        key = (ex.host, ex.target)
        if status not in REDIRECTS or not self._to_itself(ex, head):
            if self.counts:
                self.counts.pop(key, None)
            return
        n = self.counts.pop(key, 0) + 1
        if n < REDIRECT_LOOP:
            if len(self.counts) >= _WATCHED_PATHS:
                self.counts.clear()
            self.counts[key] = n
            return
        self.named = True
        self.counts.clear()
        url = f"https://{ex.host}{ex.target.decode('latin-1')}"
        self.waiting = ex
        self.text = (
            f"the app redirects https requests to https forever: it does not trust X-Forwarded-Proto "
            f"({ex.method.decode('latin-1')} {url} was answered {status} with a redirect to itself {n} times "
            "in a row; the router terminates TLS and the dyno gets plain HTTP, as on Heroku). "
            "Fix: trust the header: gunicorn --forwarded-allow-ips='*' (FORWARDED_ALLOW_IPS), "
            'Django SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https"), '
            "Werkzeug ProxyFix(app.wsgi_app, x_proto=1)"
        )

    def logged(self) -> None:
        """The exchange that made it a loop has its router line: now the loop is named, just after it."""
        self.waiting = None
        self.router.hint(self.text)

    @staticmethod
    def _to_itself(ex: Exchange, head: Sequence[bytes]) -> bool:
        for i in range(4, len(head) - 2, 4):
            if head[i].lower() == b"location":
                location = head[i + 2].decode("latin-1").strip()
                break
        else:
            return False
        try:
            url = urlsplit(location)
        except ValueError:
            return False
        if url.scheme.lower() != "https" or url.netloc.lower() != ex.host.lower():
            return False
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        return target == ex.target.decode("latin-1")
