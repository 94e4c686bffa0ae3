"""HTTPS at the router, against real TLS on loopback: one port for plain HTTP and TLS, the dyno told the
client's scheme, bad handshakes closed and logged while everyone else is served, and the redirect loop of
an app that does not trust X-Forwarded-Proto named once.

The router runs on a loop thread in front of the stdlib dyno stand-in of test_router; clients are
http.client, urllib and raw sockets with Python's ssl, trusting (or not) a certificate authority made
for this module.
"""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest
from test_router import (  # noqa: F401
    FAST,
    DynoServer,
    Env,
    FakeFormation,
    LoopThread,
    dyno,
    loop_thread,
)

from dynosim.ca import LocalCA
from dynosim.logs import LogStream
from dynosim.router import Router, RouterTimeouts, WebDyno

HINT = (
    "the app redirects https requests to https forever: it does not trust X-Forwarded-Proto "
    "(GET https://127.0.0.1:{port}/loop was answered 301 with a redirect to itself 3 times in a row; "
    "the router terminates TLS and the dyno gets plain HTTP, as on Heroku). "
    "Fix: trust the header: gunicorn --forwarded-allow-ips='*' (FORWARDED_ALLOW_IPS), "
    'Django SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https"), '
    "Werkzeug ProxyFix(app.wsgi_app, x_proto=1)"
)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA.load_or_create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def server_context(ca: LocalCA) -> ssl.SSLContext:
    return ca.server_cert().context()


@pytest.fixture
def client_context(ca: LocalCA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.cert_path))


class TLSEnv(Env):
    def https(self, context: ssl.SSLContext, timeout: float = 10) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=context)

    def hints(self) -> list[str]:
        return [line.text for line in self.lines if line.source == "dynosim"]

    def router_lines(self) -> list[dict[str, str]]:
        keep = self.lines
        self.lines = [line for line in keep if line.source != "dynosim"]
        try:
            return super().router_lines()
        finally:
            self.lines = keep


@pytest.fixture
def make_env(loop_thread, dyno, server_context):  # type: ignore[no-untyped-def]  # noqa: F811
    made: list[TLSEnv] = []

    def make(
        backend_port: int | None = None,
        tls: bool = True,
        host: str = "127.0.0.1",
        forwarded_port: str = "heroku",
        **timeouts: float,
    ) -> TLSEnv:
        formation = FakeFormation([WebDyno("web.1", backend_port or dyno.port)])
        logs = LogStream()
        router = Router(
            formation,
            logs,
            host=host,
            port=0,
            timeouts=RouterTimeouts(**{**FAST, **timeouts}),
            tls=server_context if tls else None,
            forwarded_port=forwarded_port,
        )
        env = TLSEnv(loop_thread, router, formation, logs)
        logs.subscribe(env.lines.extend)
        loop_thread.run(router.start())
        made.append(env)
        return env

    yield make
    for env in made:
        env.loop.run(env.router.stop())


@pytest.fixture
def env(make_env) -> TLSEnv:  # type: ignore[no-untyped-def]
    return make_env()


def seen_headers(body: bytes) -> dict[str, str]:
    return {k.lower(): v for k, v in json.loads(body)}


# -- one port, both protocols


def test_https_is_terminated_and_the_dyno_gets_plain_http_with_the_scheme(env: TLSEnv, client_context) -> None:  # type: ignore[no-untyped-def]
    with closing(env.https(client_context)) as conn:
        conn.request("GET", "/headers?tls=1", headers={"X-Forwarded-Proto": "http"})  # a client's value never passes
        resp = conn.getresponse()
        assert resp.status == 200 and resp.headers["Via"] == "1.1 vegur"
        seen = seen_headers(resp.read())
        assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-forwarded-port"] == "443"  # as Heroku's router says it, whatever port the router listens on
    line = env.wait_line(path="/headers?tls=1")
    assert line["protocol"] == "https" and line["status"] == "200" and line["dyno"] == "web.1"
    assert line["request_id"] == seen["x-request-id"] and line["fwd"] == "127.0.0.1"


