"""Runs the benchmarks of issue 2 (start-up, log throughput, supervisor memory), of issues 3, 4, 5, 6 and 8
(add-on start, dyno cycle, router, control socket and idle CPU, TLS), of issue 17 (dynosim ci), of issue 18
(pg:backups and pg:pull of a 1 GB database; 200 MB with --quick) and of issue 19 (the router with no fault on,
faults switched on and off) and of issue 20 (the router with 1-second metrics on, an hour of them held; idle CPU with the dashboard open) and of issue 21 (reset, snapshot:load, a clean-data pytest suite) and of issue 23 (`dynosim image` warm and changed, `deploy --to swarm` to the first 200), each against its baseline measured side by side, and prints a summary table.
`--quick` runs fewer rounds.

First it installs what the benchmarks and their baselines run when it may (bench.common.provide: root with
apt-get). Each benchmark's row is printed as it finishes and the table so far written to bench/results.json
after each, so a crash or Ctrl-C later loses none of it. A benchmark that cannot run here (a missing tool)
gets a row saying "skipped: why"; one that raises gets a row saying "failed: error"; the others still run."""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import platform
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import (
    addons,
    ci,
    clean_suite,
    control,
    cycle,
    dashboard,
    docker_addons,
    faults_switch,
    image,
    logs,
    memory,
    metrics,
    pg_backups,
    reset,
    router,
    router_faults,
    snapshots,
    startup,
    swarm,
    tls,
)
from bench.common import (
    CHROMIUM,
    HONCHO,
    NGINX,
    WRK,
    Requirement,
    Unavailable,
    find,
    missing,
    provide,
    provide_docker_images,
)

RESULTS = Path(__file__).resolve().parent / "results.json"
Row = dict[str, object]


@dataclass(frozen=True)
class Benchmark:
    """One row of the table, or several (`dynosim image` gives its warm and its changed case): `run(quick)`
    measures it. Without one of `needs` it cannot run at all; without one of `baselines` it runs and skips
    that baseline itself."""

    title: str
    module: str
    run: Callable[[bool], Row | list[Row]]
    needs: tuple[Requirement, ...] = ()
    baselines: tuple[Requirement, ...] = ()
    python_modules: tuple[str, ...] = ()
    docker: bool = False

    def unavailable(self) -> str | None:
        """Why this cannot run here, or None."""
        for requirement in self.needs:
            if find(requirement) is None:
                return missing(requirement)
        for module in self.python_modules:
            if importlib.util.find_spec(module) is None:
                return f"Python package {module} not installed (pip install -e '.[test]')"
        return None


BENCHMARKS = (
    Benchmark("start-up", "startup", lambda q: startup.measure(3 if q else 9), needs=(HONCHO,)),
    Benchmark("log throughput", "logs", lambda q: logs.measure(2 if q else 5, 200_000), needs=(HONCHO,)),
    Benchmark("memory", "memory", lambda q: memory.measure(1 if q else 3, 2.0), needs=(HONCHO,)),
    Benchmark("add-on start", "addons", lambda q: addons.measure(3 if q else 9, 1 if q else 3), docker=True),
    Benchmark("docker add-on start", "docker_addons", lambda q: docker_addons.measure(3 if q else 7), docker=True),
    Benchmark("cycle", "cycle", lambda q: cycle.measure(3 if q else 7, 1 if q else 3)),
    Benchmark(
        "router (sample app)",
        "router",
        lambda q: router.measure(2 if q else 5, "sample"),
        needs=(WRK,),
        baselines=(NGINX,),
    ),
    Benchmark(
        "router (stdlib server)",
        "router",
        lambda q: router.measure(2 if q else 5, "stdlib"),
        needs=(WRK,),
        baselines=(NGINX,),
    ),
    Benchmark(
        "router, faults off",
        "router_faults",
        lambda q: router_faults.measure(4 if q else 12, 5 if q else 20),
        needs=(WRK,),
    ),
    Benchmark("faults on and off", "faults_switch", lambda q: faults_switch.measure(3 if q else 7)),
    Benchmark("metrics", "metrics", lambda q: metrics.measure(4 if q else 12), needs=(WRK,)),
    Benchmark(
        "dashboard open",
        "dashboard",
        lambda q: dashboard.measure(1 if q else 3, 10.0 if q else 20.0),
        needs=(CHROMIUM,),
        python_modules=("playwright",),
    ),
    Benchmark("Heroku CI", "ci", lambda q: ci.measure(2 if q else 5)),
    Benchmark("reset", "reset", lambda q: reset.measure(3 if q else 7)),
    Benchmark("snapshot:load", "snapshots", lambda q: snapshots.measure(2 if q else 5)),
    Benchmark("clean-data suite", "clean_suite", lambda q: clean_suite.measure(1 if q else 3)),
    Benchmark("pg:backups", "pg_backups", lambda q: pg_backups.measure_backups(2 if q else 3, 200 if q else 1024)),
    Benchmark("pg:pull", "pg_backups", lambda q: pg_backups.measure_pull(2 if q else 3, 200 if q else 1024)),
    Benchmark(
        "control socket and idle CPU",
        "control",
        lambda q: control.measure(100 if q else 200, 15.0 if q else 30.0),
        needs=(HONCHO,),
    ),
    Benchmark("TLS", "tls", lambda q: tls.measure(2 if q else 9), needs=(WRK,), baselines=(NGINX,)),
    Benchmark("dynosim image", "image", lambda q: image.measure(2 if q else 7), docker=True),
    Benchmark("deploy --to swarm", "swarm", lambda q: swarm.measure(2 if q else 5), docker=True),
)
NAMES = sorted({b.module for b in BENCHMARKS})


