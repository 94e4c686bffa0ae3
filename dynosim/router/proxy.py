"""A client's connection to the router, and each request on it (an exchange) on its way to a web dyno.

Everything here runs in protocol callbacks on the caller's event loop: the usual request (a pooled dyno
connection is free) is parsed, forwarded, answered and logged without creating a task. A task is made
only when the router has to wait: for a booting dyno (H20), or for a new connection (H19, H21).

Bodies stream both ways and are never held whole: a full send buffer on one side pauses reading on the
other (asyncio's flow control), and bytes that arrive before a dyno is attached are capped at
BUFFER_LIMIT before reading pauses.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Sequence
from time import monotonic  # the clock of asyncio's loop.time() and call_at()

import httptools

from .chaos import reason
from .codes import (
    H10,
    H12,
    H13,
    H14,
    H15,
    H17,
    H18,
    H19,
    H20,
    H21,
    H26,
    H27,
    H28,
    H80,
    REASONS,
    Code,
    log_line,
    ms,
    page,
)
from .http import (
    CONNECTION,
    EXPECT,
    HOST,
    LENGTH,
    MAX_HEADERS,
    MAX_LINE,
    MAX_NAME,
    REQUEST_ID,
    REQUEST_SPECIAL,
    RESPONSE_SPECIAL,
    TRANSFER_ENCODING,
    UPGRADE,
    VIA,
    VIA_VALUE,
    XFF,
    connection_tokens,
    drop_listed,
    new_request_id,
    valid_request_id,
)
from .redirects import REDIRECTS
from .state import RouterState
from .tls import FirstByte, sniff
from .upstream import UPSTREAM_FULL, Upstream
from .web import WebDyno

# reasons the client's reading is paused (UPSTREAM_FULL is the third)
BUFFERED = 2  # body bytes wait for a dyno to be attached
PIPELINED = 4  # a further request waits for the one being served

BUFFER_LIMIT = 64 * 1024  # request bytes held while no dyno is attached yet
MAX_RESPONSE_HEAD = 1 << 20  # Heroku's router buffers 1 MB of a response; a longer head is garbage
MAX_ATTEMPTS = 10  # Heroku tries up to 10 dynos when connecting fails
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LISTED_KEEP = frozenset({b"close", b"keep-alive", b"upgrade"})


class Reject(Exception):
    """A request the router refuses before any dyno sees it (H26, 400)."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class BadResponse(Exception):
    """A dyno's response the router cannot pass on (H17)."""


