"""Control socket and idle CPU: `dynosim ps` round trips to a running supervisor, and what the
supervisor costs while nothing happens.

1. Round trip: `dynosim.control.request(state_dir, "ps")` (connect to `.dynosim/control.sock`, one
   JSON line each way, close), N times against a `dynosim run --formation worker=10`. Baseline,
   side by side: the same client function against a bare echo server on a Unix socket in a
   thread of this process (accept, read one JSON line, answer `{"ok": true, "result": <it>}`,
   close), i.e. the floor for connect + one JSON line each way. Alternated in batches of 20;
   medians in µs.
2. Idle CPU: the same run (10 sleeping dynos: fixtures/dynolab's worker.py, memory sampling on at
   its default 20 s interval), user+system CPU time of the supervisor process only (psutil
   cpu_times, not its dynos or helpers) over 30 s with no client, as a share of one core.
   Baseline, side by side: `honcho start -c worker=10`'s main process over the same 30 s.
Goal (issue 6): dynosim's idle CPU under 1% of a core.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    WORK_DIR,
    dynosim_argv,
    dynosim_env,
    honcho_argv,
    honcho_env,
    launch,
    make_app,
    median,
    spread,
    stop,
)
from bench.memory import workers_running
from dynosim import control

REPO = Path(__file__).resolve().parents[1]
DYNOS = 10
GOAL_PERCENT = 1.0
BATCH = 20
WORKER = (REPO / "fixtures" / "dynolab" / "worker.py").read_text()


def echo_server(folder: Path) -> threading.Event:
    """A bare connect-and-echo on `folder`/control.sock, in a daemon thread; set the event to stop."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(folder / control.SOCKET_NAME))
    sock.listen(64)
    sock.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            with conn, conn.makefile("rwb") as stream:
                line = stream.readline()
                stream.write(json.dumps({"ok": True, "result": json.loads(line)}).encode() + b"\n")
                stream.flush()
        sock.close()

    threading.Thread(target=serve, daemon=True).start()
    return done


def round_trips(state_dir: Path, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        control.request(state_dir, "ps")
        times.append(time.perf_counter() - start)
    return times


def wait_workers(proc, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while workers_running(proc) < DYNOS:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args[0]}: {DYNOS} workers did not start")
        time.sleep(0.05)


def idle_cpu(proc, seconds: float) -> float:
    """The process's own CPU time over `seconds` of wall time, in % of one core."""
    before, start = proc.cpu_times(), time.monotonic()
    time.sleep(seconds)
    after, wall = proc.cpu_times(), time.monotonic() - start
    return 100 * ((after.user - before.user) + (after.system - before.system)) / wall


def measure(count: int, seconds: float) -> dict[str, object]:
    app = make_app("control-app", {"Procfile": "worker: python worker.py\n", "worker.py": WORKER})
    state_dir = app / ".dynosim"
    echo_dir = Path(tempfile.mkdtemp(prefix="echo-", dir=WORK_DIR))
    stop_echo = echo_server(echo_dir)
    rtt: dict[str, list[float]] = {"dynosim": [], "echo": []}
    proc = launch(dynosim_argv("--formation", f"worker={DYNOS}"), dynosim_env(), app)
    try:
        wait_workers(proc)
        time.sleep(3)  # settle: start-up log lines written, first state changes done
        dynos = len(control.request(state_dir, "ps"))
        cpu = idle_cpu(proc, seconds)  # nobody talks to it meanwhile
        threads = proc.num_threads()
        round_trips(state_dir, BATCH)  # warm-up, untimed
        round_trips(echo_dir, BATCH)
        for _ in range(max(1, count // BATCH)):
            rtt["dynosim"] += round_trips(state_dir, BATCH)
            rtt["echo"] += round_trips(echo_dir, BATCH)
    finally:
        stop(proc)
        stop_echo.set()
    honcho = launch(honcho_argv("--no-colour", "-c", f"worker={DYNOS}"), honcho_env(), app)
    try:
        wait_workers(honcho)
        time.sleep(3)
        honcho_cpu = idle_cpu(honcho, seconds)
    finally:
        stop(honcho)
    d_us, e_us = median(rtt["dynosim"]) * 1e6, median(rtt["echo"]) * 1e6
    return {
        "name": f"idle CPU, {DYNOS} dynos ({seconds:.0f} s)",
        "dynosim": f"{cpu:.2f}% of a core; ps round trip {d_us:.0f} µs",
        "baseline": f"honcho {honcho_cpu:.2f}%; echo round trip {e_us:.0f} µs",
        "ratio": d_us / e_us,  # the round trip's; the CPU goal is absolute
        "goal": f"CPU < {GOAL_PERCENT}% of a core",
        "met": cpu < GOAL_PERCENT,
        "cpu": cpu,
        "honcho_cpu": honcho_cpu,
        "threads": threads,
        "dynos_in_ps": dynos,
        "raw": rtt,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--count", type=int, default=200, help="round trips of each (default 200)")
    parser.add_argument("--seconds", type=float, default=30.0, help="idle CPU window (default 30)")
    args = parser.parse_args()
    r = measure(args.count, args.seconds)
    us = {who: [t * 1e6 for t in times] for who, times in r["raw"].items()}  # type: ignore[union-attr]
    print(
        f"`ps` round trip ({len(us['dynosim'])} each, {r['dynos_in_ps']} dynos listed): "
        f"dynosim {median(us['dynosim']):.0f} µs (range {spread(us['dynosim'])}); "
        f"bare echo {median(us['echo']):.0f} µs (range {spread(us['echo'])}); ratio {r['ratio']:.1f}x"
    )
    print(
        f"idle CPU over {args.seconds:.0f} s, {DYNOS} sleeping dynos, memory sampling on: supervisor "
        f"{r['cpu']:.2f}% of a core ({r['threads']} threads); honcho's main process {r['honcho_cpu']:.2f}%"
    )
    print(f"goal CPU < {GOAL_PERCENT}% of a core: {'met' if r['met'] else 'NOT met'}")
    return 0 if r["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
