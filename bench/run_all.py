"""Runs the benchmarks of issue 2 (start-up, log throughput, supervisor memory), of issues 3, 4, 5, 6 and 8
(add-on start, dyno cycle, router, control socket and idle CPU, TLS), of issue 17 (dynosim ci), of issue 18
(pg:backups and pg:pull of a 1 GB database; 200 MB with --quick) and of issue 19 (the router with no fault on,
faults switched on and off) and of issue 20 (the router with 1-second metrics on, an hour of them held; idle CPU with the dashboard open), each against its baseline measured side by side, and prints a summary table.
`--quick` runs fewer rounds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import (
    addons,
    ci,
    control,
    cycle,
    dashboard,
    faults_switch,
    logs,
    memory,
    metrics,
    pg_backups,
    router,
    router_faults,
    startup,
    tls,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 start-ups, 2 floods, 1 memory run of each")
    quick = parser.parse_args().quick
    results = []
    for title, run in (
        ("start-up", lambda: startup.measure(3 if quick else 9)),
        ("log throughput", lambda: logs.measure(2 if quick else 5, 200_000)),
        ("memory", lambda: memory.measure(1 if quick else 3, 2.0)),
        ("add-on start", lambda: addons.measure(3 if quick else 9, 1 if quick else 3)),
        ("cycle", lambda: cycle.measure(3 if quick else 7, 1 if quick else 3)),
        ("router (sample app)", lambda: router.measure(2 if quick else 5, "sample")),
        ("router (stdlib server)", lambda: router.measure(2 if quick else 5, "stdlib")),
        ("router, faults off", lambda: router_faults.measure(4 if quick else 12, 5 if quick else 20)),
        ("faults on and off", lambda: faults_switch.measure(3 if quick else 7)),
        ("metrics", lambda: metrics.measure(4 if quick else 12)),
        ("dashboard open", lambda: dashboard.measure(1 if quick else 3, 10.0 if quick else 20.0)),
        ("Heroku CI", lambda: ci.measure(2 if quick else 5)),
        ("pg:backups", lambda: pg_backups.measure_backups(2 if quick else 3, 200 if quick else 1024)),
        ("pg:pull", lambda: pg_backups.measure_pull(2 if quick else 3, 200 if quick else 1024)),  # the same run
        ("control socket and idle CPU", lambda: control.measure(100 if quick else 200, 15.0 if quick else 30.0)),
        (
            "TLS",
            lambda: (
                tls.measure(2 if quick else 9)
                or {
                    "name": "TLS vs plain through the router",
                    "dynosim": "skipped: router HTTPS not answering",
                    "baseline": "-",
                    "ratio": float("nan"),
                    "goal": "-",
                    "met": False,
                }
            ),
        ),
    ):
        print(f"running {title}…", file=sys.stderr, flush=True)
        results.append(run())
    rows = [
        (r["name"], r["dynosim"], r["baseline"], f"{r['ratio']:.2f}x", r["goal"], "yes" if r["met"] else "NO")
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
    return 0 if all(r["met"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