def test_plain_http_on_the_same_port_is_served_as_before(env: TLSEnv) -> None:
    status, _, body = env.request("GET", "/headers?plain=1", headers={"X-Forwarded-Proto": "https"})
    assert status == 200
    seen = seen_headers(body)
    assert seen["x-forwarded-proto"] == "http" and seen["x-forwarded-port"] == "80"
    assert env.wait_line(path="/headers?plain=1")["protocol"] == "http"


def test_forwarded_port_public_sends_the_port_the_client_used(make_env, client_context) -> None:  # type: ignore[no-untyped-def]
    env = make_env(forwarded_port="public")
    with closing(env.https(client_context)) as conn:
        conn.request("GET", "/headers")
        tls = seen_headers(conn.getresponse().read())
    _, _, body = env.request("GET", "/headers")
    plain = seen_headers(body)
    assert (tls["x-forwarded-proto"], tls["x-forwarded-port"]) == ("https", str(env.port))
    assert (plain["x-forwarded-proto"], plain["x-forwarded-port"]) == ("http", str(env.port))


def test_urllib_with_the_ca_and_without(env: TLSEnv, client_context) -> None:  # type: ignore[no-untyped-def]
    url = f"https://localhost:{env.port}/hello"  # the certificate covers localhost, 127.0.0.1 and ::1
    with urllib.request.urlopen(url, context=client_context, timeout=10) as response:
        assert response.status == 200 and response.read() == b"hello"
    with pytest.raises(urllib.error.URLError) as failed:
        urllib.request.urlopen(url, context=ssl.create_default_context(), timeout=10)  # the system's CAs only
    assert isinstance(failed.value.reason, ssl.SSLCertVerificationError)
    line = env.wait_line(code="H26")
    assert line["cause"].startswith("TLS handshake failed: the client does not trust the certificate (")
    assert line["cause"].endswith("`dynosim certs` says how to trust it")
    assert line["protocol"] == "https" and line["method"] == "" and line["status"] == "" and line["dyno"] == ""


def test_a_client_trusting_another_dynosim_ca_is_told_which(env: TLSEnv, tmp_path: Path) -> None:
    other = LocalCA.load_or_create(tmp_path / "old-ca")  # same name as the module's CA, another key
    context = ssl.create_default_context(cafile=str(other.cert_path))
    with pytest.raises(ssl.SSLError), closing(env.https(context)) as conn:
        conn.request("GET", "/hello")
    cause = env.wait_line(code="H26")["cause"]
    assert cause.startswith("TLS handshake failed: the client could not verify the certificate (")
    assert "does it trust another dynosim CA?" in cause


