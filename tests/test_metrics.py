"""`dynosim metrics`: a real run's 1-second metrics, read from its router and dyno lines and its dynos'
memory, as `--json`, `--csv` and the table; and the ring buffer's parsing of lines, without a run."""

from __future__ import annotations

import csv
import io
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import CACHE_DIR, FIXTURES, make_app, run_dynosim

from dynosim.logs import LogLine
from dynosim.metrics import Metrics

UP = r"heroku\[web\.1\]: State changed from starting to up"
SERVER = """
import os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/crash":
            os._exit(1)
        status = int(self.path.strip("/") or 200)
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""


def get(port: int, path: str) -> int:
    """The status, once the body is read: a client that closes before the body arrives is, rightly, an H27."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        error.read()
        return error.code
    except (urllib.error.URLError, ConnectionError):  # /crash: the dyno died mid-request
        return 0


def metrics_json(app: Path, *args: str) -> dict:
    result = run_dynosim(app, "metrics", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_runs_requests_memory_and_crash_are_in_its_metrics(tmp_path, dynosim):
    app = make_app(tmp_path, procfile="web: python status.py\n", status__py=SERVER)
    run = dynosim(app, "--crash-backoff-scale", "0.01")
    run.wait_for(UP)
    sent = {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0}
    for path in ["/200"] * 6 + ["/404"] * 3 + ["/500"] * 2 + ["/302"]:
        status = get(run.port, path)
        sent[f"{status // 100}xx"] += 1
    assert sent == {"2xx": 6, "3xx": 1, "4xx": 3, "5xx": 2}
    time.sleep(2.5)  # the seconds close, and memory is sampled
    series = metrics_json(app)
    points = series["points"]
    counted = {c: sum(p["requests"][c] for p in points) for c in sent}
    assert counted == sent
    times = [p["response_ms"] for p in points if p["response_ms"]]
    assert times and all(t["p50"] <= t["p95"] <= t["p99"] for t in times)
    memory = [p["memory"]["web.1"] for p in points if "web.1" in p["memory"]]
    assert memory and all(m["rss_mb"] > 0 and m["quota_mb"] == 512 for m in memory)
    assert series["ring_seconds"] >= 3600

    get(run.port, "/crash")
    run.wait_for(r"heroku\[web\.1\]: State changed from up to crashed", after_last=True)
    run.wait_for(UP, after_last=True)
    assert run_dynosim(app, "restart", "web.1").returncode == 0
    run.wait_for(r"heroku\[web\.1\]: Restarting", after_last=True)
    time.sleep(2.5)
    kinds = {(e["dyno"], e["kind"]) for p in metrics_json(app, "--window", "5m")["points"] for e in p["events"]}
    assert {("web.1", "crash"), ("web.1", "restart")} <= kinds
    assert any(dyno == "router" and kind.startswith("H1") for dyno, kind in kinds), kinds  # /crash's H13/H18

    table = run_dynosim(app, "metrics")
    assert table.returncode == 0, table.stderr
    assert "web.1" in table.stdout and "512 MB" in table.stdout
    router = table.stdout.split("=== Router")[1].splitlines()
    assert router[1].split()[:6] == ["Requests", "2xx", "3xx", "4xx", "5xx", "p50"]
    assert router[3].split()[:5] == ["13", "6", "1", "3", "3"]  # /crash: the router's own 503
    assert "crash" in table.stdout.split("=== Events")[1]

    rows = list(csv.DictReader(io.StringIO(run_dynosim(app, "metrics", "--csv", "--window", "5m").stdout)))
    assert sum(int(row["requests_4xx"]) for row in rows) == 3
    assert any(row["web.1_rss_mb"] for row in rows)
    assert run.stop() == 0


def test_no_run_is_one_line_and_exit_2(tmp_path):
    app = make_app(tmp_path)
    result = run_dynosim(app, "metrics", "--json")
    assert result.returncode == 2
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_window_names_the_flag(tmp_path):
    result = run_dynosim(make_app(tmp_path), "metrics", "--window", "soon")
    assert result.returncode != 0 and "--window" in result.stderr and "Traceback" not in result.stderr


def test_router_lines_h_codes_and_late_lines_go_to_their_seconds():
    metrics = Metrics(list)
    t = 1_800_000_000.2

    def router(when: float, status: int, service: str, code: str = "") -> LogLine:
        head = f'at=error code={code} desc="x"' if code else "at=info"
        return LogLine(
            when,
            "heroku",
            "router",
            f'{head} method=GET path="/" host=h request_id=r fwd="f" '
            f"dyno=web.1 connect=0ms service={service} status={status} bytes=2 protocol=http",
        )

    metrics([router(t, 200, "10ms"), router(t, 200, "30ms"), router(t, 404, "20ms"), router(t + 1, 503, "", "H12")])
    metrics([LogLine(t + 1, "heroku", "web.1", "Error R14 (Memory quota exceeded)")])
    metrics([LogLine(t + 1, "heroku", "web.2", "Cycling"), LogLine(t + 1, "dynosim", "faults", "f1: dyno-crash on")])
    metrics([LogLine(t + 1, "app", "web.1", "Error R14 (Memory quota exceeded)")])  # the app's own words: no event
    metrics(
        [
            LogLine(t + 1, "app", "api", f"{text} by user u@example.com")
            for text in ("Set A config vars", "Rollback to v2")
        ]
    )
    metrics.close(int(t) + 1)
    metrics([router(t, 500, "5ms")])  # late for a closed second: counted in the next
    metrics.close(int(t) + 2)
    first, second = metrics.points
    assert first.requests == (2, 0, 1, 0) and first.response_ms == (20.0, 30.0, 30.0)
    assert second.requests == (0, 0, 0, 2) and [e.kind for e in second.events] == [
        "H12",
        "R14",
        "cycle",
        "fault",
        "config",
        "rollback",
    ]


def test_a_run_with_no_metrics_says_so(tmp_path, dynosim):
    app = make_app(tmp_path)
    run = dynosim(app, "--no-metrics")
    run.wait_for(UP)
    result = run_dynosim(app, "metrics")
    assert result.returncode == 1 and "--no-metrics" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert run.stop() == 0


def test_app_metrics_has_the_runs_deploy_release_and_requests(dynosim_app):
    app = dynosim_app(FIXTURES / "dynolab", formation="web=1,worker=0", cache_dir=CACHE_DIR)
    started = time.time()
    for _ in range(3):
        assert app.get("/").status == 200
    time.sleep(2.5)
    points = app.metrics()["points"]
    assert sum(p["requests"]["2xx"] for p in points) == 3
    kinds = {e["kind"] for p in points for e in p["events"]}
    assert {"deploy", "release"} <= kinds, kinds
    assert app.metrics(since=time.time() + 60)["points"] == []
    assert all(p["time"] >= int(started) for p in app.metrics(since=started)["points"])
