"""The router in front of real dynos: requests spread, Heroku's errors when dynos are missing, crashed
or in maintenance, and preboot keeping every request served through restarts."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

from conftest import make_app, run_dynosim


def fetch(port: int, path: str = "/") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_no_web_process_is_h14(tmp_path, dynosim):
    run = dynosim(make_app(tmp_path, procfile="worker: python worker.py\n"))
    run.wait_for(r"heroku\[worker\.1\]: State changed from starting to up")
    status, page = fetch(run.port)
    assert status == 503 and "Application Error" in page
    run.wait_for(r'heroku\[router\]: at=error code=H14 desc="No web processes running" method=GET path="/"')
    assert run.stop() == 0


def test_crashed_web_dynos_are_h10(tmp_path, dynosim):
    run = dynosim(make_app(tmp_path, procfile="web: python crash.py\n"), "--crash-backoff-scale", "1")
    run.wait_for(r"restarts it in 10m")  # crashed twice: now cooling off
    status, _ = fetch(run.port)
    assert status == 503
    run.wait_for(r'heroku\[router\]: at=error code=H10 desc="App crashed"')
    assert run.stop() == 0


def test_requests_wait_for_a_booting_dyno(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="web: sleep 2 && python server.py\n")
    run = dynosim(app)
    run.wait_for(r"heroku\[web\.1\]: Starting process")
    started = time.monotonic()
    status, _ = fetch(run.port)  # queued by the router until web.1 is up, as Heroku's router does
    assert status == 200 and time.monotonic() - started >= 1.0
    assert run.stop() == 0


def test_maintenance_mode_is_h80(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="web: python server.py\n")
    run = dynosim(app)
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    assert run_dynosim(app, "maintenance:on").returncode == 0
    status, page = fetch(run.port)
    assert status == 503 and "maintenance" in page.lower()
    run.wait_for(r'heroku\[router\]: at=info code=H80 desc="Maintenance mode"')
    assert run_dynosim(app, "maintenance").stdout.strip() == "on"
    assert run_dynosim(app, "maintenance:off").returncode == 0
    assert fetch(run.port)[0] == 200
    assert run.stop() == 0


def test_preboot_serves_every_request_through_cycles(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="web: python server.py\n")
    run = dynosim(app, "--formation", "web=2", "--preboot", "--cycle-every", "2s")
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    run.wait_for(r"heroku\[web\.2\]: State changed from starting to up")
    failures: list[object] = []
    served = 0
    deadline = time.monotonic() + 7  # at least three cycles of each dyno

    def client() -> None:
        nonlocal served
        while time.monotonic() < deadline:
            status, _ = fetch(run.port, "/")
            if status != 200:
                failures.append(status)
            served += 1

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert run.stop() == 0
    assert run.output().count("heroku[web.1]: Cycling") >= 2
    errors = [line for line in run.lines if "at=error" in line]
    assert served > 200 and failures == [], errors[:5]


KEEPALIVE_SERVER = """
import os, signal, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keeps connections open, and never closes an idle one itself

    def do_GET(self):
        body = os.environ["DYNO"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

class Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

server = Server(("0.0.0.0", int(os.environ["PORT"])), Handler)
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
server.serve_forever()
server.server_close()
"""


def test_the_router_lets_go_of_a_stopping_dyno(tmp_path, dynosim):
    """Idle keep-alive connections the router holds must not keep a stopping dyno alive (R12)."""
    app = make_app(tmp_path, procfile="web: python keepalive.py\n", keepalive__py=KEEPALIVE_SERVER)
    run = dynosim(app, "--preboot", "--stop-timeout", "8")
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
    for _ in range(5):
        assert fetch(run.port)[0] == 200  # leaves a pooled connection to web.1
    started = time.monotonic()
    assert run_dynosim(app, "restart").returncode == 0
    run.wait_for(r"heroku\[web\.1\]: Process exited with status", after_last=True)
    assert time.monotonic() - started < 6
    assert run.stop() == 0
    assert "R12" not in run.output()