def test_ipv6_loopback_is_covered(make_env, client_context) -> None:  # type: ignore[no-untyped-def]
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        env = make_env(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    conn = http.client.HTTPSConnection("::1", env.port, timeout=10, context=client_context)
    with closing(conn):
        conn.request("GET", "/hello")
        assert conn.getresponse().read() == b"hello"


def test_keep_alive_over_tls_reuses_the_connection(env: TLSEnv, dyno: DynoServer, client_context) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    with closing(env.https(client_context)) as conn:
        socks = set()
        for i in range(5):
            conn.request("GET", f"/hello?n={i}")
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read() == b"hello"
            socks.add(id(conn.sock))
        conn.request("POST", "/upload", body=b"x" * 3_000_000)  # larger than every buffer: flow control through TLS
        assert json.loads(conn.getresponse().read())["bytes"] == 3_000_000
        conn.request("GET", "/big?n=5000000")
        assert len(conn.getresponse().read()) == 5_000_000
        socks.add(id(conn.sock))
    assert len(socks) == 1
    env.wait_line(path="/big?n=5000000")
    assert [line["protocol"] for line in env.router_lines()] == ["https"] * 7


def test_a_client_slow_to_send_its_first_byte_is_served_either_way(env: TLSEnv, client_context) -> None:  # type: ignore[no-untyped-def]
    with socket.create_connection(("127.0.0.1", env.port), timeout=10) as raw:
        time.sleep(0.3)  # the router waits for the first byte to tell the protocol
        with client_context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert b"\r\n\r\nhello" in _read_all(tls)
    with socket.create_connection(("127.0.0.1", env.port), timeout=10) as raw:
        time.sleep(0.3)
        raw.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert b"\r\n\r\nhello" in _read_all(raw)
    env.wait_line(protocol="http")
    assert [line["protocol"] for line in env.router_lines()] == ["https", "http"]


def test_the_request_sent_with_the_last_handshake_message_is_not_lost(env: TLSEnv, client_context) -> None:  # type: ignore[no-untyped-def]
    # many clients write their request the moment the handshake is done; the router must not drop it
    for _ in range(20):
        with (
            socket.create_connection(("127.0.0.1", env.port), timeout=10) as raw,
            client_context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(
                b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert _read_all(tls).count(b"hello") == 2


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_below_1_2_is_refused(env: TLSEnv, client_context) -> None:  # type: ignore[no-untyped-def]
    client_context.maximum_version = ssl.TLSVersion.TLSv1_1
    client_context.minimum_version = ssl.TLSVersion.TLSv1
    client_context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionError)) as failed, closing(env.https(client_context)) as conn:
        conn.request("GET", "/hello")
    if getattr(failed.value, "reason", "") == "NO_PROTOCOLS_AVAILABLE":
        pytest.skip("this OpenSSL will not even offer TLS 1.1")
    line = env.wait_line(code="H26")
    assert (
        line["cause"]
        == "TLS handshake failed: unsupported protocol (the router speaks TLS 1.2 and 1.3, as Heroku's does)"
    )


def test_websocket_over_tls(make_env, client_context) -> None:  # type: ignore[no-untyped-def]
    from websockets.sync.client import connect
    from websockets.sync.server import serve

    def echo(ws) -> None:  # type: ignore[no-untyped-def]
        for message in ws:
            ws.send(f"echo {message}")

    with serve(echo, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        env = make_env(backend_port=server.socket.getsockname()[1], idle=5.0)
        with connect(f"wss://127.0.0.1:{env.port}/chat", ssl=client_context) as ws:
            ws.send("hi")
            assert ws.recv(timeout=5) == "echo hi"
            ws.send(b"\x00" * 200_000)
            assert len(ws.recv(timeout=5)) > 200_000
        line = env.wait_line(path="/chat")
        assert line["status"] == "101" and line["protocol"] == "https"
        server.shutdown()


# -- bad input: everyone else is served


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError, ssl.SSLError):
        pass
    return b"".join(chunks)


def _others_are_served(env: TLSEnv, client_context: ssl.SSLContext, seconds: float) -> list[float]:
    """Plain and TLS requests from 8 clients while a bad connection is open; how long each took."""
    took: list[float] = []
    errors: list[BaseException] = []
    deadline = time.monotonic() + seconds

    def client(tls: bool) -> None:
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                conn = env.https(client_context) if tls else env.connect()
                with closing(conn):
                    conn.request("GET", "/hello")
                    assert conn.getresponse().read() == b"hello"
            except BaseException as exc:
                errors.append(exc)
                return
            took.append(time.monotonic() - started)

    threads = [threading.Thread(target=client, args=(i % 2 == 0,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    return took


def test_a_stalled_handshake_is_cut_off_while_everyone_else_is_served(make_env, client_context) -> None:  # type: ignore[no-untyped-def]
    env = make_env(handshake=1.0, idle=0.5)  # a handshake keeps its own time, even past the idle window
    with socket.create_connection(("127.0.0.1", env.port), timeout=5) as stalled:
        stalled.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, then nothing
        started = time.monotonic()
        took = _others_are_served(env, client_context, 0.8)
        assert len(took) > 20 and max(took) < 0.5
        assert stalled.recv(100) == b""  # closed by the router
        assert 0.8 < time.monotonic() - started < 3
    line = env.wait_line(code="H26")
    assert line["cause"] == "TLS handshake failed: not finished within 1s"
    assert line["fwd"] == "127.0.0.1" and line["protocol"] == "https"
    assert sum(1 for line in env.router_lines() if line["code"]) == 1
    assert not env.router.connections and not env.router.handshakes


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x00\x05hello",  # a record that holds no ClientHello
        b"\x16" + b"\xff" * 64,  # a record header that makes no sense
        b"\x16\x03\x01\x00\x10GET / HTTP/1.1\r\n\r\n",
    ],
)
def test_a_garbage_handshake_is_closed_and_logged_while_others_are_served(
    env: TLSEnv, client_context, garbage: bytes
) -> None:  # type: ignore[no-untyped-def]
    with socket.create_connection(("127.0.0.1", env.port), timeout=5) as bad:
        bad.sendall(garbage)
        took = _others_are_served(env, client_context, 0.3)
        assert len(took) > 5
        bad.settimeout(3)
        assert _read_all(bad)[:1] in (b"", b"\x15")  # nothing, or a TLS alert: never an HTTP answer
    line = env.wait_line(code="H26")
    assert line["cause"].startswith("TLS handshake failed: ") and line["status"] == ""
    assert sum(1 for line in env.router_lines() if line["code"]) == 1


def test_a_client_that_hangs_up_mid_handshake_is_one_line(env: TLSEnv) -> None:
    with socket.create_connection(("127.0.0.1", env.port), timeout=5) as bad:
        bad.sendall(b"\x16\x03\x01\x02\x00\x01")
    line = env.wait_line(code="H26")
    assert line["cause"] == "TLS handshake failed: the client closed the connection"


def test_a_connection_that_never_sends_is_closed_quietly_when_idle(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env(idle=0.5)
    with socket.create_connection(("127.0.0.1", env.port), timeout=5) as silent:
        started = time.monotonic()
        assert silent.recv(1) == b""
        assert time.monotonic() - started < 3
    assert env.router_lines() == []
    assert not env.router.connections


def test_tls_to_a_router_without_https_is_a_bad_request(make_env, client_context) -> None:  # type: ignore[no-untyped-def]
    env = make_env(tls=False)  # the run's certificate authority could not be loaded
    with pytest.raises((ssl.SSLError, ConnectionError)), closing(env.https(client_context)) as conn:
        conn.request("GET", "/hello")
    assert env.wait_line(code="H26")["cause"] == "bad request line"
    assert env.request("GET", "/hello")[0] == 200


def test_stopping_with_handshakes_in_flight_logs_nothing(make_env) -> None:  # type: ignore[no-untyped-def]
    env = make_env()
    socks = [socket.create_connection(("127.0.0.1", env.port), timeout=5) for _ in range(3)]
    for sock in socks:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01")
    time.sleep(0.2)
    env.loop.run(env.router.stop())
    for sock in socks:
        assert _read_all(sock) == b""
        sock.close()
    assert env.router_lines() == [] and not env.router.connections and not env.router.handshakes


# -- the redirect loop


class RedirectHandler(http.server.BaseHTTPRequestHandler):
    """/loop redirects to itself over https whatever came in (an app that ignores X-Forwarded-Proto);
    /secure redirects plain HTTP to https as an app that trusts the header does; /login redirects to
    /welcome with the host and port as the forwarded headers give them (Werkzeug's ProxyFix with x_port);
    /away redirects to another site."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        secure = self.headers.get("X-Forwarded-Proto") == "https"
        if self.path == "/away":
            self.send_response(302)
            self.send_header("Location", "https://id.example.com/authorize")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/login":
            scheme, port = self.headers["X-Forwarded-Proto"], self.headers["X-Forwarded-Port"]
            host = self.headers["Host"].rsplit(":", 1)[0]
            default = {"http": "80", "https": "443"}[scheme] == port
            self.send_response(302)
            self.send_header("Location", f"{scheme}://{host}{'' if default else ':' + port}/welcome")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/loop" or (self.path == "/secure" and not secure):
            location = f"https://{self.headers['Host']}{self.path}"
            self.send_response(301)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")


@pytest.fixture(scope="module")
def redirecting() -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RedirectHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, str]:
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    return resp.status, resp.headers.get("Location", "")


def test_an_app_redirecting_https_to_itself_is_named_once(make_env, redirecting, client_context) -> None:  # type: ignore[no-untyped-def]
    env = make_env(backend_port=redirecting.server_address[1])
    port = env.port
    with closing(env.connect()) as plain:  # plain HTTP redirected to https: what every https app does
        for _ in range(5):
            assert _get(plain, "/loop") == (301, f"https://127.0.0.1:{port}/loop")
    with closing(env.https(client_context)) as tls:
        assert _get(tls, "/secure") == (200, "")  # an app that trusts the header: served
        for _ in range(2):
            assert _get(tls, "/loop") == (301, f"https://127.0.0.1:{port}/loop")
        env.wait_line(path="/loop", protocol="https")
        assert env.hints() == []  # two in a row: not yet a loop
        for _ in range(10):
            assert _get(tls, "/loop") == (301, f"https://127.0.0.1:{port}/loop")
    deadline = time.monotonic() + 5
    while not env.hints() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert env.hints() == [HINT.format(port=port)]  # once, however long it goes on
    hint_at = next(i for i, line in enumerate(env.lines) if line.source == "dynosim")
    assert sum(1 for line in env.lines[:hint_at] if 'path="/loop"' in line.text and "protocol=https" in line.text) >= 3


def test_urllib_following_the_loop_gives_up_and_the_loop_is_named(make_env, redirecting, client_context) -> None:  # type: ignore[no-untyped-def]
    env = make_env(backend_port=redirecting.server_address[1])
    with pytest.raises(urllib.error.HTTPError) as failed:
        urllib.request.urlopen(f"https://127.0.0.1:{env.port}/loop", context=client_context, timeout=10)
    assert "infinite loop" in str(failed.value)
    deadline = time.monotonic() + 5
    while not env.hints() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(env.hints()) == 1 and "does not trust X-Forwarded-Proto" in env.hints()[0]


def test_redirects_to_other_paths_are_no_loop(make_env, client_context) -> None:  # type: ignore[no-untyped-def]
    env = make_env()  # the stand-in dyno: /hello answers, every other path is 404
    with closing(env.https(client_context)) as tls:
        for _ in range(6):
            assert _get(tls, "/nope")[0] == 404
    time.sleep(0.1)
    assert env.hints() == []


def test_a_redirect_built_from_herokus_forwarded_port_is_pointed_out_once(
    make_env, redirecting, client_context
) -> None:  # type: ignore[no-untyped-def]
    env = make_env(backend_port=redirecting.server_address[1])
    with closing(env.https(client_context)) as tls:
        assert _get(tls, "/away") == (302, "https://id.example.com/authorize")  # another host: nothing to say
        assert _get(tls, "/login") == (302, "https://127.0.0.1/welcome")  # what Heroku's 443 makes it build
        assert _get(tls, "/login") == (302, "https://127.0.0.1/welcome")
    with closing(env.connect()) as plain:
        assert _get(plain, "/login") == (302, "http://127.0.0.1/welcome")
        assert _get(plain, "/loop")[0] == 301  # a redirect with the port in it: nothing to say
    deadline = time.monotonic() + 5
    while not env.hints() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert env.hints() == [
        f"the app redirected GET https://127.0.0.1:{env.port}/login to https://127.0.0.1/welcome: port 443, where "
        "this run does not listen (on Heroku, right). If the app builds URLs from X-Forwarded-Port (Werkzeug "
        "ProxyFix x_port, Django USE_X_FORWARDED_PORT), which dynosim sends as Heroku's router does (80, 443), "
        f"run with --forwarded-port public to send it this run's port ({env.port})"
    ]
    hint_at = next(i for i, line in enumerate(env.lines) if line.source == "dynosim")
    assert 'path="/login"' in env.lines[hint_at - 1].text  # just after its router line

    public = make_env(backend_port=redirecting.server_address[1], forwarded_port="public")
    with closing(public.https(client_context)) as tls:
        assert _get(tls, "/login") == (302, f"https://127.0.0.1:{public.port}/welcome")  # lands on the router
    time.sleep(0.1)
    assert public.hints() == []
