"""The router's fault kinds against a real run, over real HTTP: router-latency (connect= shows it),
router-error (Heroku's page and at=error line, the status and H-code asked for), router-timeout (H12
after the router's 30 s), router-reset (ECONNRESET, H24), several on at once, --for, --probability
with --seed repeating its pattern, and bad input refused in one line with nothing changed."""

from __future__ import annotations

import http.client
import json
import random
import re
import socket
import time
from pathlib import Path

import pytest
from conftest import make_app, one_line_error, run_dynosim

from dynosim.faults.client import AppFaults

WEB = "web: python server.py\n"


def get(port: int, path: str) -> tuple[int, str, float]:
    """One GET on a new connection: status, body, seconds taken."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.monotonic()
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode(), time.monotonic() - started
    finally:
        conn.close()


def router_line(run, path: str) -> str:  # type: ignore[no-untyped-def]
    return run.wait_for(rf'heroku\[router\]: .*path="{re.escape(path)}" .*').group(0)


def test_router_faults_in_a_running_app(tmp_path: Path, dynosim) -> None:
    app = make_app(tmp_path, procfile=WEB)
    run = dynosim(app)
    run.wait_for(r"heroku\[web\.1\]: State changed from starting to up", timeout=120)
    faults = AppFaults(app)
    assert get(run.port, "/warm")[0] == 200

    # router-timeout first: its request is held for the router's 30 s while the rest is tested; it is
    # in the router's socket before faults:remove is asked, so the router has started it by then
    timeout = faults.router_timeout()
    held = socket.create_connection(("127.0.0.1", run.port), timeout=45)
    held.sendall(b"GET /held HTTP/1.1\r\nHost: localhost\r\n\r\n")
    sent = time.monotonic()
    timeout.remove()
    run.wait_for(r"dynosim\[faults\]: f1 router-timeout ended \(removed")

    # router-latency: added before the dyno, shown in connect=; gone with the first request after remove
    with faults.router_latency(0.3):
        status, _, took = get(run.port, "/slow")
        assert status == 200 and took >= 0.3
    slow = router_line(run, "/slow")
    assert int(re.search(r"connect=(\d+)ms", slow).group(1)) >= 300, slow  # type: ignore[union-attr]
    # the router's own connect= figure, not a wall clock, which a loaded CI machine stretches
    assert get(run.port, "/fast")[0] == 200
    assert " connect=0ms " in router_line(run, "/fast")
    run.wait_for(r"dynosim\[faults\]: f2 router-latency \+300ms started \(seed \d+\)")
    run.wait_for(r"dynosim\[faults\]: f2 router-latency \+300ms ended \(removed")

    # router-error, by default: 503, Heroku's Application Error page, H13 logged, the dyno never asked
    with faults.router_error():
        status, body, _ = get(run.port, "/e1")
    assert status == 503 and "<title>Application Error</title>" in body
    assert re.search(
        r'heroku\[router\]: at=error code=H13 desc="Connection closed without response" method=GET path="/e1" '
        r".* dyno= connect= service= status=503 bytes= protocol=http$",
        router_line(run, "/e1"),
    )
    # with a status and a code; a status without a code gets one that fits it
    with faults.router_error(status=500, code="H10"):
        status, body, _ = get(run.port, "/e2")
    assert status == 500 and "H10 (App crashed)" in body
    assert 'at=error code=H10 desc="App crashed" method=GET path="/e2"' in router_line(run, "/e2")
    assert "status=500 " in router_line(run, "/e2")
    with faults.router_error(status=400):
        assert get(run.port, "/e3")[0] == 400
    assert "at=error code=H26 " in router_line(run, "/e3")

    # router-reset: the client's connection reset, logged as H24 with no status
    with faults.router_reset():
        with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
            get(run.port, "/r1")
    assert re.search(
        r'at=error code=H24 desc="Forced close" method=GET path="/r1" .* dyno= connect= service= status= bytes= ',
        router_line(run, "/r1"),
    )
    run.wait_for(r"dynosim\[faults\]: f\d+: the router resets the connections it picks \(logged as H24\)")

    # several at once: latency, then the error
    with faults.router_latency(0.2), faults.router_error(status=502):
        status, _, took = get(run.port, "/both")
    assert status == 502 and took >= 0.2

    # --for ends it by itself
    faults.router_error(seconds=1)
    assert get(run.port, "/during")[0] == 503
    run.wait_for(r"dynosim\[faults\]: f\d+ router-error for 1s ended \(over, after 1\.\ds\)", timeout=5)
    assert get(run.port, "/after")[0] == 200

    # the same seed and the same requests fail the same requests
    patterns = []
    for _ in range(2):
        with faults.router_error(probability=0.5, seed=42):
            patterns.append([get(run.port, f"/p{i}")[0] for i in range(16)])
    assert patterns[0] == patterns[1] and set(patterns[0]) == {200, 503}, patterns
    rng = random.Random(42)  # one draw of the fault's seeded rng per request
    assert patterns[0] == [503 if rng.random() < 0.5 else 200 for _ in range(16)]

    # bad input: one line each, nothing switched on (counted once every fault above has said it ended:
    # the last one's line can reach the pipe after its `with` returns)
    deadline = time.monotonic() + 10
    while True:
        lines = [line for line in run.drain() if "dynosim[faults]" in line]
        if sum(" started" in line for line in lines) == sum(" ended" in line for line in lines):
            break
        assert time.monotonic() < deadline, lines[-4:]
        time.sleep(0.05)
    before = len(lines)
    one_line_error(run_dynosim(app, "faults:add", "router-error", "--status", "200"), "--status 200", "400..599")
    one_line_error(run_dynosim(app, "faults:add", "router-error", "--code", "H99"), "--code H99", "H13")
    one_line_error(run_dynosim(app, "faults:add", "router-latency"), "needs --latency")
    one_line_error(run_dynosim(app, "faults:add", "router-timeout", "--target", "web"), "takes no --target")
    one_line_error(run_dynosim(app, "faults:add", "router-reset", "--latency", "1s"), "takes no --latency")
    assert json.loads(run_dynosim(app, "faults", "--json").stdout) == []
    assert len([line for line in run.drain() if "dynosim[faults]" in line]) == before

    # the held request: H12 after the router's 30 s, as from a dyno that never answered
    response = http.client.HTTPResponse(held)
    response.begin()
    took = time.monotonic() - sent
    assert response.status == 503 and took >= 29.5
    assert "<title>Application Error</title>" in response.read().decode()
    held.close()
    assert re.search(
        r'at=error code=H12 desc="Request timeout" method=GET path="/held" .* dyno=web\.1 connect=0ms '
        r"service=(29[5-9]\d\d|3\d\d\d\d)ms status=503 bytes=0 ",
        router_line(run, "/held"),
    )
    output = run.output()
    for path in ("/held", "/e1", "/e2", "/r1", "/during"):
        assert not re.search(rf"app\[web\.1\]: GET {path}$", output, re.M), path  # the dyno never saw them
    assert re.search(r"app\[web\.1\]: GET /slow$", output, re.M)
    assert run.stop() == 0
