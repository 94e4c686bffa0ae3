"""Router faults, what they cost when off: requests/s through dynosim's router with no fault on,
against the same router without the faults' hook, side by side in one run; and how soon a fault is on
and off after faults:add and faults:remove are asked.

The baseline is this checkout's dynosim with the hook taken out: the commit that added
dynosim/router/chaos.py, reversed on proxy.py and state.py only, in a copy of the tree (git archive),
run from there through PYTHONPATH. Everything else, the dyno included, is the same code: bench/router.py's
stdlib server (keep-alive, TCP_NODELAY), where the router's own cost shows (on the sample app, Postgres
dwarfs it). Two runs, one of each, each with its own web dyno; short wrk rounds alternate between
them (with, without, then without, with…), and the ratio is the median of each round's pair, so a
machine busy with other work slows both sides of a pair alike; the router process's CPU per request is
given beside it, the same way, a steadier measure of the same thing. Goal (issue 19): ≥ 0.98x.

Switching: against the run with the hook, `faults:add router-error` and `faults:remove` over the
control socket (the API and CLI's way), each followed at once by one request: the first request after
the add must be answered by the fault, the first after the remove by the dyno. The time is from the
ask to that request's answer. Goal: < 100 ms.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import subprocess
import sys
import tarfile
import time
from io import BytesIO
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import WORK_DIR, dynosim_env, make_app, median, spread
from bench.router import APP, alternate, cpu_seconds, start_web, summary

REPO = Path(__file__).resolve().parents[1]
GOAL = 0.98
WRK_ARGS = ("-t1", "-c20", "-d3s")
SWITCH_GOAL_MS = 100.0
HOOKED = ("dynosim/router/proxy.py", "dynosim/router/state.py")


def git(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["git", *args], cwd=REPO, input=stdin, capture_output=True, check=True).stdout


def unhooked_tree() -> Path:
    """This checkout's dynosim (HEAD) with the faults' hook reversed out of the router."""
    tree = WORK_DIR / "router-faults-baseline"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    with tarfile.open(fileobj=BytesIO(git("archive", "HEAD", "dynosim"))) as archive:
        archive.extractall(tree, filter="data")
    hook = git("log", "--diff-filter=A", "--format=%H", "--", "dynosim/router/chaos.py").split()[-1].decode()
    reverse = git("diff", hook, f"{hook}^", "--", *HOOKED)
    subprocess.run(["git", "apply", "-"], cwd=tree, input=reverse, check=True, capture_output=True)
    for path in HOOKED:
        if "chaos" in (tree / path).read_text():
            raise RuntimeError(f"{path}: the hook is still in the baseline")
    return tree


def get(conn: http.client.HTTPConnection) -> int:
    conn.request("GET", "/switch")
    response = conn.getresponse()
    response.read()
    return response.status


def switching(app: Path, port: int, times: int) -> dict[str, list[float]]:
    """ms from faults:add to the answer of the first request after it, and the same for faults:remove,
    checking that request was the fault's (503) and, after the remove, the dyno's (200)."""
    from dynosim.faults import FaultRequest
    from dynosim.faults.client import add_fault, remove_fault

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # keep-alive: the router's 503 keeps it open
    added, removed = [], []
    for _ in range(times):
        started = time.perf_counter()
        fault = add_fault(app, FaultRequest("router-error"))
        if get(conn) != 503:
            raise RuntimeError("the first request after faults:add was not the fault's")
        added.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        remove_fault(app, fault["id"])
        if get(conn) != 200:
            raise RuntimeError("the first request after faults:remove was not the dyno's")
        removed.append((time.perf_counter() - started) * 1000)
    conn.close()
    return {"add": added, "remove": removed}


def measure(rounds: int, switches: int = 20) -> dict[str, object]:
    tree = unhooked_tree()
    hooked_app = make_app("router-faults-hooked", APP)
    plain_app = make_app("router-faults-plain", APP)
    hooked, _ = start_web(hooked_app)
    try:
        plain, _ = start_web(plain_app, env={**dynosim_env(), "PYTHONPATH": str(tree)})
    except BaseException:
        hooked.__exit__()
        raise
    with hooked, plain:
        results = alternate(
            {"hook, no fault": f"http://127.0.0.1:{hooked.port}/", "no hook": f"http://127.0.0.1:{plain.port}/"},
            rounds,
            WRK_ARGS,
            cpu={"hook, no fault": cpu_seconds(hooked.proc.pid, False), "no hook": cpu_seconds(plain.proc.pid, False)},
        )
        switch = switching(hooked_app, hooked.port, switches)
    s = summary(results)
    pairs = list(zip(results["hook, no fault"], results["no hook"], strict=True))
    ratio = median([a["rps"] / b["rps"] for a, b in pairs])
    cpu_ratio = median([a["cpu_us"] / b["cpu_us"] for a, b in pairs])
    cpu = {name: median([r["cpu_us"] for r in runs]) for name, runs in results.items()}
    worst = max(*switch["add"], *switch["remove"])
    return {
        "name": "router with faults off vs without the hook (stdlib server, wrk keep-alive)",
        "dynosim": f"{s['hook, no fault']['rps']:.0f} req/s, router {cpu['hook, no fault']:.1f} µs CPU/req; "
        f"faults:add/remove to effect {median(switch['add']):.1f}/{median(switch['remove']):.1f} ms (max {worst:.1f})",
        "baseline": f"{s['no hook']['rps']:.0f} req/s, router {cpu['no hook']:.1f} µs CPU/req",
        "ratio": ratio,
        "goal": f"≥ {GOAL}x; on and off < {SWITCH_GOAL_MS:.0f} ms",
        "met": ratio >= GOAL and worst < SWITCH_GOAL_MS,
        "raw": results,
        "cpu": cpu,
        "cpu_ratio": cpu_ratio,
        "switch": switch,
    }


def report(result: dict[str, object], rounds: int) -> None:
    raw: dict[str, list[dict[str, float]]] = result["raw"]  # type: ignore[assignment]
    cpu: dict[str, float] = result["cpu"]  # type: ignore[assignment]
    print(f"the stdlib server, wrk {' '.join(WRK_ARGS)}, {rounds} alternated rounds, medians:")
    for name, runs in raw.items():
        rps = [r["rps"] for r in runs]
        print(
            f"  {name:15} {median(rps):8.0f} req/s (range {spread(rps)})  p99 {median([r['p99'] for r in runs]):6.2f} ms"
            f"  router CPU {cpu[name]:.1f} µs/req  errors {sum(r['errors'] for r in runs):.0f}"
        )
    ratio: float = result["ratio"]  # type: ignore[assignment]
    print(
        f"  req/s with the hook and no fault / without the hook, median of the rounds' pairs: {ratio:.3f}x "
        f"(goal ≥ {GOAL}x): {'met' if ratio >= GOAL else 'NOT met'}; router CPU per request {result['cpu_ratio']:.3f}x"
    )
    switch: dict[str, list[float]] = result["switch"]  # type: ignore[assignment]
    for verb, times in (("faults:add", switch["add"]), ("faults:remove", switch["remove"])):
        print(
            f"  {verb} to the first request it changes answered: median {median(times):.1f} ms, max {max(times):.1f} ms "
            f"over {len(times)} (goal < {SWITCH_GOAL_MS:.0f} ms): {'met' if max(times) < SWITCH_GOAL_MS else 'NOT met'}"
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
