"""The router against real HTTP on loopback: a stdlib dyno stand-in, a fake formation, real clients.

The router runs on an asyncio loop in a background thread, as dynosim runs it on its one loop; clients
are blocking (http.client, urllib, raw sockets, websockets' sync client) in the test thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import http.server
import json
import os
import re
import socket
import threading
import time
import urllib.request
from contextlib import closing
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import psutil
import pytest

from dynosim.errors import PortError
from dynosim.logs import LogLine, LogStream
from dynosim.router import Router, RouterTimeouts, WebDyno

FAST = {"service": 1.0, "idle": 2.0, "connect": 0.5, "boot": 1.0, "headers": 1.0}

LINE = re.compile(
    r"^(?:sock=(?P<sock>\w+) )?at=(?P<at>\w+)(?: code=(?P<code>H\d\d) desc=\"(?P<desc>[^\"]*)\")?"
    r"(?: cause=\"(?P<cause>[^\"]*)\")? method=(?P<method>\S*) path=\"(?P<path>[^\"]*)\" host=(?P<host>\S*) "
    r"request_id=(?P<request_id>\S*) fwd=\"(?P<fwd>[^\"]*)\" dyno=(?P<dyno>\S*) connect=(?P<connect>\S*) "
    r"service=(?P<service>\S*) status=(?P<status>\d*) bytes=(?P<bytes>\S*) protocol=(?P<protocol>https?)$"
)
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


# -- a dyno stand-in: a real HTTP server with a path per behaviour


class DynoHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        self.server.seen.append((path, self.client_address[1], self.headers))  # type: ignore[attr-defined]
        handler = getattr(self, "r_" + path.strip("/").replace("-", "_"), None)
        if handler is None:
            self.reply(404, b"not found")
        else:
            handler({k: v[0] for k, v in parse_qs(query).items()})

    do_HEAD = do_POST = do_PUT = do_GET

    def reply(self, status: int, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def read_body(self, sink) -> None:  # type: ignore[no-untyped-def]
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                while size:
                    piece = self.rfile.read(min(size, 65536))
                    sink(piece)
                    size -= len(piece)
                self.rfile.readline()
        remaining = int(self.headers.get("Content-Length", 0))
        while remaining:
            piece = self.rfile.read(min(remaining, 65536))
            if not piece:
                return
            sink(piece)
            remaining -= len(piece)

    def r_hello(self, q: dict[str, str]) -> None:
        self.reply(
            200,
            b"hello",
            (
                ("Content-Type", "text/plain"),
                ("Keep-Alive", "timeout=5"),
                ("Connection", "keep-alive, X-Dyno-Secret"),
                ("X-Dyno-Secret", "1"),
            ),
        )

    def r_headers(self, q: dict[str, str]) -> None:
        self.reply(200, json.dumps(list(self.headers.items())).encode(), (("Content-Type", "application/json"),))

    def r_upload(self, q: dict[str, str]) -> None:
        digest, count = hashlib.sha256(), [0]

        def sink(piece: bytes) -> None:
            digest.update(piece)
            count[0] += len(piece)

        self.read_body(sink)
        self.reply(200, json.dumps({"bytes": count[0], "sha256": digest.hexdigest()}).encode())

    def r_chunked(self, q: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(int(q.get("n", 5))):
            piece = f"chunk {i}\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def r_sse(self, q: dict[str, str]) -> None:
        # no Content-Length, no chunking: the body ends when the connection does (as many SSE servers do)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"data: first\n\n")
        self.wfile.flush()
        self.server.sse_go.wait(5)  # type: ignore[attr-defined]
        self.wfile.write(b"data: second\n\n")
        self.close_connection = True

    def r_sleep(self, q: dict[str, str]) -> None:
        time.sleep(float(q["s"]))
        try:
            self.reply(200, b"slept")
        except OSError:
            pass

    def r_big(self, q: dict[str, str]) -> None:
        size = int(q["n"])
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        piece = b"x" * 65536
        while size:
            self.wfile.write(piece[:size])
            size -= min(size, len(piece))

    def r_close_nothing(self, q: dict[str, str]) -> None:
        self.close_connection = True

    def r_close_mid(self, q: dict[str, str]) -> None:
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        self.close_connection = True

    def r_garbage(self, q: dict[str, str]) -> None:
        self.wfile.write(b"THIS IS NOT HTTP AT ALL\r\n\r\n")
        self.close_connection = True

    def r_no_reason(self, q: dict[str, str]) -> None:
        self.wfile.write(b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok")
        self.close_connection = True

    def r_stall(self, q: dict[str, str]) -> None:
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"y" * 10)
        time.sleep(float(q["s"]))
        self.close_connection = True

    def r_close_after(self, q: dict[str, str]) -> None:
        # a keep-alive response, then the dyno drops the connection (a short keep-alive timeout)
        self.reply(200, b"bye")
        self.close_connection = True

    def r_early(self, q: dict[str, str]) -> None:
        # answers before reading the body, then drains it (closing with unread bytes would reset the socket)
        self.reply(413, b"too large")
        try:
            self.read_body(lambda piece: None)
        except (OSError, ValueError):
            pass
        self.close_connection = True


class DynoServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), DynoHandler)
        self.seen: list[tuple[str, int, object]] = []
        self.sse_go = threading.Event()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


# -- the loop the router runs on, the formation it asks, and its log lines


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class FakeFormation:
    def __init__(self, backends: list[WebDyno], state: str = "up") -> None:
        self.backends = backends
        self.state = state

    def web_dynos_up(self) -> list[WebDyno]:
        return list(self.backends) if self.state == "up" else []

    def web_state(self) -> str:
        return self.state

    async def wait_for_web(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.state == "up" and self.backends:
                return True
            if self.state in ("crashed", "none"):
                return False
            await asyncio.sleep(0.01)
        return False


@dataclass
class Env:
    loop: LoopThread
    router: Router
    formation: FakeFormation
    logs: LogStream
    lines: list[LogLine] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.router.port

    def connect(self, timeout: float = 10) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, body=None, headers: dict[str, str] | None = None, **kw):  # type: ignore[no-untyped-def]
        with closing(self.connect()) as conn:
            conn.request(method, path, body=body, headers=headers or {}, **kw)
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()

    def router_lines(self) -> list[dict[str, str]]:
        out = []
        for line in list(self.lines):
            assert line.source == "heroku" and line.dyno == "router"
            match = LINE.match(line.text)
            assert match, f"not Heroku's router line format: {line.text}"
            out.append(match.groupdict())
        return out

    def wait_line(self, timeout: float = 5, **want: str) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for fields in self.router_lines():
                if all(fields.get(k) == v for k, v in want.items()):
                    return fields
            time.sleep(0.01)
        raise AssertionError(f"no router line with {want}; got {[line.text for line in self.lines]}")


@pytest.fixture(scope="module")
def loop_thread():
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="module")
def dyno():
    server = DynoServer()
    yield server
    server.stop()


@pytest.fixture
def make_env(loop_thread, dyno):
    made: list[Env] = []

    def make(state: str = "up", backends: list[WebDyno] | None = None, **timeouts: float) -> Env:
        formation = FakeFormation(backends if backends is not None else [WebDyno("web.1", dyno.port)], state)
        logs = LogStream()
        router = Router(formation, logs, port=0, timeouts=RouterTimeouts(**{**FAST, **timeouts}))
        env = Env(loop_thread, router, formation, logs)
        logs.subscribe(env.lines.extend)
        loop_thread.run(router.start())
        made.append(env)
        return env

    yield make
    for env in made:
        env.loop.run(env.router.stop())


@pytest.fixture
def env(make_env) -> Env:
    return make_env()


def raw_exchange(port: int, data: bytes, timeout: float = 5) -> bytes:
    """Send bytes as they are and read until the router closes (or `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


# -- the usual request


def test_get_is_forwarded_with_herokus_headers_and_logged(env: Env) -> None:
    before = int(time.time() * 1000)
    status, headers, body = env.request("GET", "/headers?x=1&y=2", headers={"Host": "myapp.localhost:5000"})
    after = int(time.time() * 1000)
    assert status == 200
    seen = {k.lower(): v for k, v in json.loads(body)}
    assert UUID4.match(seen["x-request-id"])
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-port"] == "80"  # Heroku's, whatever port the router listens on
    assert before <= int(seen["x-request-start"]) <= after
    assert seen["via"] == "1.1 vegur"
    assert seen["host"] == "myapp.localhost:5000"
    assert headers["Via"] == "1.1 vegur"

    line = env.wait_line(path="/headers?x=1&y=2")
    assert line["at"] == "info" and line["code"] is None
    assert line["method"] == "GET"
    assert line["host"] == "myapp.localhost:5000"
    assert line["request_id"] == seen["x-request-id"]
    assert line["fwd"] == "127.0.0.1"
    assert line["dyno"] == "web.1"
    assert re.fullmatch(r"\d+ms", line["connect"]) and re.fullmatch(r"\d+ms", line["service"])
    assert line["status"] == "200" and line["protocol"] == "http"
    assert int(line["bytes"]) >= len(body)


@pytest.mark.parametrize(
    "given, kept",
    [
        ("abcdefghij0123456789", True),  # 20 characters: the shortest Heroku keeps
        ("a+b/c=d-E" * 22, True),  # 198 characters of the allowed set
        ("a" * 201, False),  # too long
        ("short-id", False),  # too short
        ("abcdefghij0123456789_!", False),  # a character outside [A-Za-z0-9+/=-]
    ],
)
def test_client_request_id_is_kept_only_when_valid(env: Env, given: str, kept: bool) -> None:
    _, _, body = env.request("GET", "/headers", headers={"X-Request-Id": given})
    got = {k.lower(): v for k, v in json.loads(body)}["x-request-id"]
    if kept:
        assert got == given
    else:
        assert UUID4.match(got)
    assert env.wait_line(path="/headers")["request_id"] == got


def test_forwarded_for_is_appended_and_router_headers_replace_the_clients(env: Env) -> None:
    _, _, body = env.request(
        "GET",
        "/headers",
        headers={
            "X-Forwarded-For": "203.0.113.9",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Port": "443",
            "X-Request-Start": "1",
            "Via": "1.0 corporate-proxy",
        },
    )
    seen = {k.lower(): v for k, v in json.loads(body)}
    assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-port"] == "80"
    assert seen["x-request-start"] != "1"
    assert seen["via"] == "1.0 corporate-proxy, 1.1 vegur"
    assert env.wait_line(path="/headers")["fwd"] == "203.0.113.9, 127.0.0.1"


def test_hop_by_hop_headers_are_stripped_both_ways(env: Env) -> None:
    _, _, body = env.request(
        "GET",
        "/headers",
        headers={
            "Connection": "keep-alive, X-Client-Secret",
            "X-Client-Secret": "1",
            "Keep-Alive": "300",
            "TE": "trailers",
            "Proxy-Connection": "keep-alive",
        },
    )
    names = {k.lower() for k, _ in json.loads(body)}
    assert not names & {"x-client-secret", "keep-alive", "te", "proxy-connection"}
    status, headers, _ = env.request("GET", "/hello")
    assert status == 200
    assert headers["Keep-Alive"] is None and headers["X-Dyno-Secret"] is None


def test_keep_alive_reuses_the_client_and_the_dyno_connection(env: Env, dyno: DynoServer) -> None:
    dyno.seen.clear()
    conn = env.connect()
    conn.request("GET", "/hello")
    conn.getresponse().read()
    sock = conn.sock
    for _ in range(5):
        conn.request("GET", "/hello")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"hello"
        assert conn.sock is sock  # the router kept the client connection open
    conn.close()
    ports = {port for path, port, _ in dyno.seen if path == "/hello"}
    assert len(ports) == 1  # and sent all six over one connection to the dyno


def test_requests_are_spread_over_the_web_dynos_that_are_up(make_env) -> None:  # type: ignore[no-untyped-def]
    dynos = [DynoServer() for _ in range(3)]
    try:
        env = make_env(backends=[WebDyno(f"web.{i + 1}", d.port) for i, d in enumerate(dynos)])
        for _ in range(30):
            assert env.request("GET", "/hello")[0] == 200
        deadline = time.monotonic() + 5
        while len(env.router_lines()) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)  # router lines go out in batches
        used = [line["dyno"] for line in env.router_lines()]
        assert len(used) == 30 and set(used) == {"web.1", "web.2", "web.3"}
    finally:
        for d in dynos:
            d.stop()


def test_pipelined_requests_are_answered_in_order(env: Env) -> None:
    out = raw_exchange(
        env.port,
        b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\nGET /headers HTTP/1.1\r\nHost: b\r\n\r\nGET /hello HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n",
    )
    assert out.count(b"HTTP/1.1 200 OK") == 3
    first, second, third = out.find(b"hello"), out.find(b"X-Request-Id"), out.rfind(b"hello")
    assert 0 < first < second < third


def test_http10_client_gets_a_body_it_can_read(env: Env) -> None:
    out = raw_exchange(env.port, b"GET /chunked?n=3 HTTP/1.0\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" not in head.lower()
    assert body == b"chunk 0\nchunk 1\nchunk 2\n"
    assert env.wait_line(path="/chunked?n=3")["host"] == "localhost"  # no Host: the app's host


# -- bodies: chunked, streamed, large, HEAD, 100-continue, SSE, WebSocket


def test_chunked_upload_reaches_the_dyno_intact(env: Env) -> None:
    pieces = [os.urandom(1000 + i * 7919) for i in range(20)]
    status, _, body = env.request("POST", "/upload", body=iter(pieces), encode_chunked=True)
    assert status == 200
    got = json.loads(body)
    data = b"".join(pieces)
    assert got == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_chunked_and_connection_delimited_downloads_arrive_chunked(env: Env) -> None:
    conn = env.connect()
    conn.request("GET", "/chunked?n=50")
    resp = conn.getresponse()
    assert resp.headers["Transfer-Encoding"] == "chunked"
    assert resp.read() == b"".join(f"chunk {i}\n".encode() for i in range(50))
    conn.request("GET", "/hello")  # the connection is still good after a chunked response
    assert conn.getresponse().read() == b"hello"
    conn.close()


def test_large_upload_streams_without_the_router_holding_it(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env(service=30.0, idle=30.0)
    total, piece = 50 * 1024 * 1024, os.urandom(256 * 1024)
    me = psutil.Process()
    baseline = me.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        digest = hashlib.sha256()

        def body():  # type: ignore[no-untyped-def]
            for _ in range(total // len(piece)):
                digest.update(piece)
                yield piece

        status, _, reply = env.request("POST", "/upload", body=body(), headers={"Content-Length": str(total)})
    finally:
        done.set()
        sampler.join()
    assert status == 200
    assert json.loads(reply) == {"bytes": total, "sha256": digest.hexdigest()}
    # client, router and dyno share this process: all of them together stayed far below the 50 MB sent
    assert peak[0] - baseline < 20 * 1024 * 1024, f"RSS grew by {(peak[0] - baseline) >> 20} MB"


def test_large_download_streams(env: Env) -> None:
    size = 20 * 1024 * 1024
    conn = env.connect()
    conn.request("GET", f"/big?n={size}")
    resp = conn.getresponse()
    assert int(resp.headers["Content-Length"]) == size
    received = 0
    while chunk := resp.read(1 << 20):
        received += len(chunk)
    assert received == size
    conn.close()
    assert env.wait_line(path=f"/big?n={size}")["status"] == "200"


def test_server_sent_events_stream_without_buffering(env: Env, dyno: DynoServer) -> None:
    dyno.sse_go.clear()
    conn = env.connect(timeout=5)
    conn.request("GET", "/sse")
    resp = conn.getresponse()
    assert resp.headers["Content-Type"] == "text/event-stream"
    first = resp.read1(65536)  # one chunk, without waiting for the end of the response
    assert first == b"data: first\n\n"  # arrived while the dyno is still holding the response open
    dyno.sse_go.set()
    assert b"data: second" in resp.read()
    conn.close()
    assert env.wait_line(path="/sse")["status"] == "200"


def test_head_gets_headers_only_and_the_connection_stays_usable(env: Env) -> None:
    conn = env.connect()
    conn.request("HEAD", "/hello")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.headers["Content-Length"] == "5"
    assert resp.read() == b""
    conn.request("GET", "/hello")
    assert conn.getresponse().read() == b"hello"
    conn.close()
    assert env.wait_line(method="HEAD")["status"] == "200"


def test_expect_100_continue_is_answered_by_the_router(env: Env) -> None:
    with socket.create_connection(("127.0.0.1", env.port), timeout=5) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
        interim = sock.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"hello world")
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        assert resp.status == 200
        assert json.loads(resp.read())["bytes"] == 11


def test_other_expect_values_are_h26_417(env: Env) -> None:
    out = raw_exchange(env.port, b"GET / HTTP/1.1\r\nHost: x\r\nExpect: something-else\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 417 Expectation Failed")
    line = env.wait_line(code="H26")
    assert line["cause"] == "unsupported expect header value" and line["status"] == "417"
    assert line["dyno"] == "" and line["connect"] == "" and line["service"] == ""


def test_websocket_upgrade_is_passed_through(make_env) -> None:  # type: ignore[no-untyped-def]
    from websockets.sync.client import connect
    from websockets.sync.server import serve

    def echo(ws) -> None:  # type: ignore[no-untyped-def]
        for message in ws:
            ws.send(f"echo {message}")

    with serve(echo, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        env = make_env(backends=[WebDyno("web.1", server.socket.getsockname()[1])], idle=5.0)
        with connect(f"ws://127.0.0.1:{env.port}/chat") as ws:
            for i in range(3):
                ws.send(f"hi {i}")
                assert ws.recv(timeout=5) == f"echo hi {i}"
            ws.send(b"\x00" * 200_000)  # larger than one read: spliced in pieces
            assert len(ws.recv(timeout=5)) > 200_000
        line = env.wait_line(path="/chat")
        assert line["status"] == "101" and line["at"] == "info"
        server.shutdown()


# -- Heroku's errors


def _assert_error_page(status: int, body: bytes, title: bytes = b"Application Error") -> None:
    assert status == 503
    assert body.startswith(b"<!DOCTYPE html>") and title in body


@pytest.mark.parametrize(
    "state, code, desc", [("crashed", "H10", "App crashed"), ("none", "H14", "No web processes running")]
)
def test_no_web_dyno_up_is_h10_or_h14(make_env, state: str, code: str, desc: str) -> None:  # type: ignore[no-untyped-def]
    env = make_env(state=state)
    status, headers, body = env.request("GET", "/hello?a=b")
    _assert_error_page(status, body)
    assert headers["Content-Type"].startswith("text/html")
    line = env.wait_line(code=code)
    assert line["desc"] == desc and line["at"] == "error" and line["status"] == "503"
    assert line["path"] == "/hello?a=b"
    assert (line["dyno"], line["connect"], line["service"], line["bytes"]) == ("", "", "", "")
    assert env.request("GET", "/hello")[0] == 503  # and the router keeps answering


def test_maintenance_mode_is_h80_with_the_maintenance_page(env: Env) -> None:
    env.router.maintenance = True
    status, _, body = env.request("POST", "/upload", body=b"x" * 1000)
    _assert_error_page(status, body, b"Offline for Maintenance")
    line = env.wait_line(code="H80")
    assert line["at"] == "info" and line["desc"] == "Maintenance mode" and line["status"] == "503"
    env.router.maintenance = False
    assert env.request("GET", "/hello")[0] == 200


def test_requests_wait_for_a_booting_dyno(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env(state="starting", boot=5.0)
    threading.Timer(0.4, lambda: setattr(env.formation, "state", "up")).start()
    started = time.monotonic()
    status, _, body = env.request("GET", "/hello")
    assert status == 200 and body == b"hello"
    assert time.monotonic() - started >= 0.3


def test_dynos_crashing_while_a_request_waits_is_h10(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env(state="starting", boot=5.0)
    threading.Timer(0.3, lambda: setattr(env.formation, "state", "crashed")).start()
    status, _, body = env.request("GET", "/hello")
    _assert_error_page(status, body)
    assert env.wait_line(code="H10")["dyno"] == ""


def test_no_dyno_up_within_the_boot_timeout_is_h20(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env(state="starting", boot=0.5)
    started = time.monotonic()
    status, _, body = env.request("GET", "/hello")
    _assert_error_page(status, body)
    assert 0.4 < time.monotonic() - started < 3
    line = env.wait_line(code="H20")
    assert line["desc"] == "App boot timeout" and line["dyno"] == ""


def test_slow_response_is_h12_after_the_service_timeout(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env(service=0.5)
    started = time.monotonic()
    status, _, body = env.request("GET", "/sleep?s=2")
    _assert_error_page(status, body)
    assert time.monotonic() - started < 1.5
    line = env.wait_line(code="H12")
    assert line["desc"] == "Request timeout" and line["dyno"] == "web.1" and line["bytes"] == "0"
    assert 500 <= int(line["service"].removesuffix("ms")) < 1500


def test_dyno_closing_without_a_response_is_h13(env: Env) -> None:
    status, _, body = env.request("GET", "/close-nothing")
    _assert_error_page(status, body)
    line = env.wait_line(code="H13")
    assert line["desc"] == "Connection closed without response" and line["dyno"] == "web.1"


def test_dyno_silent_mid_response_is_h15(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env(idle=0.5)
    conn = env.connect(timeout=5)
    conn.request("GET", "/stall?s=3")
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    line = env.wait_line(code="H15")
    assert line["desc"] == "Idle connection" and line["bytes"] != "0"


@pytest.mark.parametrize("path", ["/garbage", "/no-reason"])
def test_poorly_formatted_response_is_h17(env: Env, path: str) -> None:
    status, _, body = env.request("GET", path)
    _assert_error_page(status, body)
    line = env.wait_line(code="H17", path=path)
    assert line["desc"] == "Poorly formatted HTTP response"


def test_dyno_closing_mid_response_is_h18(env: Env) -> None:
    conn = env.connect(timeout=5)
    conn.request("GET", "/close-mid")
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    line = env.wait_line(code="H18")
    assert line["sock"] == "backend" and line["desc"] == "Server Request Interrupted"


def test_dyno_not_accepting_in_time_is_h19(make_env) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler = socket.create_connection(listener.getsockname())  # the accept queue is now full
        try:
            env = make_env(backends=[WebDyno("web.1", listener.getsockname()[1])], connect=0.3)
            status, _, body = env.request("GET", "/hello")
            _assert_error_page(status, body)
            line = env.wait_line(code="H19")
            assert line["desc"] == "Backend connection timeout" and line["dyno"] == "web.1"
            assert int(line["connect"].removesuffix("ms")) >= 300 and line["service"] == ""
        finally:
            filler.close()


def test_dyno_refusing_the_connection_is_h21(make_env) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    env = make_env(backends=[WebDyno("web.1", port)])
    status, _, body = env.request("GET", "/hello")
    _assert_error_page(status, body)
    assert env.wait_line(code="H21")["dyno"] == "web.1"


def test_client_leaving_before_the_response_is_h27(env: Env) -> None:
    with socket.create_connection(("127.0.0.1", env.port)) as sock:
        sock.sendall(b"GET /sleep?s=0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
    line = env.wait_line(code="H27")
    assert line["sock"] == "client" and line["at"] == "warning" and line["status"] == "499"
    assert line["desc"] == "Client Request Interrupted" and line["dyno"] == "web.1"


def test_client_leaving_mid_body_is_h27_and_others_are_served(env: Env) -> None:
    with socket.create_connection(("127.0.0.1", env.port)) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"z" * 5000)
        time.sleep(0.1)
    line = env.wait_line(code="H27")
    assert line["method"] == "POST" and line["status"] == "499"
    assert env.request("GET", "/hello")[0] == 200


def test_dyno_answering_before_the_body_ends(env: Env) -> None:
    status, _, body = env.request("POST", "/early", body=b"q" * 2_000_000)
    assert status == 413 and body == b"too large"
    assert env.wait_line(path="/early")["status"] == "413"


# -- bad input from clients: answered, logged, and nobody else is hurt


@pytest.mark.parametrize(
    "request_bytes, cause",
    [
        (b"GARBAGE\r\n\r\n", "bad request line"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", "bad header"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "request line too long"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 8200 + b"\r\n\r\n", "header line too long"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-" + b"n" * 1000 + b": v\r\n\r\n", "header name too long"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-H: v\r\n" * 1001 + b"\r\n", "too many headers"),
        (b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk"),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", "CONNECT is not supported"),
    ],
)
def test_malformed_requests_get_400(env: Env, request_bytes: bytes, cause: str) -> None:
    out = raw_exchange(env.port, request_bytes)
    if cause != "bad chunk":  # a bad chunk comes after the head went to the dyno; the dyno may answer first
        assert out.startswith(b"HTTP/1.1 400 Bad Request")
    line = env.wait_line(code="H26")
    assert line["cause"] == cause
    assert env.request("GET", "/hello")[0] == 200


def test_an_endless_header_line_is_cut_off_without_being_stored(env: Env) -> None:
    with socket.create_connection(("127.0.0.1", env.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nX-Endless: ")
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(1000):
                sock.sendall(b"v" * 4096)
                time.sleep(0.001)
    assert env.wait_line(code="H26")["cause"] == "header line too long"


def test_slow_headers_are_cut_off_while_others_are_served(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env(headers=0.8)
    slow = socket.create_connection(("127.0.0.1", env.port), timeout=5)
    started = time.monotonic()
    closed_after = None
    try:
        for byte in b"GET /hello HTTP/1.1\r\nHost: slowloris\r\nX-A: " + b"a" * 100:
            if _readable(slow):  # the router hung up on it
                assert slow.recv(1) == b""
                closed_after = time.monotonic() - started
                break
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                closed_after = time.monotonic() - started
                break
            assert env.request("GET", "/hello")[0] == 200  # everyone else is served meanwhile
            time.sleep(0.05)
    finally:
        slow.close()
    assert closed_after is not None and closed_after < 3
    line = env.wait_line(code="H28")
    assert line["at"] == "warning" and line["status"] == "499"


def _readable(sock: socket.socket) -> bool:
    import select

    return bool(select.select([sock], [], [], 0)[0])


# -- the pool, and the public port


def test_dyno_dropping_pooled_connections_is_not_an_error(env: Env) -> None:
    for _ in range(10):
        status, _, body = env.request("GET", "/close-after")
        assert status == 200 and body == b"bye"
    assert not [line for line in env.router_lines() if line["code"]]


def test_idle_keep_alive_connections_are_closed_quietly(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env(idle=0.5)
    with socket.create_connection(("127.0.0.1", env.port), timeout=5) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        assert resp.read() == b"hello"
        started = time.monotonic()
        assert sock.recv(1) == b""  # the router hung up after the idle window
        assert 0.3 < time.monotonic() - started < 3
    assert [line["code"] for line in env.router_lines()] == [None]  # and logged nothing for it


def test_a_taken_port_is_a_one_line_port_error(loop_thread, dyno) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        router = Router(FakeFormation([WebDyno("web.1", dyno.port)]), LogStream(), port=port)
        with pytest.raises(PortError) as caught:
            loop_thread.run(router.start())
    message = str(caught.value)
    assert str(port) in message and "\n" not in message
    assert "taken" in message and "--port" in message


def test_urllib_client_sees_an_ordinary_server(env: Env) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{env.port}/hello", timeout=5) as resp:
        assert resp.status == 200 and resp.read() == b"hello"
