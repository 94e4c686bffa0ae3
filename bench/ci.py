"""Heroku CI: `dynosim ci` on a fixture app against the same suite run with pytest by hand.

The app is tests/apps/ci_app (a `heroku-postgresql:in-dyno` add-on, `scripts.test-setup` making a
table, a two-test pytest suite over DATABASE_URL with psycopg), committed in a git repository. One
untimed `dynosim ci` first builds its slug (every later run reuses it, as a warm machine does).

Baseline, side by side in the same run, alternating rounds: what a developer does by hand for a fresh
database: `initdb` a new data folder, `pg_ctl start -w`, `createdb`, the same setup script and
`python -m pytest` on the same suite (this interpreter, which has psycopg and pytest; its plugins
not loaded, so it is the slug's bare pytest), `pg_ctl stop`, the folder removed. Run as uid 1000 in
a user namespace when root, as dynosim's native backend runs postgres. Each round is timed from launch to exit. Goal (issue 17): `dynosim ci` under 2x.

A second baseline, also side by side, is the floor a warm machine sets: a Postgres started by hand
once (initdb, pg_ctl) before the rounds, and each round only `createdb` of a new database, the setup
and the suite. Its ratio is printed too; the goal is measured against the first, like for like (both
give the suite a fresh server).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import CACHE_DIR, REPO, WORK_DIR, free_port, median, spread, tool

GOAL = 2.0
FIXTURE = REPO / "tests" / "apps" / "ci_app"
AS_USER = ["unshare", "--user", "--map-user=1000", "--map-group=1000", "--"] if os.geteuid() == 0 else []


def ci_app() -> Path:
    app = WORK_DIR / "ci-app"
    shutil.rmtree(app, ignore_errors=True)
    shutil.copytree(FIXTURE, app)
    who = ["-c", "user.email=bench@example.com", "-c", "user.name=bench"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "ci app"]):
        subprocess.run(["git", "-C", str(app), *who, *args], check=True, capture_output=True)
    return app


def timed_dynosim_ci(app: Path) -> float:
    env = {**os.environ, "DYNOSIM_CACHE_DIR": str(CACHE_DIR)}
    began = time.perf_counter()
    done = subprocess.run([tool("dynosim"), "ci"], cwd=app, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - began
    if done.returncode != 0 or "2 passed" not in done.stdout:
        raise SystemExit(f"dynosim ci failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return took


class HandMadePostgres:
    """A Postgres made and started by hand: initdb, pg_ctl start; stopped and removed by `stop`."""

    def __init__(self, name: str) -> None:
        from dynosim.addons.backends.native import NativeBackend
        from dynosim.addons.services.postgres_native import find_binaries

        self.bins = find_binaries(NativeBackend(lambda _: None))
        self.folder = WORK_DIR / name
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.data, self.port = self.folder / "data", free_port()
        self.databases = 0
        initdb = [self.bins["initdb"], "-D", str(self.data), "-U", "bench", "--auth=trust", "--no-sync", "-E", "UTF8"]
        _run(*AS_USER, *initdb)
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.folder}"
        log = str(self.folder / "log")
        _run(*AS_USER, self.bins["pg_ctl"], "start", "-w", "-s", "-D", str(self.data), "-l", log, "-o", options)

    def suite(self, app: Path) -> None:
        """A new database, the setup script and the suite, as scripts.test-setup and scripts.test run them."""
        self.databases += 1
        name = f"suite{self.databases}"
        _run(*AS_USER, self.bins["createdb"], "-h", "127.0.0.1", "-p", str(self.port), "-U", "bench", name)
        env = {"DATABASE_URL": f"postgres://bench@127.0.0.1:{self.port}/{name}", "GREETING": "hello from app.json"}
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # a bare pytest, as in the slug (this one has many plugins)
        _run(sys.executable, "setup_db.py", cwd=app, env=env)
        _run(sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "suite.py", cwd=app, env=env)

    def stop(self) -> None:
        try:
            _run(*AS_USER, self.bins["pg_ctl"], "stop", "-w", "-s", "-m", "fast", "-D", str(self.data))
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _run(*argv: str, cwd: Path = Path("/"), env: dict[str, str] | None = None) -> None:
    full_env = {**os.environ, **(env or {})}
    subprocess.run(argv, check=True, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, capture_output=True)


def timed_by_hand(app: Path) -> float:
    """initdb, pg_ctl start, createdb, the setup and the suite, pg_ctl stop: a fresh server by hand."""
    began = time.perf_counter()
    postgres = HandMadePostgres("ci-by-hand")
    try:
        postgres.suite(app)
    finally:
        postgres.stop()
    return time.perf_counter() - began


def timed_on_running(postgres: HandMadePostgres, app: Path) -> float:
    began = time.perf_counter()
    postgres.suite(app)
    return time.perf_counter() - began


def measure(runs: int) -> dict[str, object]:
    app = ci_app()
    timed_dynosim_ci(app)  # untimed: builds the slug
    timed_by_hand(app)  # untimed: the binaries and the page cache
    times: dict[str, list[float]] = {"dynosim ci": [], "pytest by hand": [], "pytest, pg running": []}
    running = HandMadePostgres("ci-running")
    try:
        for _ in range(runs):
            times["dynosim ci"].append(timed_dynosim_ci(app))
            times["pytest by hand"].append(timed_by_hand(app))
            times["pytest, pg running"].append(timed_on_running(running, app))
    finally:
        running.stop()
    d, b = median(times["dynosim ci"]), median(times["pytest by hand"])
    floor = median(times["pytest, pg running"])
    return {
        "name": "Heroku CI test run (in-dyno Postgres, 2 tests)",
        "dynosim": f"{d * 1000:.0f} ms (range {spread([t * 1000 for t in times['dynosim ci']])})",
        "baseline": f"initdb + pg_ctl + pytest {b * 1000:.0f} ms (range {spread([t * 1000 for t in times['pytest by hand']])})",
        "ratio": d / b,
        "floor_ratio": d / floor,
        "goal": f"< {GOAL}x",
        "met": d / b < GOAL,
        "raw": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=7, help="rounds of each (default 7)")
    result = measure(parser.parse_args().runs)
    for case, values in result["raw"].items():  # type: ignore[attr-defined]
        ms = [v * 1000 for v in values]
        print(f"{case:18} {median(ms):7.0f}ms {spread(ms):>16}  " + " ".join(f"{v:.0f}" for v in ms))
    print(f"dynosim {result['dynosim']}; {result['baseline']}")
    print(
        f"ratio dynosim ci / by hand: {result['ratio']:.2f}x (goal {result['goal']}): "
        f"{'met' if result['met'] else 'NOT met'}; / pytest on a running Postgres: {result['floor_ratio']:.2f}x"
    )


if __name__ == "__main__":
    main()