class ClientConnection(asyncio.Protocol):
    """One client TCP connection: parses its requests and serves them one at a time, in order."""

    def __init__(self, router: RouterState) -> None:
        self.router = router
        self.loop = router.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer = ""
        self.forwarded_port = b"80"  # X-Forwarded-Port: Heroku's 80 and 443, or the public port (Router)
        self.scheme = b"http"  # https once the router terminated TLS on this connection
        self.secure = False
        self.sniffing: FirstByte | None = None  # waiting for the first byte: plain HTTP or TLS
        self.handshaking = False  # the TLS handshake keeps its own time (RouterTimeouts.handshake)
        self.current: Exchange | None = None  # the request being read
        self.active: Exchange | None = None  # the request being answered
        self.queued: deque[Exchange] = deque()  # pipelined requests read ahead of their turn
        self.upgrade_ex: Exchange | None = None
        self.blocked = 0
        self.write_paused = False
        self.tunnel: Upstream | None = None  # the dyno, once a WebSocket upgrade succeeded
        self.upgraded = False  # the parser stopped after an Upgrade request: no more HTTP on this connection
        self.broken = False  # a malformed request was seen: close once the current answer is out
        self.read_done = False  # a request said Connection: close: nothing after it is read (RFC 9112 9.6)
        self.closed = False
        self.line_len = 0
        self.head_timer: asyncio.TimerHandle | None = None
        self.idle_since = 0.0
        self.timer: asyncio.TimerHandle | None = None  # the watchdog: one lazy timer for every timeout
        self.timer_when = 0.0

    # -- the connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.peer = peer[0] if peer else ""
        if self.router.public_forwarded_port:
            self.forwarded_port = str(sock[1]).encode() if sock else b""
        self.router.connections.add(self)
        self.idle_since = monotonic()
        self.watch(self.idle_since + self.router.timeouts.idle)
        if self.router.tls is not None:
            self.sniffing = sniff(self)

    def secured(self, transport: asyncio.Transport) -> None:
        """The TLS handshake succeeded: from now on this connection reads and writes through TLS."""
        self.transport = transport
        self.scheme = b"https"
        self.secure = True
        if not self.router.public_forwarded_port:
            self.forwarded_port = b"443"

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.active.tunnel_from_client(data)  # type: ignore[union-attr]
            return
        if self.broken or self.read_done:
            return
        if self.upgraded:
            self.upgrade_ex.request_raw(data)  # type: ignore[union-attr]
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgraded = True
            rest = data[exc.args[0] :]
            if rest and self.upgrade_ex is not None:
                self.upgrade_ex.request_raw(rest)
            return
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, Reject):
                raise exc.__context__ or exc from None  # our bug: asyncio closes this connection and reports it
            self.reject(exc.__context__.cause)
            return
        except httptools.HttpParserError as exc:
            if not self.read_done:  # bytes after a Connection: close request are dropped, not refused (H26)
                self.reject(self._parse_cause(exc))
            return
        ex = self.current
        if ex is not None and not ex.head_done and not self.closed:
            # still inside a request head: bound the line being received, and the time the head takes
            nl = data.rfind(b"\n")
            self.line_len = self.line_len + len(data) if nl < 0 else len(data) - nl - 1
            if self.line_len > MAX_LINE:
                self.reject("request line too long" if not ex.target else "header line too long")
                return
            if self.head_timer is None:
                self.head_timer = self.loop.call_at(ex.received + self.router.timeouts.headers, self._head_timeout)

    def eof_received(self) -> bool:
        return False  # a client that stops sending has gone (H27 if it was waiting)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.router.connections.discard(self)
        if self.sniffing is not None:
            self.sniffing.cancel()
            self.sniffing = None
        for timer in (self.head_timer, self.timer):
            if timer is not None:
                timer.cancel()
        self.head_timer = self.timer = None
        if self.active is not None:
            self.active.client_gone()
        for ex in self.queued:
            ex.stop_work()
        self.queued.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.active
        if ex is not None and ex.upstream is not None:
            ex.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.active
        if ex is not None and ex.upstream is not None:
            ex.upstream.resume_reading()

    def block(self, reason: int) -> None:
        if not self.blocked and not self.closed:
            self.transport.pause_reading()
        self.blocked |= reason

    def unblock(self, reason: int) -> None:
        if self.blocked & reason:
            self.blocked &= ~reason
            if not self.blocked and not self.closed:
                self.transport.resume_reading()

    def close(self) -> None:
        if not self.closed and not self.transport.is_closing():  # a TLS transport closed twice breaks
            self.transport.close()  # sends what is buffered, then closes

    def finish(self, ex: Exchange) -> None:
        """`ex` is answered and its request fully read: serve the next request, or wait for one."""
        if ex is not self.active:
            return
        self.active = None
        if self.closed:
            return
        if not ex.keep_alive or self.upgraded or self.broken:
            self.close()
            return
        if self.queued:
            nxt = self.queued.popleft()
            if not self.queued:
                self.unblock(PIPELINED)
            self.active = nxt
            nxt.start()
            return
        self.idle_since = now = monotonic()
        self.watch(now + self.router.timeouts.idle)

    def watch(self, due: float) -> None:
        """Make sure the watchdog looks at this connection by `due`.

        Deadlines only move later as requests follow each other, so a pending earlier check covers a new
        deadline: the usual request costs a comparison, not a timer, and the watchdog re-arms when it fires.
        """
        timer = self.timer
        if timer is None or due < self.timer_when:
            if timer is not None:
                timer.cancel()
            self.timer_when = due
            self.timer = self.loop.call_at(due, self._tick)

    def _tick(self) -> None:
        self.timer = None
        if self.closed:
            return
        now = monotonic()
        idle = self.router.timeouts.idle
        due = None
        if self.active is not None:
            due = self.active.check(now)  # H12, H15, H28, or the idle end of a WebSocket
            if self.closed:
                return
        if self.active is None and self.current is None and not self.handshaking:
            # a keep-alive connection idle past the window is closed quietly
            idle_due = self.idle_since + idle
            if now >= idle_due:
                self.close()
                return
            due = idle_due if due is None else min(due, idle_due)
        self.watch(now + idle if due is None else due)

    def _head_timeout(self) -> None:
        self.head_timer = None
        ex = self.current
        if ex is None or ex.head_done or self.closed:
            return
        # a client sending its headers too slowly (slowloris) is cut off, as Heroku cuts idle clients
        ex.status = 499
        ex.log(H28, cause="request headers not received in time")
        self.current = None
        self.broken = True
        if self.active is None:
            self.close()

    # -- bad requests

    def _parse_cause(self, exc: Exception) -> str:
        ex = self.current
        if ex is not None and ex.head_done:
            return "bad chunk" if ex.chunked else "bad request body"
        if ex is None or not ex.target or isinstance(exc, httptools.HttpParserInvalidMethodError):
            return "bad request line"
        return "bad header"

    def reject(self, cause: str, status: int = 400) -> None:
        """A malformed request: answer 400 (H26) if nothing else is being answered, and close."""
        ex = self.current or Exchange(self)
        self.current = None
        self.broken = True
        ex.keep_alive = False
        if self.active is None or self.active is ex:
            self.active = ex
            if ex.head_sent:
                ex.abort(H26, cause)
            elif ex.resp_done:
                self.close()
            else:
                ex.fail(H26, cause, status)
        else:
            ex.status = status
            ex.log(H26, cause=cause)

    # -- the request parser's callbacks

    def on_message_begin(self) -> None:
        self.current = Exchange(self)
        self.line_len = 0

    def on_url(self, url: bytes) -> None:
        ex = self.current
        ex.target += url  # type: ignore[union-attr]
        if len(ex.target) > MAX_LINE:  # type: ignore[union-attr]
            raise Reject("request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) > MAX_NAME:
            raise Reject("header name too long")
        if len(name) + len(value) > MAX_LINE - 2:
            raise Reject("header line too long")
        ex = self.current
        ex.nheaders += 1  # type: ignore[union-attr]
        if ex.nheaders > MAX_HEADERS:  # type: ignore[union-attr]
            raise Reject("too many headers")
        kind = REQUEST_SPECIAL.get(name.lower())
        if kind is None:
            ex.out.extend((name, b": ", value, b"\r\n"))  # type: ignore[union-attr]
        else:
            ex.special.append((kind, name, value))  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        ex = self.current
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        ex.prepare(self.parser)  # type: ignore[union-attr]
        if ex.upgrade:  # type: ignore[union-attr]
            self.upgrade_ex = ex
        if self.active is None:
            self.active = ex
            ex.start()  # type: ignore[union-attr]
        else:
            self.queued.append(ex)  # type: ignore[arg-type]
            self.block(PIPELINED)

    def on_body(self, body: bytes) -> None:
        self.current.request_body(body)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        ex = self.current
        self.current = None
        if ex is not None:
            self.read_done = not ex.keep_alive
            ex.request_complete()


class Exchange:
    """One request and its response: from the client's head to the router's log line."""

    __slots__ = (
        "backend",
        "buffer",
        "buffered",
        "chunked",
        "close_client",
        "close_delimited",
        "conn",
        "connect_time",
        "dirty",
        "expect_bad",
        "expect_continue",
        "fwd",
        "got_body",
        "has_body",
        "head",
        "head_done",
        "head_sent",
        "host",
        "http10",
        "interim",
        "keep_alive",
        "last_activity",
        "loop",
        "method",
        "nheaders",
        "out",
        "out_chunked",
        "parser",
        "pending",
        "raw",
        "reason",
        "received",
        "req_done",
        "request_id",
        "resp_bytes",
        "resp_done",
        "resp_head_bytes",
        "resp_keep_alive",
        "resp_out",
        "resp_special",
        "resp_started",
        "retried",
        "router",
        "sent_at",
        "special",
        "status",
        "target",
        "task",
        "tunneling",
        "upgrade",
        "upstream",
    )  # fmt: skip

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.router = conn.router
        self.loop = conn.loop
        self.received = monotonic()
        self.target = b""
        self.out: list[bytes] = [b"", b" ", b"", b" HTTP/1.1\r\n"]  # the head for the dyno: start line, headers
        self.special: list[tuple[int, bytes, bytes]] = []  # headers the router looks at
        self.nheaders = 0
        self.head_done = False
        self.method = b""
        self.http10 = False
        self.keep_alive = True
        self.upgrade = False
        self.chunked = False
        self.has_body = False
        self.expect_continue = False
        self.expect_bad = False
        self.head = b""
        self.request_id = ""
        self.fwd = conn.peer
        self.host = ""
        self.buffer: list[bytes] = []
        self.buffered = 0
        self.raw: list[bytes] = []
        self.got_body = False
        self.req_done = False
        self.backend: WebDyno | None = None
        self.upstream: Upstream | None = None
        self.task: asyncio.Task[None] | None = None
        self.connect_time: float | None = None
        self.sent_at = 0.0
        self.last_activity = 0.0
        self.retried = False
        self.parser: httptools.HttpResponseParser | None = None
        self.resp_started = False
        self.resp_head_bytes = 0
        self.resp_out: list[bytes] = [b"HTTP/1.1 ", b"", b" ", b""]  # the head for the client
        self.resp_special: list[tuple[bytes, bytes]] = []  # response headers the router looks at
        self.reason = b""
        self.interim = False
        self.status = 0
        self.head_sent = False
        self.out_chunked = False
        self.close_delimited = False
        self.close_client = False
        self.resp_keep_alive = False
        self.resp_bytes = 0
        self.resp_done = False
        self.dirty = False
        self.pending: list[bytes] = []
        self.tunneling = False

    # -- the request

    def prepare(self, parser: httptools.HttpRequestParser) -> None:
        """Turn the client's head into the head the dyno gets: Heroku's headers added, hop-by-hop ones gone."""
        self.head_done = True
        method = self.method = parser.get_method()
        if method == b"CONNECT":
            raise Reject("CONNECT is not supported")
        if len(method) > 127:
            raise Reject("method name too long")
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):  # Heroku's router speaks HTTP/1.0 and 1.1 only: no 0.9, no 2.0 here
            raise Reject("unsupported HTTP version" if version != "0.9" else "no HTTP version (HTTP/0.9)")
        self.http10 = version == "1.0"
        self.keep_alive = parser.should_keep_alive()
        self.upgrade = parser.should_upgrade()
        xff = rid = via = host = expect = conn_value = upgrade_value = codings = None
        length = None
        out = self.out
        out[0] = method
        out[2] = self.target
        for kind, name, value in self.special:
            if kind == LENGTH:
                length = value
                out += (name, b": ", value, b"\r\n")
            elif kind == HOST:
                if host is not None:  # which one would the dyno believe? Heroku refuses these (2016)
                    raise Reject("multiple Host headers")
                host = value
                out += (name, b": ", value, b"\r\n")
            elif kind == XFF:
                xff = value if xff is None else xff + b", " + value
            elif kind == REQUEST_ID:
                rid = value
            elif kind == VIA:
                via = value if via is None else via + b", " + value
            elif kind == EXPECT:
                expect = value
            elif kind == CONNECTION:
                conn_value = value if conn_value is None else conn_value + b"," + value
            elif kind == UPGRADE:
                upgrade_value = value
            elif kind == TRANSFER_ENCODING:
                codings = value if codings is None else codings + b"," + value
            # REPLACED: set by the router itself, or hop-by-hop
        self.out = self.special = []  # type: ignore[assignment]
        # the parser finds a bad Transfer-Encoding only after this head (the dyno would have it by then);
        # chunked alone is what the router re-chunks for the dyno: anything else frames the body otherwise
        if codings is not None and [t.strip().lower() for t in codings.split(b",") if t.strip()] != [b"chunked"]:
            raise Reject("bad transfer-encoding")
        chunked = codings is not None
        if conn_value is not None:
            listed = connection_tokens(conn_value) - _LISTED_KEEP
            if listed:
                out = drop_listed(out, listed)
        self.chunked = chunked
        self.has_body = chunked or (length is not None and length.strip() not in (b"0", b""))
        if rid is not None and valid_request_id(rid):
            self.request_id = rid.decode("ascii")
        else:
            self.request_id = new_request_id()
            rid = self.request_id.encode()
        conn = self.conn
        fwd = xff + b", " + conn.peer.encode() if xff else conn.peer.encode()
        self.fwd = fwd.decode("latin-1")
        if host is None:
            host = self.router.app_host_b
            out += (b"Host", b": ", host, b"\r\n")
        self.host = host.decode("latin-1")
        out += (
            b"X-Request-Id: ", rid, b"\r\nX-Forwarded-For: ", fwd,
            b"\r\nX-Forwarded-Proto: ", conn.scheme, b"\r\nX-Forwarded-Port: ", conn.forwarded_port,
            b"\r\nX-Request-Start: ", b"%d" % (time.time_ns() // 1_000_000),
            b"\r\nVia: ", via + b", " + VIA_VALUE if via else VIA_VALUE, b"\r\n",
        )  # fmt: skip
        if chunked:
            out.append(b"Transfer-Encoding: chunked\r\n")
        if self.upgrade:
            out += (b"Connection: Upgrade\r\nUpgrade: ", upgrade_value or b"", b"\r\n")
        out.append(b"\r\n")
        self.head = b"".join(out)
        if expect is not None:
            if expect.strip().lower() == b"100-continue":
                self.expect_continue = self.has_body and not self.http10
            else:
                self.expect_bad = True

    def start(self) -> None:
        """Send the request to a web dyno: at once on a pooled connection, else from a task that waits."""
        router = self.router
        if router.maintenance:
            self.fail(H80)
            return
        if self.expect_bad:
            self.fail(H26, "unsupported expect header value", 417)
            return
        if router.chaos is not None and router.chaos.takes(self):
            return  # a fault delays, answers, holds or resets it
        backends = router.formation.web_dynos_up()
        if backends:
            backend = backends[0] if len(backends) == 1 else random.choice(backends)
            up = router.pool.take(backend)
            if up is not None:
                self.backend = backend
                self.connect_time = 0.0
                self.attach(up)
                return
            # the chosen dyno first (a dyno without pooled connections must still get its share)
            backends = [backend, *(b for b in backends if b is not backend)]
        self.task = self.loop.create_task(self.dispatch(backends))

    async def dispatch(self, backends: Sequence[WebDyno], fresh: bool = False) -> None:
        router = self.router
        formation = router.formation
        timeouts = router.timeouts
        if not backends:
            state = formation.web_state()
            if state == "none":
                self.fail(H14)
                return
            if state == "crashed":
                self.fail(H10)
                return
            # web dynos are starting: the request waits for one, as Heroku's router queues it
            remaining = timeouts.boot - (monotonic() - self.received)
            if remaining <= 0 or not await formation.wait_for_web(remaining):
                state = formation.web_state()
                self.fail(H10 if state == "crashed" else H14 if state == "none" else H20)
                return
            backends = formation.web_dynos_up()
            if not backends:
                self.fail(H20)
                return
            backends = random.sample(backends, len(backends))
        candidates = backends
        code = H19
        for backend in candidates[:MAX_ATTEMPTS]:
            self.backend = backend
            if not fresh:
                up = router.pool.take(backend)
                if up is not None:
                    self.connect_time = 0.0
                    self.task = None
                    self.attach(up)
                    return
            began = monotonic()
            try:
                up = await router.pool.connect(backend, timeouts.connect)
            except TimeoutError:
                code = H19
            except OSError:
                code = H21
            else:
                self.connect_time = monotonic() - began
                if self.resp_done or self.conn.closed:
                    up.close()
                    return
                self.task = None
                self.attach(up)
                return
            self.connect_time = monotonic() - began
        self.task = None
        self.fail(code)

    def attach(self, up: Upstream) -> None:
        conn = self.conn
        self.upstream = up
        up.exchange = self
        self.parser = httptools.HttpResponseParser(self)
        self.sent_at = self.last_activity = now = monotonic()
        if self.expect_continue and not self.got_body and not self.req_done and not conn.closed:
            conn.transport.write(CONTINUE)
        if self.buffer:
            up.write(self.head + b"".join(self.buffer))
            self.buffer = []
            self.buffered = 0
            conn.unblock(BUFFERED)
        else:
            up.write(self.head)
        if conn.write_paused:
            up.pause_reading()
        conn.watch(now + self.router.timeouts.service)

    def request_body(self, body: bytes) -> None:
        if self.resp_done:
            return  # answered already (an error page, or the dyno answered early): the rest is dropped
        self.got_body = True
        self.last_activity = monotonic()
        if self.chunked:
            body = b"%x\r\n%b\r\n" % (len(body), body)
        up = self.upstream
        if up is not None:
            up.write(body)
        else:
            self.buffer.append(body)
            self.buffered += len(body)
            if self.buffered > BUFFER_LIMIT:
                self.conn.block(BUFFERED)

    def request_raw(self, data: bytes) -> None:
        """Bytes after an Upgrade request: they are for the dyno once it agrees to switch protocols."""
        if self.tunneling:
            self.tunnel_from_client(data)
        elif not self.resp_done:
            self.raw.append(data)
            if sum(map(len, self.raw)) > BUFFER_LIMIT:
                self.conn.block(BUFFERED)

    def request_complete(self) -> None:
        self.req_done = True
        if self.resp_done:
            self.conn.finish(self)
            return
        if self.chunked:
            if self.upstream is not None:
                self.upstream.write(b"0\r\n\r\n")
            else:
                self.buffer.append(b"0\r\n\r\n")

    # -- the response

    def response_data(self, data: bytes) -> None:
        self.resp_started = True
        self.last_activity = monotonic()
        if not self.head_sent:
            self.resp_head_bytes += len(data)
        try:
            self.parser.feed_data(data)  # type: ignore[union-attr]
            if not self.head_sent and self.resp_head_bytes > MAX_RESPONSE_HEAD:
                raise BadResponse("response head too large")
        except httptools.HttpParserUpgrade as exc:
            self.flush()
            self.start_tunnel(data[exc.args[0] :])
            return
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, BadResponse):
                raise exc.__context__ or exc from None
            self.bad_response()
            return
        except (httptools.HttpParserError, BadResponse):
            self.bad_response()
            return
        if self.pending:
            self.flush()
        if self.resp_done:
            self.response_finished()

    def flush(self) -> None:
        pending = self.pending
        if pending:
            if not self.conn.closed:
                self.conn.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
            pending.clear()

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        low = name.lower()
        if low in RESPONSE_SPECIAL:
            self.resp_special.append((low, value))
        else:
            self.resp_out += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        if self.resp_done:
            self.dirty = True  # another response after a complete one: the connection cannot be reused
            return
        parser = self.parser
        status = parser.get_status_code()  # type: ignore[union-attr]
        if status < 200 and status != 101:
            self.interim = True  # 100 Continue, 103 Early Hints: the router answers Expect itself
            self.resp_out = [b"HTTP/1.1 ", b"", b" ", b""]
            self.resp_special = []
            self.reason = b""
            return
        if not self.reason:
            raise BadResponse("status line without a reason phrase")  # Heroku's router refuses these (H17)
        if status == 101 and not self.upgrade:
            raise BadResponse("101 without an upgrade request")
        self.status = status
        self.resp_keep_alive = parser.should_keep_alive()  # type: ignore[union-attr]
        router = self.router
        if (
            self.conn.secure
            and not router.redirects.named
            and (hint := router.redirects.response(self, status, self.resp_out)) is not None
        ):
            router.after_line[self] = hint
        if (
            status in REDIRECTS
            and router.ports.watching
            and (hint := router.ports.response(self, self.conn.scheme, self.resp_out, router.port)) is not None
        ):
            router.after_line[self] = hint
        no_body = self.method == b"HEAD" or status in (204, 304, 101)
        out = self.resp_out
        out[1] = b"%d" % status
        out[3] = self.reason + b"\r\n"
        has_length = chunked = False
        via = conn_value = upgrade_value = None
        for low, value in self.resp_special:
            if low == b"content-length":
                has_length = True
                out += (b"Content-Length", b": ", value, b"\r\n")
            elif low == b"transfer-encoding":
                chunked = True
            elif low == b"connection":
                conn_value = value if conn_value is None else conn_value + b"," + value
            elif low == b"upgrade":
                upgrade_value = value
            elif low == b"via":
                via = value if via is None else via + b", " + value
            # other hop-by-hop headers are dropped
        self.resp_out = self.resp_special = []  # type: ignore[assignment]
        if conn_value is not None:
            listed = connection_tokens(conn_value) - _LISTED_KEEP
            if listed:
                out = drop_listed(out, listed)
        conn = self.conn
        if not no_body and not has_length:
            if chunked or not self.http10:
                if self.http10:
                    self.close_client = True  # an HTTP/1.0 client reads the body until the connection closes
                else:
                    out.append(b"Transfer-Encoding: chunked\r\n")
                    self.out_chunked = True
            else:
                self.close_client = True
            self.close_delimited = not chunked
        if status == 101:
            out += (b"Connection: Upgrade\r\nUpgrade: ", upgrade_value or b"websocket", b"\r\n")
        elif not self.keep_alive or self.close_client or conn.upgraded or conn.broken:
            out.append(b"Connection: close\r\n")
        elif self.http10:
            out.append(b"Connection: keep-alive\r\n")
        out += (b"Via: ", via + b", " + VIA_VALUE if via else VIA_VALUE, b"\r\n\r\n")
        head = b"".join(out)
        self.resp_bytes = len(head)
        self.head_sent = True
        self.pending.append(head)
        if self.method == b"HEAD" and status != 101:
            self.resp_done = True  # no body follows a HEAD response, whatever its headers say

    def on_body(self, body: bytes) -> None:
        if self.resp_done or self.interim:
            return
        self.resp_bytes += len(body)
        if self.out_chunked:
            self.pending.append(b"%x\r\n%b\r\n" % (len(body), body))
        else:
            self.pending.append(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.resp_done or self.status == 101:
            return
        if self.out_chunked:
            self.pending.append(b"0\r\n\r\n")
        self.resp_done = True

    def response_finished(self) -> None:
        """The dyno's response went out whole: log it, and give the connection back to the pool."""
        self.parser = None  # it refers back to this exchange: no cycle left for the garbage collector
        up = self.upstream
        self.upstream = None
        if up is not None:
            if up.write_blocked:
                self.conn.unblock(UPSTREAM_FULL)
            if self.resp_keep_alive and self.req_done and not self.dirty and not self.close_delimited:
                self.router.pool.release(up)
            else:
                up.close()
        self.log(None)
        if self.close_client:
            self.keep_alive = False
        if self.req_done:
            self.conn.finish(self)
        elif not self.keep_alive:
            self.conn.close()
        # else: the client is still sending a body nobody will read; it is dropped as it comes

    def upstream_lost(self, up: Upstream) -> None:
        """The dyno closed its connection (or it failed) before its response was complete."""
        if up is not self.upstream:
            return
        self.upstream = None
        if up.write_blocked:
            self.conn.unblock(UPSTREAM_FULL)
        if self.resp_done:
            return
        if self.tunneling:
            self.stop_work()
            self.resp_done = True
            self.conn.close()
            return
        if self.head_sent:
            if self.close_delimited:  # a body delimited by the connection's end: this is its end
                if self.out_chunked:
                    self.pending.append(b"0\r\n\r\n")
                self.flush()
                self.resp_done = True
                self.response_finished()
            else:
                self.abort(H18)
            return
        if self.resp_started:
            self.fail(H18)  # part of a response head, then nothing
            return
        if up.reused and not self.retried and not self.has_body and not self.got_body:
            # a pooled connection the dyno closed just as it was reused: try once on a new one
            self.retried = True
            self.sent_at = 0.0
            self.task = self.loop.create_task(self.dispatch([self.backend], fresh=True))  # type: ignore[list-item]
            return
        self.fail(H13)

    def bad_response(self) -> None:
        if self.head_sent:
            self.abort(H17)
        else:
            self.fail(H17)

    # -- WebSocket (or any upgrade): after the 101, bytes are spliced both ways

    def start_tunnel(self, rest: bytes) -> None:
        conn = self.conn
        up = self.upstream
        if up is None or conn.closed:
            return
        self.tunneling = True
        self.log(None)
        up.tunnel = conn.transport
        conn.tunnel = up
        if rest:
            conn.transport.write(rest)
        if self.raw:
            up.write(b"".join(self.raw))
            self.raw = []
            conn.unblock(BUFFERED)

    def tunnel_from_client(self, data: bytes) -> None:
        self.last_activity = monotonic()
        if self.upstream is not None:
            self.upstream.write(data)

    def tunnel_from_dyno(self, data: bytes) -> None:
        self.last_activity = monotonic()
        self.conn.transport.write(data)

    # -- timeouts and ends

    def check(self, now: float) -> float | None:
        """The watchdog's look at this exchange: act on a passed deadline, or say when to look again."""
        if self.resp_done or self.sent_at == 0.0:
            return None  # not at a dyno yet: the dispatch task keeps its own time (H19, H20)
        timeouts = self.router.timeouts
        if not self.resp_started:
            due = self.sent_at + timeouts.service
            if now >= due:
                self.fail(H12)  # the dyno keeps working on it; the client gets the error page
                return None
            return due
        due = self.last_activity + timeouts.idle
        if now >= due:
            if self.tunneling:
                self.stop_work()
                self.resp_done = True
                self.conn.close()
            elif not self.head_sent:
                self.fail(H15)
            else:
                self.abort(H28 if not self.req_done else H15)
            return None
        return due

    def stop_work(self) -> None:
        self.parser = None
        task = self.task
        self.task = None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        up = self.upstream
        self.upstream = None
        if up is not None:
            if up.write_blocked:
                self.conn.unblock(UPSTREAM_FULL)
            up.close()

    def fail(self, code: Code, cause: str = "", status: int | None = None) -> None:
        """Answer with Heroku's page for `code` in place of a response from the dyno, and log it."""
        status = status or code.status
        self.resp_done = True
        self.stop_work()
        conn = self.conn
        close = not self.keep_alive or conn.upgraded or conn.broken
        body = page(code, cause)
        head = (
            b"HTTP/1.1 %d %s\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-cache, no-store\r\nContent-Length: %d\r\n%s\r\n"
            % (
                status,
                REASONS.get(status) or reason(status),
                len(body),
                b"Connection: close\r\n" if close else b"Connection: keep-alive\r\n" if self.http10 else b"",
            )
        )
        self.pending.clear()
        if not conn.closed:
            conn.transport.write(head if self.method == b"HEAD" else head + body)
        self.status = status
        self.log(code, cause=cause)
        if close:
            conn.close()
        elif self.req_done:
            conn.finish(self)

    def abort(self, code: Code, cause: str = "") -> None:
        """The dyno's response has begun and cannot be completed: log `code` and close the client."""
        self.resp_done = True
        self.stop_work()
        self.flush()
        self.log(code, cause=cause)
        self.conn.close()

    def client_gone(self) -> None:
        if self.resp_done:
            return
        self.resp_done = True
        self.stop_work()
        if self.tunneling or self.router.stopping:
            return
        self.status = 499
        self.log(H27)

    def log(self, code: Code | None, cause: str = "") -> None:
        sent = self.sent_at > 0.0
        backend = self.backend
        self.router.log(
            log_line(
                code,
                method=self.method.decode("latin-1"),
                path=self.target.decode("utf-8", "replace"),
                host=self.host or self.router.app_host,
                request_id=self.request_id or new_request_id(),
                fwd=self.fwd,
                dyno=backend.dyno if backend is not None and (sent or self.connect_time is not None) else "",
                connect=ms(self.connect_time),
                service=ms(monotonic() - self.sent_at) if sent else "",
                status=self.status or (code.status if code else ""),
                nbytes=self.resp_bytes if sent else "",
                cause=cause,
                protocol="https" if self.conn.secure else "http",
            ),
        )
        if self.router.after_line:
            hint = self.router.after_line.pop(self, None)
            if hint is not None:
                self.router.hint(hint)
