"""Metrics, what they cost: requests/s through dynosim's router with 1-second metrics on, against the
same router with `--no-metrics`, side by side in one run; what a router line costs the metrics; and
the supervisor memory an hour of 1-second metrics of 10 dynos holds.

Throughput: two runs of bench/router.py's stdlib server (keep-alive, TCP_NODELAY), 10 web dynos each
(so the metrics sample 10 dynos' memory every second), one with metrics and one with --no-metrics;
short wrk rounds alternate between them, and the ratio is the median of each round's pair, so a
machine busy with other work slows both sides of a pair alike; the router process's CPU per request
is given beside it. Goal (issue 20): ≥ 0.97x.

Per line: the metrics' subscriber fed a batch of real `heroku[router]` lines, in µs per line (the
router publishes one per request).

Memory: the ring buffer filled in this process, synthetically, as a busy hour would fill it: 3600
seconds × 10 dynos' memory, 200 router lines a second (response times and status classes) and an
event every 10 seconds; then 3600 more seconds, to show it stays bounded. tracemalloc counts the
Python objects the buffer holds (what the supervisor would hold), and the process's RSS growth over
an hour's fill, in a fresh interpreter without tracemalloc, beside it. Goal: < 20 MB, on both.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import make_app, median, spread
from bench.router import APP, LISTENING, Run, alternate, cpu_seconds, summary

REPO = Path(__file__).resolve().parents[1]
GOAL = 0.97
MEMORY_GOAL_MB = 20.0
DYNOS = 10
WRK_ARGS = ("-t1", "-c20", "-d3s")
LINES_PER_SECOND = 200


def router_line(when: float, i: int) -> object:
    from dynosim.logs import LogLine

    status = (200, 200, 200, 302, 404, 500)[i % 6]
    return LogLine(
        when,
        "heroku",
        "router",
        f'at=info method=GET path="/items/{i}" host=localhost:5000 request_id=0f8e3c1a-{i:08d} '
        f'fwd="127.0.0.1" dyno=web.{i % DYNOS + 1} connect=0ms service={i % 97}ms status={status} bytes=1234 '
        "protocol=http",
    )


def start(app: Path, *args: str) -> Run:
    run = Run(app, "--formation", f"web={DYNOS}", *args)
    try:
        run.wait_for(LISTENING, DYNOS)
        run.wait_http(run.port)
    except BaseException:
        run.__exit__()
        raise
    return run


def throughput(rounds: int) -> dict[str, object]:
    on_app = make_app("metrics-on", APP)
    off_app = make_app("metrics-off", APP)
    on = start(on_app)
    try:
        off = start(off_app, "--no-metrics")
    except BaseException:
        on.__exit__()
        raise
    with on, off:
        results = alternate(
            {"metrics on": f"http://127.0.0.1:{on.port}/", "metrics off": f"http://127.0.0.1:{off.port}/"},
            rounds,
            WRK_ARGS,
            cpu={"metrics on": cpu_seconds(on.proc.pid, False), "metrics off": cpu_seconds(off.proc.pid, False)},
        )
    pairs = list(zip(results["metrics on"], results["metrics off"], strict=True))
    return {
        "raw": results,
        "summary": summary(results),
        "ratio": median([a["rps"] / b["rps"] for a, b in pairs]),
        "cpu_ratio": median([a["cpu_us"] / b["cpu_us"] for a, b in pairs]),
        "cpu": {name: median([r["cpu_us"] for r in runs]) for name, runs in results.items()},
    }


def per_line_us(lines: int = 200_000) -> float:
    from dynosim.metrics import Metrics

    metrics = Metrics(list)
    now = time.time()
    batch = [router_line(now, i) for i in range(lines)]
    started = time.perf_counter()
    for i in range(0, lines, 100):  # the router publishes in batches
        metrics(batch[i : i + 100])  # type: ignore[arg-type]
    return (time.perf_counter() - started) / lines * 1e6


def fill(metrics: object, start: int, seconds: int) -> None:
    from dynosim.logs import LogLine
    from dynosim.metrics import Memory

    for second in range(start, start + seconds):
        lines = [router_line(second + 0.5, i) for i in range(LINES_PER_SECOND)]
        if second % 10 == 0:
            lines.append(LogLine(second + 0.5, "heroku", "web.1", "Error R14 (Memory quota exceeded)"))
        metrics(lines)  # type: ignore[operator]
        for d in range(DYNOS):
            metrics.memory(second + 0.5, f"web.{d + 1}", Memory(100.0 + d + second % 7, 0.0, 512.0))  # type: ignore[attr-defined]
        metrics.close(second + 1)  # type: ignore[attr-defined]


def rss_growth_mb() -> float:
    """The RSS a process grows by over an hour's fill, in a fresh interpreter without tracemalloc
    (whose own bookkeeping of every allocation would be counted too)."""
    code = (
        "import gc, psutil; from bench.metrics import fill; from dynosim.metrics import Metrics, RING_SECONDS; "
        "p = psutil.Process(); m = Metrics(list); fill(m, 1_800_000_000, 10); gc.collect(); "
        "before = p.memory_info().rss; fill(m, 1_800_000_010, RING_SECONDS); gc.collect(); "
        "print((p.memory_info().rss - before) / 2**20)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return float(out)


def ring_memory() -> dict[str, float]:
    from dynosim.metrics import RING_SECONDS, Metrics

    tracemalloc.start()
    metrics = Metrics(list)
    base = 1_800_000_000
    fill(metrics, base, RING_SECONDS)
    gc.collect()
    hour, _ = tracemalloc.get_traced_memory()
    fill(metrics, base + RING_SECONDS, RING_SECONDS)  # a second hour: the ring drops the first
    gc.collect()
    two_hours, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(metrics.points) == RING_SECONDS
    return {
        "hour_mb": hour / 2**20,
        "two_hours_mb": two_hours / 2**20,
        "rss_growth_mb": rss_growth_mb(),
        "points": float(len(metrics.points)),
    }


def measure(rounds: int) -> dict[str, object]:
    held = ring_memory()
    line_us = per_line_us()
    run = throughput(rounds)
    s: dict[str, dict[str, float]] = run["summary"]  # type: ignore[assignment]
    cpu: dict[str, float] = run["cpu"]  # type: ignore[assignment]
    ratio: float = run["ratio"]  # type: ignore[assignment]
    return {
        "name": f"router with 1-second metrics on vs --no-metrics ({DYNOS} web dynos, stdlib server, wrk keep-alive)",
        "dynosim": f"{s['metrics on']['rps']:.0f} req/s, router {cpu['metrics on']:.1f} µs CPU/req; "
        f"{line_us:.2f} µs per router line; an hour of {DYNOS} dynos holds {held['hour_mb']:.1f} MB",
        "baseline": f"{s['metrics off']['rps']:.0f} req/s, router {cpu['metrics off']:.1f} µs CPU/req",
        "ratio": ratio,
        "goal": f"≥ {GOAL}x; an hour < {MEMORY_GOAL_MB:.0f} MB",
        "met": ratio >= GOAL and max(held["two_hours_mb"], held["rss_growth_mb"]) < MEMORY_GOAL_MB,
        "raw": run["raw"],
        "cpu": cpu,
        "cpu_ratio": run["cpu_ratio"],
        "line_us": line_us,
        "held": held,
    }


def report(result: dict[str, object], rounds: int) -> None:
    raw: dict[str, list[dict[str, float]]] = result["raw"]  # type: ignore[assignment]
    cpu: dict[str, float] = result["cpu"]  # type: ignore[assignment]
    print(f"the stdlib server, {DYNOS} web dynos, wrk {' '.join(WRK_ARGS)}, {rounds} alternated rounds, medians:")
    for name, runs in raw.items():
        rps = [r["rps"] for r in runs]
        print(
            f"  {name:12} {median(rps):8.0f} req/s (range {spread(rps)})  p99 {median([r['p99'] for r in runs]):6.2f} ms"
            f"  router CPU {cpu[name]:.1f} µs/req  errors {sum(r['errors'] for r in runs):.0f}"
        )
    ratio: float = result["ratio"]  # type: ignore[assignment]
    print(
        f"  req/s with metrics / with --no-metrics, median of the rounds' pairs: {ratio:.3f}x (goal ≥ {GOAL}x): "
        f"{'met' if ratio >= GOAL else 'NOT met'}; router CPU per request {result['cpu_ratio']:.3f}x"
    )
    print(f"  the metrics' subscriber: {result['line_us']:.2f} µs per heroku[router] line")
    held: dict[str, float] = result["held"]  # type: ignore[assignment]
    print(
        f"  ring buffer, {DYNOS} dynos, {LINES_PER_SECOND} requests/s: {held['hour_mb']:.1f} MB after an hour "
        f"(tracemalloc), {held['two_hours_mb']:.1f} MB after two ({held['points']:.0f} points kept), process RSS "
        f"+{held['rss_growth_mb']:.1f} MB (goal < {MEMORY_GOAL_MB:.0f} MB): "
        f"{'met' if max(held['two_hours_mb'], held['rss_growth_mb']) < MEMORY_GOAL_MB else 'NOT met'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=12, help="wrk rounds of each (default 12)")
    args = parser.parse_args()
    result = measure(args.rounds)
    report(result, args.rounds)
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
