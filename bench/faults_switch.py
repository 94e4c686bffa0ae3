"""How soon a fault takes effect once asked, and how soon it is gone once removed (issue 19: "faults start
and stop within 100 ms of being asked"), for the kinds that are on for a while, besides the router's
(bench/router_faults.py measures those): dyno-hang, addon-outage of Postgres and of Redis, redis-oom.

One `dynosim run` of a stdlib web dyno with heroku-postgresql and heroku-redis on the native backend,
driven through the Python API (`App.faults`). Each switch is timed from the call to the first observation
of its effect, polled every millisecond from this process: the dyno's processes stopped (SIGSTOP, psutil
status), the add-on's port refusing connections, Redis refusing a SET with its OOM error; then from the
remove to the effect gone (processes running, the port answering and the server serving a query, a SET
succeeding). The baseline is what the same observation costs with no fault asked (one poll), so the ratio
says how many polls' worth the switch took. Medians of the rounds; no absolute time is asserted.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import CACHE_DIR, make_app, median

GOAL_MS = 100.0
PROCFILE = "web: python -m http.server $PORT --bind 0.0.0.0\n"
POLL = 0.001


def _refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return False
    except OSError:
        return True


def _until(condition: Callable[[], bool], timeout: float = 30.0) -> float:
    """Seconds until `condition` holds, polled every millisecond."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise SystemExit("a fault's effect did not show in 30 s")
        time.sleep(POLL)
    return time.monotonic() - began


def _timed_switch(on: Callable[[], object], effect: Callable[[], bool], off: Callable[[object], None],
                  gone: Callable[[], bool]) -> tuple[float, float]:  # fmt: skip
    began = time.monotonic()
    fault = on()
    _until(effect)
    start = time.monotonic() - began
    began = time.monotonic()
    off(fault)
    _until(gone)
    return start, time.monotonic() - began


def measure(rounds: int) -> dict[str, object]:
    import psycopg
    import redis

    from dynosim import App

    app_dir = make_app("faults-switch", {"Procfile": PROCFILE})
    results: dict[str, list[tuple[float, float]]] = {}
    with App(app_dir, addons=["heroku-postgresql", "heroku-redis"], addons_backend="native",
             cache_dir=CACHE_DIR) as app:  # fmt: skip
        urls = app.addon_urls
        pg_url = urls["DATABASE_URL"].replace("postgres://", "postgresql://", 1)
        pg_port = int(pg_url.rsplit(":", 1)[1].split("/", 1)[0])
        redis_url = urls["REDIS_URL"]
        redis_port = int(redis_url.rsplit(":", 1)[1])

        def pg_serves() -> bool:
            try:
                with psycopg.connect(pg_url, connect_timeout=1) as conn:
                    return conn.execute("select 1").fetchone() == (1,)
            except psycopg.Error:
                return False

        def redis_client() -> redis.Redis:
            return redis.Redis.from_url(redis_url, ssl_cert_reqs=None, socket_timeout=1, retry_on_timeout=False)

        def redis_serves() -> bool:
            try:
                return bool(redis_client().ping())
            except redis.RedisError:
                return False

        def oom() -> bool:
            try:
                redis_client().set("faults-switch", "x" * 1024)
                return False
            except redis.exceptions.OutOfMemoryError:  # redis-py's class for Redis's OOM reply
                return True

        def web_processes() -> list[psutil.Process]:
            dyno = app._run.running().slots[0].dyno  # the dyno's own processes, as dyno-hang stops them
            assert dyno is not None and dyno.process is not None
            return dyno.process.processes()

        def hung() -> bool:
            return all(p.status() == psutil.STATUS_STOPPED for p in web_processes())

        def running() -> bool:
            return all(p.status() != psutil.STATUS_STOPPED for p in web_processes())

        def remove(fault: object) -> None:
            fault.remove()  # type: ignore[attr-defined]

        kinds: dict[str, tuple[Callable[[], object], Callable[[], bool], Callable[[], bool]]] = {
            "dyno-hang web.1": (lambda: app.faults.add("dyno-hang", "web.1"), hung, running),
            "addon-outage heroku-postgresql": (
                lambda: app.faults.add("addon-outage", "heroku-postgresql"),
                lambda: _refuses(pg_port),
                pg_serves,
            ),
            "addon-outage heroku-redis": (
                lambda: app.faults.add("addon-outage", "heroku-redis"),
                lambda: _refuses(redis_port),
                redis_serves,
            ),
            "redis-oom heroku-redis": (lambda: app.faults.add("redis-oom", "heroku-redis"), oom, lambda: not oom()),
        }
        baseline = median([_until(lambda: True) + _probe_cost(pg_serves) for _ in range(rounds)])
        for _ in range(rounds):
            for name, (on, effect, gone) in kinds.items():
                results.setdefault(name, []).append(_timed_switch(on, effect, remove, gone))
    starts = {name: median([s for s, _ in times]) * 1000 for name, times in results.items()}
    stops = {name: median([s for _, s in times]) * 1000 for name, times in results.items()}
    worst = max(max(s, e) for times in results.values() for s, e in times) * 1000
    slowest = max(results, key=lambda name: max(starts[name], stops[name]))
    return {
        "name": "faults switched on and off (dyno-hang, addon-outage ×2, redis-oom; native)",
        "dynosim": "; ".join(f"{name} {starts[name]:.0f}/{stops[name]:.0f} ms" for name in results),
        "baseline": f"one observation with no fault {baseline * 1000:.1f} ms",
        "ratio": max(starts[slowest], stops[slowest]) / max(baseline * 1000, 0.001),
        "goal": f"on and off < {GOAL_MS:.0f} ms (medians; the worst single switch is printed)",
        "met": max(*starts.values(), *stops.values()) < GOAL_MS,
        "worst_ms": worst,
        "starts_ms": starts,
        "stops_ms": stops,
    }


def _probe_cost(probe: Callable[[], bool]) -> float:
    began = time.monotonic()
    probe()
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=5)
    result = measure(parser.parse_args().rounds)
    for name in result["starts_ms"]:  # type: ignore[attr-defined]
        on, off = result["starts_ms"][name], result["stops_ms"][name]  # type: ignore[index]
        print(f"{name:34} on {on:7.1f} ms   off {off:7.1f} ms")
    print(f"baseline: {result['baseline']}; slowest median {result['ratio']:.1f}x of it; worst single switch "
          f"{result['worst_ms']:.1f} ms (goal: medians < {GOAL_MS:.0f} ms: {'met' if result['met'] else 'NOT met'})")  # fmt: skip


if __name__ == "__main__":
    main()