def select(only: str | None) -> list[Benchmark]:
    """The benchmarks `--only` names, by module or title (case-insensitive); all without it."""
    if not only:
        return list(BENCHMARKS)
    wanted = {name.strip().lower() for name in only.split(",") if name.strip()}
    unknown = wanted - {b.module for b in BENCHMARKS} - {b.title.lower() for b in BENCHMARKS}
    if unknown:
        raise ValueError(f"no benchmark named {', '.join(sorted(unknown))}; choose from {', '.join(NAMES)}")
    return [b for b in BENCHMARKS if b.module in wanted or b.title.lower() in wanted]


def gone_row(benchmark: Benchmark, what: str, why: str) -> Row:
    """The row of a benchmark that gave no figures: `what` is "skipped" or "failed"."""
    return {"name": benchmark.title, "dynosim": f"{what}: {why}", "baseline": "-", "ratio": None, "goal": "-"}


def run_one(benchmark: Benchmark, quick: bool) -> list[Row]:
    """Its rows: measured, or one saying skipped (cannot run here) or failed (it raised), never an exception."""
    why = benchmark.unavailable()
    if why is None:
        try:
            measured = benchmark.run(quick)
            rows = measured if isinstance(measured, list) else [measured]
            if not rows or not all(isinstance(row, dict) for row in rows):
                raise TypeError(f"{benchmark.module}'s measure returned {measured!r}, not a row or a list of rows")
            return rows
        except Unavailable as error:
            why = str(error)
        except (Exception, SystemExit) as error:  # pg_backups ends a failed command with SystemExit
            message = f"{type(error).__name__}: {error}"
            first = message.splitlines()[0]
            trace = traceback.format_exc()
            return [{**gone_row(benchmark, "failed", first), "met": False, "error": message, "traceback": trace}]
    return [{**gone_row(benchmark, "skipped", why), "met": False, "skipped": why}]


def ratio_text(ratio: object) -> str:
    return f"{ratio:.2f}x" if isinstance(ratio, int | float) and math.isfinite(ratio) else "-"


def one_line(row: Row) -> str:
    """The row as printed when it is done: `title: skipped: why` or `title: failed: error` if it gave no figures."""
    if "skipped" in row or "error" in row:
        return f"{row['name']}: {row['dynosim']}"
    return (
        f"{row['name']}: dynosim {row['dynosim']} | baseline {row['baseline']} | {ratio_text(row['ratio'])} | "
        f"goal {row['goal']} | met {'yes' if row['met'] else 'NO'}"
    )


def plain(row: Row) -> Row:
    """The row as results.json holds it: the table's columns (ratio a finite number or null) and
    why it was skipped or failed; not the raw figures some benchmarks add for their own report."""
    ratio = row.get("ratio")
    out: Row = {
        "name": str(row["name"]),
        "dynosim": str(row["dynosim"]),
        "baseline": str(row["baseline"]),
        "ratio": float(ratio) if isinstance(ratio, int | float) and math.isfinite(ratio) else None,
        "goal": str(row["goal"]),
        "met": bool(row["met"]),
    }
    for key in ("skipped", "error", "traceback"):
        if key in row:
            out[key] = str(row[key])
    return out


def write_results(started: str, quick: bool, only: str | None, rows: list[Row]) -> None:
    """bench/results.json, replaced whole (temp file + rename) so a reader never sees half of it."""
    document = {
        "date": started,
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "quick": quick,
        "only": only,
        "results": [plain(row) for row in rows],
    }
    fd, temp = tempfile.mkstemp(prefix=".results-", suffix=".json", dir=RESULTS.parent)
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(document, file, indent=2, ensure_ascii=False, allow_nan=False)
            file.write("\n")
        os.replace(temp, RESULTS)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def print_table(results: list[Row]) -> None:
    rows = [
        (
            str(r["name"]),
            str(r["dynosim"]),
            str(r["baseline"]),
            ratio_text(r["ratio"]),
            str(r["goal"]),
            "yes" if r["met"] else "NO",
        )
        for r in results
    ]
    headers = ("benchmark", "dynosim (median)", "baseline (median)", "dynosim/baseline", "goal", "met")
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
        for row in (headers, *rows):
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)))
    else:
        table = Table(title="dynosim benchmarks")
        for header in headers:
            table.add_column(header)
        for row in rows:
            table.add_row(*row)
        Console(width=160).print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 start-ups, 2 floods, 1 memory run of each")
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help=f"run only these benchmarks, by module ({', '.join(NAMES)}) or by title as in the table, e.g. 'pg:pull'",
    )
    args = parser.parse_args()
    try:
        chosen = select(args.only)
    except ValueError as error:
        parser.error(str(error))
    wanted = [(r, b.module) for b in chosen for r in (*b.needs, *b.baselines)]
    users = sorted({module for r, module in wanted if find(r) is None})
    provide([r for r, _ in wanted], f"{', '.join(users)} run them")
    if any(b.docker for b in chosen):
        provide_docker_images()
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    results: list[Row] = []
    try:
        for benchmark in chosen:
            print(f"running {benchmark.title}…", file=sys.stderr, flush=True)
            rows = run_one(benchmark, args.quick)
            results.extend(rows)
            for row in rows:
                print(one_line(row), flush=True)
            write_results(started, args.quick, args.only, results)
    except KeyboardInterrupt:
        print(f"interrupted; the {len(results)} row(s) done are in {RESULTS}", file=sys.stderr)
        print_table(results)
        return 130
    print_table(results)
    print(f"written to {RESULTS}", file=sys.stderr)
    return 0 if all(r["met"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
