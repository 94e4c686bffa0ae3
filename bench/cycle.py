"""Cycle: the cost of giving a dyno a fresh filesystem again (stop aside), and the ledger's latency.

A cycle here is what dynosim does besides stopping the old process: a fresh filesystem for the
dyno (`sandbox.fresh`), a process started in it and waited for (`sandbox.spawn(fs, "true", …)`, so
the overlay mounts and the namespaces are part of it), and the wipe of that filesystem
(`sandbox.wipe`). The slug is a synthetic tree of 200 MB in 5,000 files (100 folders of 50 files of
40 kB, random bytes) under /var/tmp: not under /tmp, which every dyno gets a private copy of.

Baseline, side by side in the same run: `cp -a` of the same tree to a new folder. Two baselines
are timed: onto the same filesystem as the slug and dynosim's runtime folder (/var/tmp, what a copy
actually costs there: the ratio and the goal use it) and onto tmpfs (/dev/shm, which takes the disk
out of the copy: reported as a second, stricter ratio). Runs alternate (namespaces, cp /var/tmp,
copy, cp /dev/shm…) and a `sync` (untimed) follows each one, so that one run's writeback does
not land in the next; the copies are removed untimed. Medians are reported: ext4 reuses inodes
and copy/delete times are noisy (see measurements.md).

Both sandbox modes are measured: namespaces (overlayfs; the default where the kernel allows it) and
copy (a full copy of the slug per dyno, then its removal: it cannot meet the goal, by construction).
Goal (issue 4): a namespaces cycle under 0.2x of `cp -a`.

Detector latency: a Ledger watching a fresh dyno filesystem; a file is written into the dyno's
upper folder (where its writes land) and we poll every 1 ms until the ledger lists it. N=50,
median and max. Goal (issue 4): within 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

if __package__ in (None, ""):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import WORK_DIR, median, spread

GOAL = 0.2
LATENCY_GOAL = 1.0
ROOT = WORK_DIR / "cycle"
SLUG_DIR = ROOT / "slug"
SHM = Path("/dev/shm")
FOLDERS, FILES, SIZE = 100, 50, 40_000  # 5,000 files of 40 kB: 200 MB


def make_tree(root: Path) -> Path:
    """The slug tree, made once and reused when it is complete."""
    done = root / f".complete-{FOLDERS}x{FILES}x{SIZE}"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    for folder in range(FOLDERS):
        path = root / f"pkg{folder:03}"
        path.mkdir(parents=True)
        for file in range(FILES):
            (path / f"module{file:02}.py").write_bytes(os.urandom(SIZE))
    subprocess.run(["sync"], check=True)
    done.touch()
    return root


def make_slug(tree: Path):  # type: ignore[no-untyped-def]
    from dynosim.buildpack import Slug

    return Slug(
        id="bench-cycle", path=tree, venv=None, python_version="3.11", commit=None, description="Deploy (bench)"
    )


async def timed_cycle(sandbox, slug) -> float:  # type: ignore[no-untyped-def]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(slug.path)}
    start = time.perf_counter()
    fs = sandbox.fresh("web.1", slug)
    proc = await sandbox.spawn(fs, "true", env, f"bench-cycle-{secrets.token_hex(4)}")
    if proc.proc.stdout is not None:
        await proc.proc.stdout.read()
    code = await proc.wait()
    sandbox.wipe(fs)
    took = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"`true` in a {sandbox.mode} dyno exited with {code}")
    return took


def timed_cp(tree: Path, under: Path) -> float:
    target = under / f"dynosim-bench-cp-{secrets.token_hex(3)}"
    start = time.perf_counter()
    subprocess.run(["cp", "-a", str(tree), str(target)], check=True)
    took = time.perf_counter() - start
    shutil.rmtree(target)
    return took


def settle() -> None:
    subprocess.run(["sync"], check=True)


async def ledger_latency(sandbox, slug, writes: int) -> list[float]:  # type: ignore[no-untyped-def]
    from dynosim.ephemeral import Ledger
    from dynosim.logs import LogStream

    ledger = Ledger(LogStream())
    fs = sandbox.fresh("web.1", slug)
    app = next(layer for layer in fs.layers if layer.lower == slug.path)  # the slug's layer, seen at /app
    upper = app.host
    latencies = []
    try:
        ledger.watch("bench", "web.1", fs)
        await asyncio.sleep(0.2)  # the observer's first scheduling
        for i in range(writes):
            name = f"uploads/photo-{i}.jpg"
            seen = str(app.seen_as / name)
            (upper / "uploads").mkdir(exist_ok=True)
            start = time.perf_counter()
            (upper / name).write_bytes(b"\xff\xd8\xff" + os.urandom(1024))
            deadline = start + 10
            while not any(w.path == seen for w in list(ledger.writes)):
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{seen} not in the ledger after 10 s")
                await asyncio.sleep(0.001)
            latencies.append(time.perf_counter() - start)
            await asyncio.sleep(0.02)
        ledger.unwatch("bench")
    finally:
        ledger.close()
        sandbox.wipe(fs)
    return latencies


async def run(runs: int, copy_runs: int, writes: int) -> dict[str, object]:
    from dynosim.runtime.sandbox import choose_sandbox

    tree = make_tree(SLUG_DIR)
    slug = make_slug(tree)
    runtime = ROOT / "run"
    namespaces = choose_sandbox("namespaces", runtime / "ns", ())
    copy = choose_sandbox("copy", runtime / "copy", ())
    times: dict[str, list[float]] = {"namespaces": [], "copy": [], "cp -a /var/tmp": [], "cp -a /dev/shm": []}
    # untimed warm-up of each: page cache, the interpreter dynoinit runs on
    await timed_cycle(namespaces, slug)
    timed_cp(tree, ROOT)
    timed_cp(tree, SHM)
    settle()
    for i in range(runs):
        times["namespaces"].append(await timed_cycle(namespaces, slug))
        settle()
        times["cp -a /var/tmp"].append(timed_cp(tree, ROOT))
        settle()
        if i < copy_runs:
            times["copy"].append(await timed_cycle(copy, slug))
            settle()
        times["cp -a /dev/shm"].append(timed_cp(tree, SHM))
        settle()
    latencies = await ledger_latency(namespaces, slug, writes)
    d, b, s = (median(times[k]) for k in ("namespaces", "cp -a /var/tmp", "cp -a /dev/shm"))
    return {
        "name": "cycle (fresh fs + start + wipe), namespaces",
        "dynosim": f"{d * 1000:.0f} ms (range {spread([t * 1000 for t in times['namespaces']])})",
        "baseline": f"cp -a (/var/tmp) {b * 1000:.0f} ms (range {spread([t * 1000 for t in times['cp -a /var/tmp']])})",
        "ratio": d / b,
        "goal": f"< {GOAL}x",
        "met": d / b < GOAL and d / s < GOAL,
        "raw": times,
        "latency": latencies,
        "sandbox": namespaces.mode,
    }


def measure(runs: int, copy_runs: int | None = None, writes: int = 50) -> dict[str, object]:
    return asyncio.run(run(runs, runs if copy_runs is None else copy_runs, writes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=7, help="timed runs of each (default 7)")
    parser.add_argument("--copy-runs", type=int, default=3, help="of them, with copy mode too (default 3)")
    parser.add_argument("--writes", type=int, default=50, help="writes for the ledger's latency (default 50)")
    args = parser.parse_args()
    result = measure(args.runs, args.copy_runs, args.writes)
    raw: dict[str, list[float]] = result["raw"]  # type: ignore[assignment]
    base, shm = median(raw["cp -a /var/tmp"]), median(raw["cp -a /dev/shm"])
    print(f"slug: {FOLDERS * FILES} files, {FOLDERS * FILES * SIZE / 1e6:.0f} MB in {SLUG_DIR}")
    print(f"{'case':16} {'median':>9} {'range (ms)':>14} {'vs cp /var/tmp':>14} {'vs cp /dev/shm':>14}  runs (ms)")
    for case, values in raw.items():
        ms = [v * 1000 for v in values]
        print(
            f"{case:16} {median(ms):7.1f}ms {spread(ms):>14} {median(values) / base:13.3f}x {median(values) / shm:13.3f}x  "
            + " ".join(f"{v:.0f}" for v in ms)
        )
    lat = [v * 1000 for v in result["latency"]]  # type: ignore[union-attr]
    print(
        f"ledger latency over {len(lat)} writes: median {median(lat):.1f} ms, max {max(lat):.1f} ms "
        f"(goal within {LATENCY_GOAL:g} s): {'met' if max(lat) <= LATENCY_GOAL * 1000 else 'NOT met'}"
    )
    print(f"dynosim {result['dynosim']}; {result['baseline']}")
    print(
        f"ratio namespaces cycle / cp -a: {result['ratio']:.3f}x against /var/tmp, "
        f"{median(raw['namespaces']) / shm:.3f}x against /dev/shm (goal {result['goal']}): "
        f"{'met' if result['met'] else 'NOT met'}"
    )
    print(
        f"copy mode: {median(raw['copy']) / base:.2f}x of cp -a (/var/tmp): it copies the whole slug per dyno, "
        "so it cannot meet the goal"
    )


if __name__ == "__main__":
    main()
