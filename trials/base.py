"""What every trial returns: its runs, its failures (each with the command that replays it), its figure."""

from __future__ import annotations

import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class Failure:
    """One failed case: what went wrong (one line, the input named) and the command that runs it again."""

    description: str
    replay: str


@dataclass(frozen=True)
class Result:
    runs: int  # cases (or rounds) that ran
    failures: tuple[Failure, ...]
    figure: str  # what was measured, as the table prints it: "0 tracebacks in 10,000 cases"
    goal: str  # "0 tracebacks"


def replay_command(trial: str, seed: int, count: int) -> str:
    """The command that runs `trial` again with the same seed and count, so its cases come out the same."""
    return shlex.join(["python", "trials/run_all.py", "--only", trial, "--seed", str(seed), "--count", str(count)])
