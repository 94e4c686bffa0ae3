"""Start-up: from launching `dynosim run` to the first HTTP 200 of the sample app, warm slug cache.

Baseline, side by side in the same run: `honcho start` on the same app folder with the same
virtualenv (the one dynosim built) first on PATH, so both run the same gunicorn and Flask.
The app is issue 2's sample app (fixtures/sample as of that issue: Flask on gunicorn, no add-on,
kept here so that the fixture growing add-ons does not change this figure) with a web-only
Procfile (honcho would stop everything when a `release` process exits). Runs alternate (dynosim, honcho,
dynosim…), the port is polled every 5 ms, each run is stopped with SIGINT and waited for.
Goal (issue 21): dynosim's median within 1.15x of honcho's (issue 2's was 1.5x).
"""

from __future__ import annotations

import argparse
import http.client
import time

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    command_name,
    dyno_env_for_honcho,
    dynosim_argv,
    dynosim_env,
    find_venv,
    free_port,
    honcho_argv,
    launch,
    make_app,
    median,
    spread,
    stop,
)

GOAL = 1.15
POLL = 0.005
APP = {
    "Procfile": "web: gunicorn app:app\n",
    "requirements.txt": "flask>=3.0\ngunicorn>=22.0\n",
    ".python-version": "3.11\n",
    "app.py": """\
import os

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index() -> str:
    return f"<!doctype html><title>dynosim sample</title><h1>Hello from {os.environ.get('DYNO', '?')}</h1>"
""",
}


def first_200(port: int, proc, limit: float = 120) -> float:
    """Poll until GET / answers 200; returns perf_counter() at that moment."""
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/")
            if conn.getresponse().status == 200:
                return time.perf_counter()
        except OSError:
            pass
        finally:
            conn.close()
        if proc.poll() is not None:
            raise RuntimeError(f"{command_name(proc.args)} exited with {proc.returncode} before answering")
        time.sleep(POLL)
    raise RuntimeError(f"no HTTP 200 on port {port} within {limit} s")


def timed_start(argv_for, env, cwd) -> float:
    port = free_port()
    start = time.perf_counter()
    proc = launch(argv_for(port), env, cwd)
    try:
        return first_200(port, proc) - start
    finally:
        stop(proc)


def measure(runs: int) -> dict[str, object]:
    app = make_app("startup-app", APP)
    env = dynosim_env()
    # warm-up, untimed: builds the slug and its venv, and tells us which venv the dyno uses
    port = free_port()
    proc = launch(dynosim_argv("--port", str(port)), env, app)
    try:
        first_200(port, proc, limit=600)
        venv = find_venv(proc)
    finally:
        stop(proc)
    honcho_env = dyno_env_for_honcho(venv)
    dynosim_cmd = lambda port: dynosim_argv("--port", str(port))  # noqa: E731
    honcho_cmd = lambda port: honcho_argv("--port", str(port))  # noqa: E731
    timed_start(honcho_cmd, honcho_env, app)  # honcho's warm-up: page cache, .pyc files
    times: dict[str, list[float]] = {"dynosim": [], "honcho": []}
    for _ in range(runs):
        times["dynosim"].append(timed_start(dynosim_cmd, env, app))
        times["honcho"].append(timed_start(honcho_cmd, honcho_env, app))
    d, h = median(times["dynosim"]), median(times["honcho"])
    return {
        "name": "start-up to first HTTP 200",
        "dynosim": f"{d * 1000:.0f} ms (range {spread([t * 1000 for t in times['dynosim']])})",
        "baseline": f"honcho {h * 1000:.0f} ms (range {spread([t * 1000 for t in times['honcho']])})",
        "ratio": d / h,
        "goal": f"≤ {GOAL}x",
        "met": d / h <= GOAL,
        "raw": times,
        "venv": str(venv),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=9, help="timed runs of each (default 9)")
    result = measure(parser.parse_args().runs)
    print(f"venv: {result['venv']}")
    for who in ("dynosim", "honcho"):
        print(f"{who:8} " + " ".join(f"{t * 1000:.0f}" for t in result["raw"][who]) + " ms")
    print(f"dynosim {result['dynosim']}; {result['baseline']}")
    print(
        f"ratio dynosim/honcho: {result['ratio']:.2f}x (goal {result['goal']}): {'met' if result['met'] else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
