"""Memory: the supervisor's own resident set (psutil RSS of the `dynosim run` process only, not
its dynos) with 10 dynos running, sampled once all 10 are up and settled.

The app has one process type, a worker that sleeps, run as `--formation worker=10`. Baseline,
side by side: the `honcho start -c worker=10` process's RSS with the same 10 processes.
Also printed, for both: PSS of the supervisor plus its own helper processes (dynosim: unshare
and dyno init per dyno; honcho: a forked copy of itself per process), since honcho keeps
most of its supervision in those forks.
Runs alternate; medians are reported. Goal (issue 2): dynosim under 60 MB.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psutil

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

DYNOS = 10
GOAL_MB = 60
WORKER = "import time\ntime.sleep(3600)\n"
MB = 1 << 20


def workers_running(proc: psutil.Process) -> int:
    count = 0
    for child in proc.children(recursive=True):
        try:
            count += child.cmdline()[-1:] == ["worker.py"]
        except psutil.Error:
            pass
    return count


def helpers(proc: psutil.Process) -> list[psutil.Process]:
    """The supervisor's own helper processes: dynosim's unshare + dyno init per dyno, honcho's
    forked copy of itself per process (not the apps' shells and interpreters)."""
    found = []
    for child in proc.children(recursive=True):
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if cmdline.startswith("unshare ") or "dynoinit.py" in cmdline or "honcho start" in cmdline:
            found.append(child)
    return found


def one_run(argv: list[str], env: dict[str, str], app: Path, settle: float) -> dict[str, float]:
    proc = launch(argv, env, app)
    try:
        deadline = time.monotonic() + 120
        while workers_running(proc) < DYNOS:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command_name(argv)}: {DYNOS} workers did not start")
            time.sleep(0.05)
        time.sleep(settle)
        samples = []
        for _ in range(5):
            samples.append(proc.memory_info().rss)
            time.sleep(0.2)
        full = proc.memory_full_info()
        helper_pss = sum(p.memory_full_info().pss for p in helpers(proc))
        peak = int(Path(f"/proc/{proc.pid}/status").read_text().split("VmHWM:")[1].split()[0]) * 1024
        return {
            "rss": max(samples) / MB,
            "uss": full.uss / MB,
            "peak": peak / MB,
            "pss_total": (full.pss + helper_pss) / MB,
            "helpers": len(helpers(proc)),
            "threads": proc.num_threads(),
        }
    finally:
        stop(proc)


def measure(runs: int, settle: float) -> dict[str, object]:
    app = make_app("memory-app", {"Procfile": "worker: python worker.py\n", "worker.py": WORKER})
    env = dynosim_env()
    commands = {
        "dynosim": (dynosim_argv("--formation", f"worker={DYNOS}"), env),
        "honcho": (honcho_argv("--no-colour", "-c", f"worker={DYNOS}"), honcho_env()),
    }
    one_run(*commands["dynosim"], app, 0)  # warm-up, untimed: builds the slug
    results: dict[str, list[dict[str, float]]] = {"dynosim": [], "honcho": []}
    for _ in range(runs):
        for who, (argv, run_env) in commands.items():
            results[who].append(one_run(argv, run_env, app, settle))
    rss = {who: [r["rss"] for r in rs] for who, rs in results.items()}
    d, h = median(rss["dynosim"]), median(rss["honcho"])
    return {
        "name": f"supervisor RSS, {DYNOS} dynos",
        "dynosim": f"{d:.1f} MB (range {spread(rss['dynosim'])})",
        "baseline": f"honcho {h:.1f} MB (range {spread(rss['honcho'])})",
        "ratio": d / h,
        "goal": f"< {GOAL_MB} MB",
        "met": d < GOAL_MB,
        "raw": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=3, help="runs of each (default 3)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds to wait once all are up")
    args = parser.parse_args()
    result = measure(args.runs, args.settle)
    for who, runs in result["raw"].items():
        print(
            f"{who:8} "
            + "; ".join(
                f"RSS {r['rss']:.1f} MB (USS {r['uss']:.1f}, peak {r['peak']:.1f}, {r['threads']} threads; "
                f"with its {r['helpers']} helper processes PSS {r['pss_total']:.1f})"
                for r in runs
            )
        )
    print(f"dynosim {result['dynosim']}; {result['baseline']}; ratio {result['ratio']:.2f}x")
    print(f"goal {result['goal']}: {'met' if result['met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
