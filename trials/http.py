"""The HTTP trial (issue 22): malformed, oversized and ambiguous requests through a real `dynosim run`'s router.

Each case is raw bytes over a socket to the router's port, with its expected outcome: the status the
router answers, the H-code of its `heroku[router]` line, and no desync. The status is 400 (H26) for
what Heroku's router refuses (lines past 8192 bytes, names past 1000, more than 1000 headers, two Host
headers, HTTP/0.9) and for what RFC 9112 says a server must refuse or may (conflicting or obfuscated
framing, obs-fold, bare CR or LF, NUL, a bad chunk): refused strictly, as a proxy in front of servers
that may read it otherwise must. No desync: on a connection that should stay open the next request
gets exactly its own response, one that should close is closed with nothing more sent, and the dyno
(a stdlib server that records every request it receives, whole or cut short, at `/__seen`) sees
exactly the requests that should reach it, whole, and nothing of the requests refused at their head.
Meanwhile another client asks the router every 50 ms and must be answered within OTHERS_MAX each time,
while slowloris (a head trickled a byte every half second) holds a connection until the router cuts it
off at Heroku's 30 seconds (H28).

A case fails when any of that differs. The wrong-client checks send garbage to the native Postgres and
Redis add-ons' ports and to the control socket: each must refuse or close, and answer a proper client
(and the router its requests) afterwards.

Run alone: `python -m trials.http --count 54 --seed 1 [--case NAME,NAME]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

if __package__ in (None, ""):  # run as a file: this folder first on sys.path would shadow the stdlib's http
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from trials.base import Failure, Result, free_port, replay_command, start_run

REPO = Path(__file__).resolve().parents[1]
# not under /tmp: a dyno gets a private /tmp, so the app and the slug cache live elsewhere
WORK_DIR = Path(os.environ.get("DYNOSIM_TRIALS_WORK", "/var/tmp/dynosim-trials"))
CACHE_DIR = Path(os.environ.get("DYNOSIM_TRIALS_CACHE", "/var/tmp/dynosim-trials-cache"))
HEADERS_TIMEOUT = 30.0  # Heroku's router: a request head must arrive whole within 30 s (RouterTimeouts.headers)
OTHERS_MAX = 1.0  # seconds another client's request may take while the corpus runs
WAIT = 5.0  # seconds to wait for an answer, a log line or the dyno's record

# The web dyno: records every request it receives, and whether its body arrived whole.
SEEN_SERVER = r"""
import json, os, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SEEN = []
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def serve(self):
        if self.path.startswith("/__seen"):
            with LOCK:
                body = json.dumps(SEEN).encode()
            return self.reply(body)
        if self.path.startswith("/__addons"):
            names = ("DATABASE_URL", "REDIS_URL")
            return self.reply(json.dumps({n: os.environ.get(n) for n in names}).encode())
        length, whole = self.read_body()
        record = {"method": self.command, "path": self.path, "body": length, "whole": whole}
        if not self.path.startswith("/__"):
            with LOCK:
                SEEN.append(record)
        if not whole:
            self.close_connection = True
            return None
        return self.reply(json.dumps(record).encode())

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            total = 0
            while True:
                line = self.rfile.readline(1024)
                if not line.endswith(b"\r\n"):
                    return total, False
                size = int(line.split(b";")[0], 16)
                data = self.rfile.read(size + 2)
                if len(data) < size + 2:
                    return total + max(0, len(data) - 2), False
                total += size
                if size == 0:
                    return total, data == b"\r\n" or self.rfile.readline(1024) == b"\r\n"
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        return len(data), len(data) == length

    def reply(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = serve

    def log_message(self, fmt, *args):
        pass


server = ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler)
server.daemon_threads = True
print("listening on %s" % os.environ["PORT"], flush=True)
server.serve_forever()
"""

ROUTER_LINE = re.compile(
    r"heroku\[router\]: (?:sock=\w+ )?at=(?P<at>\w+)(?: code=(?P<code>H\d\d) desc=\"[^\"]*\")?"
    r"(?: cause=\"(?P<cause>[^\"]*)\")? method=(?P<method>\S*) path=\"(?P<path>[^\"]*)\".* status=(?P<status>\d*)"
)


# -- the dynosim run


class Run:
    """A `dynosim run` of the recording app with native Postgres and Redis, its output lines collected."""

    def __init__(self, app: Path) -> None:
        self.app = app
        self.port = free_port()
        self.lines: list[str] = []
        self._cond = threading.Condition()
        env = {
            **os.environ,
            "DYNOSIM_CACHE_DIR": str(CACHE_DIR),
            "DYNOSIM_CA_DIR": os.environ.get("DYNOSIM_CA_DIR", str(WORK_DIR / "ca")),
            "NO_COLOR": "1",
        }
        env.pop("PORT", None)
        args = ["--no-dashboard", "--addon", "heroku-postgresql", "--addon", "heroku-redis", "--addons", "native"]
        self.proc = start_run(app, self.port, args, env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float, start: int = 0) -> int | None:
        """The index of the first line from `start` matching `pattern`, or None after `timeout`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        index = start
        with self._cond:
            while True:
                while index < len(self.lines):
                    if regex.search(self.lines[index]):
                        return index
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    return None
                self._cond.wait(remaining)

    def router_lines(self, start: int, end: int) -> list[re.Match[str]]:
        with self._cond:
            lines = self.lines[start:end]
        return [m for line in lines if (m := ROUTER_LINE.search(line)) is not None]

    def tail(self, n: int = 30) -> str:
        with self._cond:
            return "\n".join(self.lines[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._reader.join(5)


def make_app() -> Path:
    """A copy of fixtures/dynolab whose web dyno is the recording server, in a fresh folder."""
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    app = Path(tempfile.mkdtemp(prefix="http-", dir=WORK_DIR)) / "app"
    shutil.copytree(REPO / "fixtures" / "dynolab", app, ignore=shutil.ignore_patterns(".dynosim"))
    (app / "seen.py").write_text(SEEN_SERVER)
    (app / "Procfile").write_text("web: python seen.py\n")
    return app


# -- a raw client


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class Client:
    """One connection to the router: raw bytes out, responses parsed as they come back."""

    def __init__(self, port: int, timeout: float = WAIT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _line(self) -> bytes | None:
        while b"\r\n" not in self.buf:
            if not self._fill():
                return None
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exactly(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not self._fill():
                return None
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def response(self, head_only: bool = False) -> Response | None:
        """The next response, or None when the connection ends before one is whole."""
        status_line = self._line()
        if status_line is None:
            return None
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise ProtocolMismatch(f"not a status line: {status_line[:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        while (line := self._line()) not in (b"", None):
            name, _, value = line.partition(b":")
            headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
        if line is None:
            return None
        if head_only or status in (100, 204, 304) or 100 <= status < 200:
            return Response(status, headers, b"")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size_line = self._line()
                if size_line is None:
                    return None
                size = _number(size_line.split(b";")[0], 16)
                data = self._exactly(size + 2)
                if data is None:
                    return None
                if size == 0:
                    break
                body += data[:-2]
            return Response(status, headers, body)
        if "content-length" in headers:
            data = self._exactly(_number(headers["content-length"].encode(), 10))
            return None if data is None else Response(status, headers, data)
        while self._fill():
            pass
        body, self.buf = self.buf, b""
        return Response(status, headers, body)

    def closed(self, within: float) -> bool:
        """True when the router ends the connection within `within` seconds, with nothing more sent."""
        if self.buf:
            return False
        deadline = time.monotonic() + within
        while (remaining := deadline - time.monotonic()) > 0:
            if not select.select([self.sock], [], [], remaining)[0]:
                return False
            if not self._fill():
                return True
            if self.buf:
                return False
        return False

    def quiet(self, within: float = 0.1) -> bool:
        """Nothing more arrives (the connection kept open) for `within` seconds."""
        if self.buf:
            return False
        return not select.select([self.sock], [], [], within)[0]


class ProtocolMismatch(Exception):
    """The router's bytes are not HTTP where a response was due."""


def _number(text: bytes, base: int) -> int:
    try:
        return int(text, base)
    except ValueError:
        raise ProtocolMismatch(f"not a length in a response: {text[:40]!r}") from None


# -- the corpus


@dataclass(frozen=True)
class Seen:
    """A request the dyno should receive whole: its method, the path after the case's prefix, its body's length."""

    method: str
    path: str
    body: int = 0


@dataclass(frozen=True)
class Case:
    """Raw bytes (`{p}` stands for the case's path prefix) and what must come of them.

    `statuses`: the responses due, in order (none: the connection ends without one); `codes`: the
    H-code of each router line the case makes (None for an at=info line); `keep`: the connection stays
    open for another request; `seen`: what the dyno receives whole; `cut_short`: the dyno may also
    receive the start of a request whose end never comes (it must know it is not whole).
    """

    name: str
    data: bytes
    statuses: tuple[int, ...]
    codes: tuple[str | None, ...]
    keep: bool
    seen: tuple[Seen, ...] = ()
    cut_short: bool = False
    play: Callable[[Client, bytes], list[Response | None]] | None = None
    cause: str = ""  # the H26 line's cause=, when it matters


HOST = b"Host: trial.localhost\r\n"


def _req(head: bytes, body: bytes = b"") -> bytes:
    """`head` is the request line and headers without Host or the blank line."""
    line, _, rest = head.partition(b"\r\n")
    return line + b"\r\n" + HOST + (rest + b"\r\n" if rest else b"") + b"\r\n" + body


def _bad(name: str, data: bytes, cause: str = "") -> Case:
    """A request Heroku's router refuses: 400, H26, closed, and nothing reaches the dyno."""
    return Case(name, data, (400,), ("H26",), keep=False, cause=cause)


def _ok(name: str, data: bytes, *seen: Seen, keep: bool = True) -> Case:
    return Case(name, data, (200,), (None,), keep=keep, seen=seen)


def _play_expect(client: Client, data: bytes) -> list[Response | None]:
    """Expect: 100-continue: the head, the router's 100 Continue, then the body and the dyno's answer."""
    head, _, body = data.partition(b"\r\n\r\n")
    client.send(head + b"\r\n\r\n")
    interim = client.response()
    if interim is None or interim.status != 100:
        return [interim]
    client.send(body)
    return [interim, client.response()]


def _play_early_close(client: Client, data: bytes) -> list[Response | None]:
    """Part of a body, then the client hangs up: no response can come."""
    client.send(data)
    time.sleep(0.05)  # the head and the first bytes are at the dyno
    client.close()
    return []


def _play_tls_garbage(client: Client, data: bytes) -> list[Response | None]:
    """A TLS record that is no ClientHello: the router may send an alert, never HTTP, and must hang up."""
    client.send(data)
    deadline = time.monotonic() + WAIT
    while client._fill():
        if client.buf.startswith(b"HTTP/"):
            raise ProtocolMismatch(f"an HTTP answer to a TLS handshake: {client.buf[:40]!r}")
        if time.monotonic() > deadline:
            raise TimeoutError
    client.buf = b""
    return []


def _play_head(client: Client, data: bytes) -> list[Response | None]:
    client.send(data)
    return [client.response(head_only=True)]


def corpus() -> list[Case]:
    cl_te_body = b"0\r\n\r\n"
    smuggled = b"GET {p}/smuggled HTTP/1.1\r\n" + HOST + b"\r\n"
    return [
        # framing: Content-Length and Transfer-Encoding in conflict (RFC 9112 6.1, 6.3)
        _bad(
            "cl-te",
            _req(b"POST {p}/a HTTP/1.1\r\nContent-Length: 40\r\nTransfer-Encoding: chunked", cl_te_body + smuggled),
        ),
        _bad(
            "te-cl",
            _req(b"POST {p}/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 40", cl_te_body + smuggled),
        ),
        _bad("cl-cl", _req(b"POST {p}/a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6", b"hello" + smuggled)),
        _bad("cl-list", _req(b"POST {p}/a HTTP/1.1\r\nContent-Length: 5, 6", b"hello" + smuggled)),
        _bad("cl-plus", _req(b"POST {p}/a HTTP/1.1\r\nContent-Length: +5", b"hello")),
        _bad("cl-hex", _req(b"POST {p}/a HTTP/1.1\r\nContent-Length: 0x5", b"hello")),
        _bad("cl-overflow", _req(b"POST {p}/a HTTP/1.1\r\nContent-Length: 184467440737095516160", b"hello")),
        _bad("cl-negative", _req(b"POST {p}/a HTTP/1.1\r\nContent-Length: -5", b"hello")),
        _bad("cl-space-before-colon", _req(b"POST {p}/a HTTP/1.1\r\nContent-Length : 5", b"hello")),
        # Transfer-Encoding obfuscated: chunked must be the last coding, and named exactly
        _ok(
            "te-trailing-space",
            _req(b"POST {p}/a HTTP/1.1\r\nTransfer-Encoding: chunked ", b"5\r\nhello\r\n0\r\n\r\n"),
            Seen("POST", "/a", 5),
        ),
        _ok(
            "te-uppercase",
            _req(b"POST {p}/a HTTP/1.1\r\nTransfer-Encoding: CHUNKED", b"5\r\nhello\r\n0\r\n\r\n"),
            Seen("POST", "/a", 5),
        ),
        _bad(
            "te-xchunked",
            _req(b"POST {p}/a HTTP/1.1\r\nTransfer-Encoding: xchunked", b"5\r\nhello\r\n0\r\n\r\n" + smuggled),
        ),
        _bad(
            "te-chunked-identity",
            _req(b"POST {p}/a HTTP/1.1\r\nTransfer-Encoding: chunked, identity", b"5\r\nhello\r\n0\r\n\r\n" + smuggled),
        ),
        _bad(
            "te-identity",
            _req(b"POST {p}/a HTTP/1.1\r\nTransfer-Encoding: identity", b"5\r\nhello\r\n0\r\n\r\n" + smuggled),
        ),
        _bad(
            "te-twice",
            _req(
                b"POST {p}/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                b"5\r\nhello\r\n0\r\n\r\n",
            ),
        ),
        _bad(
            "te-space-before-colon",
            _req(b"POST {p}/a HTTP/1.1\r\nTransfer-Encoding : chunked", b"0\r\n\r\n" + smuggled),
        ),
        _bad("te-vertical-tab", _req(b"POST {p}/a HTTP/1.1\r\nTransfer-Encoding:\x0bchunked", b"0\r\n\r\n" + smuggled)),
        # header syntax (RFC 9112 5.1, 5.2; RFC 9110 5.5)
        _bad("obs-fold", _req(b"GET {p}/a HTTP/1.1\r\nX-Folded: one\r\n two")),
        _bad(
            "obs-fold-te",
            _req(b"POST {p}/a HTTP/1.1\r\nX-Folded: one\r\n Transfer-Encoding: chunked", b"0\r\n\r\n" + smuggled),
        ),
        _bad("leading-whitespace-header", b"GET {p}/a HTTP/1.1\r\n " + HOST + b"\r\n"),
        _bad("bare-lf", b"GET {p}/a HTTP/1.1\n" + HOST.replace(b"\r\n", b"\n") + b"X-A: b\n\n"),
        _bad("bare-cr", _req(b"GET {p}/a HTTP/1.1\r\nX-A: b\rX-B: c")),
        _bad("nul-in-header", _req(b"GET {p}/a HTTP/1.1\r\nX-A: b\x00c")),
        _bad("nul-in-name", _req(b"GET {p}/a HTTP/1.1\r\nX-\x00A: b")),
        _bad("empty-header-name", _req(b"GET {p}/a HTTP/1.1\r\n: v")),
        _bad("two-hosts", _req(b"GET {p}/a HTTP/1.1\r\nHost: other.localhost")),
        _bad("space-in-target", _req(b"GET {p}/a b HTTP/1.1")),
        # oversized: Heroku's router takes lines of 8192 bytes at most, names of 1000, 1000 headers (400)
        _bad("long-request-line", _req(b"GET {p}/" + b"a" * 9000 + b" HTTP/1.1"), "request line too long"),
        _bad("long-header-line", _req(b"GET {p}/a HTTP/1.1\r\nX-Big: " + b"v" * 8200), "header line too long"),
        _bad("long-header-name", _req(b"GET {p}/a HTTP/1.1\r\nX-" + b"n" * 1000 + b": v"), "header name too long"),
        _bad("many-headers", _req(b"GET {p}/a HTTP/1.1" + b"\r\nX-H: v" * 1001), "too many headers"),
        _ok(
            "big-headers-within-limits",
            _req(b"GET {p}/a HTTP/1.1" + b"".join(b"\r\nX-H%d: " % i + b"v" * 8000 for i in range(8))),
            Seen("GET", "/a"),
        ),
        # the request line
        _bad("no-version", b"GET {p}/nover\r\n\r\n"),
        _bad("no-version-with-headers", b"GET {p}/nover\r\n" + HOST + b"\r\n"),
        _bad("http-2-line", _req(b"GET {p}/a HTTP/2.0")),
        _bad("garbage-line", b"\x7f\x01GARBAGE {p}\xff\r\n\r\n"),
        # the port speaks TLS too: a first byte of 0x16 is a handshake, and garbage in it is refused (H26)
        Case("tls-garbage", b"\x16\x03\x01\x00\x05{p}", (), ("H26",), keep=False, play=_play_tls_garbage),
        _ok("absolute-form", b"GET http://trial.localhost{p}/a HTTP/1.1\r\n" + HOST + b"\r\n", Seen("GET", "/a")),
        # chunked bodies
        _ok(
            "chunked-with-trailers",
            _req(b"POST {p}/a HTTP/1.1\r\nTransfer-Encoding: chunked", b"5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"),
            Seen("POST", "/a", 5),
        ),
        _ok(
            "chunk-extension",
            _req(b"POST {p}/a HTTP/1.1\r\nTransfer-Encoding: chunked", b"5;name=value\r\nhello\r\n0\r\n\r\n"),
            Seen("POST", "/a", 5),
        ),
        _ok(
            "chunk-leading-zeros",
            _req(b"POST {p}/a HTTP/1.1\r\nTransfer-Encoding: chunked", b"0005\r\nhello\r\n000\r\n\r\n"),
            Seen("POST", "/a", 5),
        ),
        _body_bad("chunk-size-overflow", b"fffffffffffffffff1\r\nhello\r\n0\r\n\r\n"),
        _body_bad("chunk-size-negative", b"-5\r\nhello\r\n0\r\n\r\n"),
        _body_bad("chunk-missing-crlf", b"5\r\nhelloXX0\r\n\r\n"),
        _body_bad("chunk-size-not-hex", b"zz\r\nhello\r\n0\r\n\r\n"),
        # several requests on one connection
        Case(
            "pipelined-3",
            _req(b"GET {p}/one HTTP/1.1")
            + _req(b"POST {p}/two HTTP/1.1\r\nContent-Length: 5", b"hello")
            + _req(b"GET {p}/three HTTP/1.1"),
            (200, 200, 200),
            (None, None, None),
            keep=True,
            seen=(Seen("GET", "/one"), Seen("POST", "/two", 5), Seen("GET", "/three")),
        ),
        Case(
            "pipelined-20",
            b"".join(_req(b"GET {p}/%d HTTP/1.1" % i) for i in range(20)),
            (200,) * 20,
            (None,) * 20,
            keep=True,
            seen=tuple(Seen("GET", f"/{i}") for i in range(20)),
        ),
        # Connection: close ends the connection: what follows it in the same packet is never read
        Case(
            "close-then-pipelined",
            _req(b"GET {p}/one HTTP/1.1\r\nConnection: close") + _req(b"GET {p}/two HTTP/1.1"),
            (200,),
            (None,),
            keep=False,
            seen=(Seen("GET", "/one"),),
        ),
        _ok("get-with-body", _req(b"GET {p}/a HTTP/1.1\r\nContent-Length: 5", b"hello"), Seen("GET", "/a", 5)),
        Case(
            "head",
            _req(b"HEAD {p}/a HTTP/1.1"),
            (200,),
            (None,),
            keep=True,
            seen=(Seen("HEAD", "/a"),),
            play=_play_head,
        ),
        Case(
            "early-close-mid-body",
            _req(b"POST {p}/a HTTP/1.1\r\nContent-Length: 100", b"only ten b"),
            (),
            ("H27",),
            keep=False,
            cut_short=True,
            play=_play_early_close,
        ),
        # HTTP/1.0
        _ok("http10-close", b"GET {p}/a HTTP/1.0\r\n\r\n", Seen("GET", "/a"), keep=False),
        _ok("http10-keep-alive", b"GET {p}/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", Seen("GET", "/a")),
        _ok("http11-connection-close", _req(b"GET {p}/a HTTP/1.1\r\nConnection: close"), Seen("GET", "/a"), keep=False),
        # a bad request behind a good one: the good one is answered, then the connection closes
        Case(
            "pipelined-then-bad",
            _req(b"GET {p}/one HTTP/1.1") + b"GET {p}/two HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n",
            (200,),
            ("H26", None),  # refused as it is read, while the first is served: it is never answered
            keep=False,
            seen=(Seen("GET", "/one"),),
        ),
        _ok("leading-empty-line", b"\r\n" + _req(b"GET {p}/a HTTP/1.1"), Seen("GET", "/a")),
        _ok(
            "h2c-upgrade",
            _req(
                b"GET {p}/a HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"
            ),
            Seen("GET", "/a"),
            keep=False,
        ),
        _ok(
            "http10-chunked",
            b"POST {p}/a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            Seen("POST", "/a", 5),
            keep=False,
        ),
        # Expect
        Case(
            "expect-100-continue",
            _req(b"POST {p}/a HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue", b"hello"),
            (100, 200),
            (None,),
            keep=True,
            seen=(Seen("POST", "/a", 5),),
            play=_play_expect,
        ),
        Case("expect-other", _req(b"GET {p}/a HTTP/1.1\r\nExpect: teapot"), (417,), ("H26",), keep=True),
        SLOWLORIS,
    ]


def _body_bad(name: str, body: bytes) -> Case:
    """A bad chunk: the head may already be at the dyno, which must never take the request as whole."""
    return Case(
        name,
        _req(b"POST {p}/a HTTP/1.1\r\nTransfer-Encoding: chunked", body),
        (400,),
        ("H26",),
        keep=False,
        cut_short=True,
        cause="bad chunk",
    )


# played in the background (see Slowloris): the head trickled a byte at a time, never finished
SLOWLORIS = Case(
    "slowloris", b"GET {p}/slow HTTP/1.1\r\n" + HOST + b"X-Trickle: " + b"a" * 1000, (), ("H28",), keep=False
)


# -- playing a case


@dataclass
class Outcome:
    problems: list[str] = field(default_factory=list)

    def expect(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)


def _path_of(record_path: str) -> str:
    """A path as the dyno got it: absolute-form targets (http://host/path) reduced to their path."""
    if record_path.startswith(("http://", "https://")):
        parts = urlsplit(record_path)
        return parts.path + ("?" + parts.query if parts.query else "")
    return record_path


class Trial:
    """The run, the corpus played against it, and the other client asking the router meanwhile."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.port = run.port
        self.mark = 0  # the output line after the previous case's marker
        self.others: list[float] = []
        self.others_failed: list[str] = []
        self._stop = threading.Event()
        self._other = threading.Thread(target=self._ask_meanwhile, daemon=True)

    # the client that must be served whatever the corpus does

    def _ask_meanwhile(self) -> None:
        while not self._stop.wait(0.05):
            started = time.monotonic()
            try:
                client = Client(self.port, timeout=WAIT)
                try:
                    client.send(_req(b"GET /__other HTTP/1.1\r\nConnection: close"))
                    response = client.response()
                finally:
                    client.close()
            except OSError as error:
                self.others_failed.append(f"{type(error).__name__}: {error}")
                continue
            took = time.monotonic() - started
            if response is None or response.status != 200:
                self.others_failed.append(f"got {response.status if response else 'no response'}")
            self.others.append(took)

    def seen(self) -> list[dict[str, object]]:
        client = Client(self.port)
        try:
            client.send(_req(b"GET /__seen HTTP/1.1\r\nConnection: close"))
            response = client.response()
        finally:
            client.close()
        if response is None or response.status != 200:
            raise RuntimeError(f"the dyno's record /__seen did not answer ({response})")
        records: list[dict[str, object]] = json.loads(response.body)
        return records

    def records_of(self, prefix: str) -> list[dict[str, object]]:
        return [r for r in self.seen() if _belongs(r, prefix)]

    def play(self, index: int, case: Case) -> list[str]:
        """Play `case` as the `index`th of the trial: the problems found, none when it passed."""
        prefix = f"/c{index}-{case.name}"
        data = case.data.replace(b"{p}", prefix.encode())
        out = Outcome()
        start = self.mark
        client = Client(self.port)
        try:
            try:
                responses = case.play(client, data) if case.play else self._send(client, data, len(case.statuses))
            except ProtocolMismatch as error:
                out.expect(False, str(error))
                responses = []
            except TimeoutError:
                out.expect(False, f"no answer within {WAIT:.0f}s")
                responses = []
            got = tuple(r.status if r else None for r in responses)
            out.expect(got == case.statuses, f"expected statuses {list(case.statuses)}, got {list(got)}")
            for response, expected in zip(responses, case.seen, strict=False):
                if response is not None and response.status == 200 and response.body:
                    echoed = json.loads(response.body)
                    own = _path_of(echoed["path"]) == prefix + expected.path
                    out.expect(own, f"a response for {echoed['path']} where {prefix + expected.path} was due")
            if not out.problems and case.play is not _play_early_close:
                self._after(client, case, prefix, out)
        finally:
            client.close()
        # the router's lines for this case: all of them are out once a marker request's line is
        marker = f"/__mark/{index}"
        if case.codes:
            last = case.codes[-1]
            self.run.wait_for(rf"code={last}\b" if last else r"at=info", WAIT, start)
        with suppress(OSError):
            mark = Client(self.port)
            mark.send(_req(b"GET " + marker.encode() + b" HTTP/1.1\r\nConnection: close"))
            mark.response()
            mark.close()
        end = self.run.wait_for(re.escape(f'path="{marker}"'), WAIT, start)
        if end is None:
            out.expect(False, "the router logged no line for the marker request after the case")
            end = len(self.run.lines)
        self.mark = end + 1
        lines = [m for m in self.run.router_lines(start, end) if not _background(m["path"])]
        codes = tuple(m["code"] for m in lines)
        want = case.codes + ((None,) if case.keep else ())
        out.expect(codes == want, f"expected router lines {_codes(want)}, got {_codes(codes)}")
        if case.cause and lines and lines[0]["cause"] != case.cause:
            out.expect(False, f"expected cause={case.cause!r}, got {lines[0]['cause']!r}")
        self._check_seen(case, prefix, out)
        return out.problems

    def _send(self, client: Client, data: bytes, n: int) -> list[Response | None]:
        try:
            client.send(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the router hung up mid-way (a line too long): its answer may still be there to read
        responses: list[Response | None] = []
        for _ in range(max(n, 1)):
            response = client.response()
            responses.append(response)
            if response is None:
                break
        return responses if n else [r for r in responses if r is not None]

    def _after(self, client: Client, case: Case, prefix: str, out: Outcome) -> None:
        """The desync check: a request of its own on a kept connection, or a closed one."""
        if not case.keep:
            out.expect(client.closed(WAIT), "the connection stayed open (or sent more) after its last response")
            return
        out.expect(client.quiet(), "bytes arrived after the case's responses, before the next request")
        version = b"HTTP/1.0" if b"HTTP/1.0" in case.data.split(b"\r\n", 1)[0] else b"HTTP/1.1"
        keep = b"\r\nConnection: keep-alive" if version == b"HTTP/1.0" else b""
        client.send(_req(b"GET " + prefix.encode() + b"/next " + version + keep))
        response = client.response()
        if response is None:
            out.expect(False, "the connection closed before the next request's response")
            return
        echoed = json.loads(response.body) if response.status == 200 else {}
        out.expect(
            response.status == 200 and _path_of(echoed.get("path", "")) == prefix + "/next",
            f"the next request got {response.status} for {echoed.get('path')!r}, not its own response",
        )
        out.expect(client.quiet(), "bytes arrived after the next request's response")

    def _check_seen(
        self, case: Case, prefix: str, out: Outcome, records: list[dict[str, object]] | None = None
    ) -> None:
        """The dyno saw exactly the requests it should have, whole (and no cut-short one as whole);
        with `records`, in those, at once (the sweep at the end, for requests that came late)."""
        want = [(s.method, prefix + s.path, s.body) for s in case.seen]
        if case.keep:
            want.append(("GET", prefix + "/next", 0))
        deadline = time.monotonic() + WAIT
        while True:
            mine = self.records_of(prefix) if records is None else [r for r in records if _belongs(r, prefix)]
            whole = [(str(r["method"]), _path_of(str(r["path"])), r["body"]) for r in mine if r["whole"]]
            cut = [r for r in mine if not r["whole"]]
            if records is not None or len(whole) >= len(want) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        out.expect(whole == want, f"the dyno saw {whole} whole, not {want}")
        out.expect(case.cut_short or not cut, f"the dyno saw the start of a request it should not: {cut}")

    def sweep(self, played: list[tuple[int, Case]]) -> list[tuple[str, list[str]]]:
        """After the corpus: (case, problems) for requests that reached the dyno late, or belong to no case."""
        records = self.seen()
        found: list[tuple[str, list[str]]] = []
        prefixes = []
        for index, case in played:
            prefix = f"/c{index}-{case.name}"
            prefixes.append(prefix)
            out = Outcome()
            self._check_seen(case, prefix, out, records)
            if out.problems:
                found.append((f"case {index} {case.name} (at the end)", out.problems))
        stray = [r for r in records if not any(_belongs(r, p) for p in prefixes)]
        if stray:
            found.append(("the dyno's record", [f"requests of no case reached the dyno: {stray[:5]}"]))
        return found


def _belongs(record: dict[str, object], prefix: str) -> bool:
    return _path_of(str(record["path"])).startswith(prefix + "/")


def _background(path: str) -> bool:
    """Lines of the other client, the dyno's record, the markers and slowloris: not the case's own."""
    return path.startswith("/__") or "-slowloris/" in path


def _codes(codes: tuple[str | None, ...]) -> str:
    return "[" + ", ".join(c or "info" for c in codes) + "]"


class Slowloris:
    """A head trickled a byte every 0.5 s: the router must cut it off at Heroku's 30 s, and log H28."""

    def __init__(self, port: int, index: int) -> None:
        self.port = port
        self.prefix = f"/c{index}-slowloris"
        self.data = SLOWLORIS.data.replace(b"{p}", self.prefix.encode())
        self.started = time.monotonic()
        self.cut_after: float | None = None
        self.problem = ""
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
        except OSError as error:
            self.problem = f"could not connect: {error}"
            return
        with sock:
            for byte in self.data:
                try:
                    if select.select([sock], [], [], 0)[0]:
                        extra = sock.recv(1)
                        if extra:
                            self.problem = f"the router answered a head never finished ({extra!r}…)"
                        break
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                if time.monotonic() - self.started > HEADERS_TIMEOUT + 10:
                    self.problem = f"still connected after {HEADERS_TIMEOUT + 10:.0f}s"
                    return
                time.sleep(0.5)
            else:
                self.problem = "the whole head was trickled without the router cutting it off"
                return
            self.cut_after = time.monotonic() - self.started

    def result(self, run: Run) -> list[str]:
        self.thread.join(HEADERS_TIMEOUT + 15)
        if self.problem:
            return [self.problem]
        took = self.cut_after or 0.0
        problems = []
        if not HEADERS_TIMEOUT - 1 <= took <= HEADERS_TIMEOUT + 5:
            problems.append(f"cut off after {took:.1f}s, not Heroku's {HEADERS_TIMEOUT:.0f}s")
        found = run.wait_for(rf'code=H28 .*path="{re.escape(self.prefix)}/slow"', WAIT)
        if found is None:
            problems.append("no H28 router line for it")
        return problems


# -- wrong clients: garbage to the add-ons' ports and the control socket

GARBAGE = b"\x16\x03\x01GET / HTTP/1.1\r\n\x00\xff" * 20 + os.urandom(256)


def _garbage_to(host: str, port: int) -> str:
    """Send garbage; '' when the server closed (or refused) within WAIT, else what it did."""
    try:
        with socket.create_connection((host, port), timeout=WAIT) as sock:
            try:
                sock.sendall(GARBAGE)
                while sock.recv(65536):
                    pass
            except (ConnectionResetError, BrokenPipeError):
                pass
    except ConnectionRefusedError:
        return ""
    except TimeoutError:
        return f"{host}:{port} kept a garbage client connected for {WAIT:.0f}s"
    return ""


def _postgres_answers(host: str, port: int) -> bool:
    """The server answers an SSLRequest with S (TLS on offer) or N: it still speaks its protocol."""
    with socket.create_connection((host, port), timeout=WAIT) as sock:
        sock.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))
        return sock.recv(1) in (b"S", b"N")


def _redis_answers(url: str) -> bool:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    with socket.create_connection((host, port), timeout=WAIT) as raw:
        sock: socket.socket = raw
        if parts.scheme == "rediss":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # Heroku's Key-Value Store certificate cannot be verified either
            sock = context.wrap_socket(raw, server_hostname=host)
        command = b"*1\r\n$4\r\nPING\r\n"
        if parts.password:
            pw = parts.password.encode()
            command = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%b\r\n" % (len(pw), pw) + command
        sock.sendall(command)
        got = b""
        while b"PONG" not in got and b"-" not in got[:1]:
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
        return b"PONG" in got


def wrong_clients(trial: Trial) -> list[tuple[str, list[str]]]:
    """(what, problems) for each wrong client: Postgres's and Redis's ports, the control socket."""
    from dynosim import control

    results: list[tuple[str, list[str]]] = []
    client = Client(trial.port)
    client.send(_req(b"GET /__addons HTTP/1.1\r\nConnection: close"))
    response = client.response()
    client.close()
    urls = json.loads(response.body) if response and response.status == 200 else {}
    for name, url_key, answers in (
        ("heroku-postgresql port", "DATABASE_URL", lambda u: _postgres_answers(*_host_port(u))),
        ("heroku-redis port", "REDIS_URL", _redis_answers),
    ):
        url = urls.get(url_key)
        if not url:
            results.append((name, [f"the dyno has no {url_key}"]))
            continue
        problems = []
        if problem := _garbage_to(*_host_port(url)):
            problems.append(problem)
        try:
            ok = answers(url)
        except OSError as error:
            ok = False
            problems.append(f"a proper client failed after the garbage: {error}")
        else:
            if not ok:
                problems.append("a proper client got no proper answer after the garbage")
        results.append((name, problems))
    state = trial.run.app / ".dynosim"
    problems = []
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    try:
        sock.connect(str(state / control.SOCKET_NAME))
        sock.sendall(GARBAGE + b"\n" + b"x" * (control.MAX_REQUEST + 10))
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    except TimeoutError:
        problems.append(f"the control socket kept a garbage client for {WAIT:.0f}s")
    except OSError as error:
        problems.append(f"could not reach the control socket: {error}")
    finally:
        sock.close()
    try:
        ps = control.request(state, "ps")
        if not ps:
            problems.append("`ps` over the control socket answered nothing after the garbage")
    except Exception as error:
        problems.append(f"`ps` over the control socket failed after the garbage: {error}")
    results.append(("control socket", problems))
    return results


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 0


# -- the trial


@contextmanager
def running() -> Iterator[Run]:
    app = make_app()
    run = Run(app)
    try:
        if run.wait_for(r"heroku\[web\.1\]: State changed from starting to up", 120) is None:
            raise RuntimeError("the web dyno did not come up in 120s; the run's last lines:\n" + run.tail())
        yield run
    finally:
        run.stop()
        shutil.rmtree(app.parent, ignore_errors=True)


def draw(count: int, seed: int, only: str | None = None) -> list[Case]:
    """`count` cases: the corpus cycled, each cycle in an order drawn from `seed`."""
    names = set(only.split(",")) if only else None
    cases = [c for c in corpus() if names is None or c.name in names]
    unknown = names - {c.name for c in cases} if names else set()
    if unknown or not cases:
        known = ", ".join(c.name for c in corpus())
        raise ValueError(f"no case named {', '.join(sorted(unknown))}; the corpus: {known}")
    rng = random.Random(seed)
    drawn: list[Case] = []
    while len(drawn) < count:
        cycle = list(cases)
        rng.shuffle(cycle)
        drawn.extend(cycle)
    return drawn[:count]


def run(count: int, seed: int, only: str | None = None) -> Result:
    cases = draw(count, seed, only)
    replay = replay_command("http", seed, count)
    if only:
        replay = f"python -m trials.http --count {count} --seed {seed} --case {only}"
    failures: list[Failure] = []
    passing: list[tuple[int, Case]] = []
    passed = 0
    with running() as dynosim:
        trial = Trial(dynosim)
        trial._other.start()
        # slowloris first: its 30 seconds pass while the rest of the corpus is played
        slow = [(index, Slowloris(trial.port, index)) for index, case in enumerate(cases) if case is SLOWLORIS]
        try:
            for index, case in enumerate(cases):
                if case is SLOWLORIS:
                    continue
                problems = trial.play(index, case)
                if problems:
                    failures.append(Failure(f"case {index} {case.name}: " + "; ".join(problems), replay))
                else:
                    passing.append((index, case))
            for index, loris in slow:
                problems = loris.result(dynosim)
                if problems:
                    failures.append(Failure(f"case {index} slowloris: " + "; ".join(problems), replay))
                else:
                    passing.append((index, SLOWLORIS))
            late = trial.sweep(list(enumerate(cases)))
            for what, problems in late:
                failures.append(Failure(f"{what}: " + "; ".join(problems), replay))
            failed_late = {what.split(" (")[0] for what, _ in late}
            passed = sum(1 for index, case in passing if f"case {index} {case.name}" not in failed_late)
        finally:
            trial._stop.set()
            trial._other.join(WAIT)
        slowest = max(trial.others, default=0.0)
        if trial.others_failed or slowest > OTHERS_MAX:
            why = trial.others_failed[:3] or [f"its slowest answer took {slowest:.2f}s (at most {OTHERS_MAX}s)"]
            failures.append(Failure("the other client was not served meanwhile: " + "; ".join(why), replay))
        wrong = wrong_clients(trial)
        for what, problems in wrong:
            if problems:
                failures.append(Failure(f"wrong client on the {what}: " + "; ".join(problems), replay))
        refused = sum(1 for _, problems in wrong if not problems)
        if dynosim.proc.poll() is not None:
            failures.append(Failure(f"dynosim exited ({dynosim.proc.returncode}) during the trial", replay))
        else:
            try:
                final = Client(trial.port)
                final.send(_req(b"GET /__other HTTP/1.1\r\nConnection: close"))
                answered = final.response()
                final.close()
            except OSError:
                answered = None
            if answered is None or answered.status != 200:
                failures.append(Failure("the router did not answer after the wrong clients", replay))
    figure = (
        f"{passed:,} of {len(cases):,} cases passed; {refused} of {len(wrong)} wrong clients refused, the run unhurt; "
        f"another client answered within {slowest * 1000:.0f} ms meanwhile"
    )
    return Result(
        runs=len(cases) + len(wrong),
        failures=tuple(failures),
        figure=figure,
        goal="all (the right status and H-code, no desync)",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=len(corpus()), help="cases to play (the corpus cycled)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--case", help="play only these cases of the corpus (NAME[,NAME])", metavar="NAMES")
    args = parser.parse_args()
    try:
        result = run(args.count, args.seed, args.case)
    except (ValueError, RuntimeError) as error:
        print(f"trials.http: {error}", file=sys.stderr)
        return 2
    print(f"{result.figure} (goal: {result.goal})")
    for failure in result.failures:
        print(f"FAILED {failure.description}\n  replay: {failure.replay}")
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
