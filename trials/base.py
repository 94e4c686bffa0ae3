"""What every trial returns: its runs, its failures (each with the command that replays it), its figure."""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_run(app: Path, port: int, args: list[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
    """`dynosim run -C APP --port PORT ARGS` in a session of its own (a trial signals it, or its group,
    alone), its output one text pipe, read line by line by the trial."""
    return subprocess.Popen(
        [sys.executable, "-m", "dynosim", "run", "-C", str(app), "--port", str(port), *args],
        cwd=app,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,
    )
