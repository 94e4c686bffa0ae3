"""Log throughput: lines per second from a dyno that floods stdout, through the supervisor to a pipe.

One process type prints N (default 200,000) flushed lines, then sleeps. The bench reads the
supervisor's stdout pipe as fast as it can, timing from the first flood line received to the
last, then checks that every line arrived exactly once and in order. Baseline, side by side:
`honcho start --no-colour` on the same app. Runs alternate; medians are reported.
Goal (issue 2): dynosim's lines/s at least honcho's, with every line delivered.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    command_name,
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

FLOOD = """\
import sys, time
count = int(sys.argv[1])
start = time.perf_counter()
for i in range(count):
    print(f"line {i}", flush=True)
print(f"flood done in {time.perf_counter() - start:.3f} s", flush=True)
time.sleep(3600)
"""
LINE = re.compile(rb"(?:app\[flood\.1\]:|flood\.1 +\|) line (\d+)$", re.M)
DONE = re.compile(rb"flood done in ([\d.]+) s")


def one_run(argv: list[str], env: dict[str, str], app: Path, count: int) -> dict[str, float]:
    read_fd, write_fd = os.pipe()
    proc = launch(argv, env, app, stdout=write_fd)
    os.close(write_fd)
    first_marker, last_marker = b" line 0\n", f" line {count - 1}\n".encode()
    chunks: list[bytes] = []
    tail = b""
    first = last = None
    try:
        deadline = time.monotonic() + 300
        while last is None and time.monotonic() < deadline:
            chunk = os.read(read_fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"{command_name(argv)} closed its output before the last line")
            now = time.perf_counter()
            chunks.append(chunk)
            window = tail + chunk
            if first is None and first_marker in window:
                first = now
            if last_marker in window:
                last = now
            tail = chunk[-64:]
        # the producer's own time comes right after its last line
        while not DONE.search(b"".join(chunks[-2:])) and chunks[-1]:
            chunks.append(os.read(read_fd, 1 << 16))
    finally:
        stop(proc)
        os.close(read_fd)
    output = b"".join(chunks)
    numbers = [int(n) for n in LINE.findall(output)]
    if numbers != list(range(count)):
        missing = count - len(set(numbers))
        raise RuntimeError(f"{command_name(argv)}: {len(numbers)} flood lines, {missing} missing or out of order")
    assert first is not None and last is not None
    return {
        "rate": (count - 1) / (last - first),
        "producer": float(DONE.search(output).group(1)),
        "lines": len(numbers),
    }


def measure(runs: int, count: int) -> dict[str, object]:
    app = make_app("logs-app", {"Procfile": f"flood: python flood.py {count}\n", "flood.py": FLOOD})
    env = dynosim_env()
    commands = {"dynosim": (dynosim_argv(), env), "honcho": (honcho_argv("--no-colour"), honcho_env())}
    results: dict[str, list[dict[str, float]]] = {"dynosim": [], "honcho": []}
    for argv, run_env in commands.values():  # warm-up, untimed: builds the slug, fills caches
        one_run(argv, run_env, app, count)
    for _ in range(runs):
        for who, (argv, run_env) in commands.items():
            results[who].append(one_run(argv, run_env, app, count))
    rates = {who: [r["rate"] for r in rs] for who, rs in results.items()}
    d, h = median(rates["dynosim"]), median(rates["honcho"])
    return {
        "name": f"log throughput, {count:,} lines",
        "dynosim": f"{d / 1000:.0f} k lines/s (range {spread([r / 1000 for r in rates['dynosim']])} k)",
        "baseline": f"honcho {h / 1000:.0f} k lines/s (range {spread([r / 1000 for r in rates['honcho']])} k)",
        "ratio": d / h,
        "goal": "≥ 1.0x, all lines",
        "met": d >= h,
        "raw": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=5, help="timed runs of each (default 5)")
    parser.add_argument("--lines", type=int, default=200_000, help="lines the dyno prints (default 200,000)")
    args = parser.parse_args()
    result = measure(args.runs, args.lines)
    for who, runs in result["raw"].items():
        print(
            f"{who:8} lines/s: "
            + " ".join(f"{r['rate'] / 1000:.0f}k" for r in runs)
            + "; producer done in "
            + " ".join(f"{r['producer']:.2f}" for r in runs)
            + " s"
            + f"; lines received {runs[0]['lines']:,} each, in order"
        )
    print(f"dynosim {result['dynosim']}; {result['baseline']}")
    print(
        f"ratio dynosim/honcho: {result['ratio']:.2f}x (goal {result['goal']}): {'met' if result['met'] else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
