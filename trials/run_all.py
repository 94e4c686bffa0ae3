"""Runs dynosim's reliability trials (issue 22) and prints one table: trial, runs, failures, figure, goal.

Every trial is drawn from one seed (`--seed`, or one picked and printed), so a failure can be replayed:
each failure is printed with its seed and the command that runs it again. `--short` runs a few cases of
each (CI: under 3 minutes in all). trials.json at the repo root gets one object per trial (trial, runs,
failures, figure, goal), replaced whole after each trial so a reader never sees half of it. A trial that
raises is a row of its own with one failure; the others still run. Exit status 1 when any trial failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    # the repo root in place of this folder: trials/http.py must not stand for the standard library's http
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from trials import data_loss, fuzz, http, kill, security, wipe
from trials.base import Failure, Result, replay_command

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "trials.json"
Row = dict[str, object]
SHOWN = 40  # failures printed per trial; a replay shows every one


@dataclass(frozen=True)
class Trial:
    run: Callable[[int, int], Result]
    short: int  # cases in `--short`
    long: int  # cases in `make trials`


# In the order issue 22 names them; a new one is its module and one line here.
TRIALS: dict[str, Trial] = {
    "kill": Trial(kill.run, short=3, long=200),
    "data-loss": Trial(data_loss.run, short=4, long=40),
    "wipe": Trial(wipe.run, short=2, long=20),
    "fuzz": Trial(fuzz.run, short=500, long=10_000),
    "http": Trial(http.run, short=61, long=610),
    "security": Trial(security.run, short=1, long=3),
}


def select(only: str | None) -> list[str]:
    """The trials `--only` names (comma-separated), in the table's order; all without it."""
    if not only:
        return list(TRIALS)
    wanted = [name.strip().lower() for name in only.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(TRIALS))
    if unknown:
        raise ValueError(f"no trial named {', '.join(unknown)}; choose from {', '.join(TRIALS)}")
    return [name for name in TRIALS if name in wanted]


def run_one(name: str, count: int, seed: int) -> Result:
    """The trial's result, or one failure saying what it raised: never an exception."""
    try:
        return TRIALS[name].run(count, seed)
    except Exception as error:
        first = f"{type(error).__name__}: {error}".splitlines()[0]
        trace = traceback.format_exc()
        print(trace, file=sys.stderr)
        failure = Failure(f"the trial itself raised {first}", replay_command(name, seed, count))
        return Result(runs=0, failures=(failure,), figure=f"failed: {first}", goal="-")


def row(name: str, result: Result) -> Row:
    return {
        "trial": name,
        "runs": result.runs,
        "failures": len(result.failures),
        "figure": result.figure,
        "goal": result.goal,
    }


def write_results(rows: list[Row], path: Path) -> None:
    """trials.json, replaced whole (temp file + rename)."""
    fd, temp = tempfile.mkstemp(prefix=".trials-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(rows, file, indent=2, ensure_ascii=False)
            file.write("\n")
        os.chmod(temp, 0o644)  # mkstemp's 0600 is for secrets; this is a report
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def print_table(rows: list[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="dynosim reliability trials")
    for header in ("trial", "runs", "failures", "figure", "goal"):
        table.add_column(header, justify="right" if header in ("runs", "failures") else "left")
    for r in rows:
        failures = str(r["failures"])
        table.add_row(
            str(r["trial"]),
            f"{r['runs']:,}",
            failures if r["failures"] == 0 else f"[bold red]{failures}[/]",
            str(r["figure"]),
            str(r["goal"]),
        )
    Console(width=160).print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="a few cases of each trial (CI)")
    parser.add_argument("--only", metavar="NAME[,NAME]", help=f"run only these trials ({', '.join(TRIALS)})")
    parser.add_argument("--seed", type=int, help="the seed every trial draws from (default: one picked and printed)")
    parser.add_argument("--count", type=int, help="cases of each trial, instead of its short or long count")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"where the JSON goes (default: {RESULTS})")
    args = parser.parse_args()
    try:
        chosen = select(args.only)
    except ValueError as error:
        parser.error(str(error))
    if args.count is not None and args.count < 1:
        parser.error("--count must be 1 or more")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    print(f"seed {seed} (replay with --seed {seed})", file=sys.stderr, flush=True)
    rows: list[Row] = []
    failed = False
    try:
        for name in chosen:
            trial = TRIALS[name]
            count = args.count or (trial.short if args.short else trial.long)
            print(f"running {name} ({count:,} cases)…", file=sys.stderr, flush=True)
            started = time.monotonic()
            result = run_one(name, count, seed)
            rows.append(row(name, result))
            write_results(rows, args.output)
            took = time.monotonic() - started
            print(f"{name}: {result.figure} (goal {result.goal}) in {took:.1f}s", file=sys.stderr, flush=True)
            failed = failed or bool(result.failures)
            for failure in result.failures[:SHOWN]:
                print(f"  FAILED {name} (seed {seed}): {failure.description}", file=sys.stderr)
                print(f"    replay: {failure.replay}", file=sys.stderr, flush=True)
            if len(result.failures) > SHOWN:
                rest = len(result.failures) - SHOWN
                print(f"  … and {rest:,} more; replay: {result.failures[-1].replay}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print(f"interrupted; the {len(rows)} trial(s) done are in {args.output}", file=sys.stderr)
        print_table(rows)
        return 130
    print_table(rows)
    print(f"written to {args.output}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
