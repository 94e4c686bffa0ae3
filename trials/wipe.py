"""The wipe trial (issue 22): hostile dyno content before each wipe, and a count of what the wipe changed
outside the dyno.

Each case is a fresh copy of trials/apps/wipe, run with `--sandbox namespaces` or `copy` (alternating).
Its web dyno (hostile.py) fills its own filesystem, $HOME and its /tmp, with symlinks to folders and
files outside it, hard links to outside files, a bind mount of an outside folder where the sandbox lets
it mount, names with newlines and invalid UTF-8, read-only folders with files inside, and a
10,000-deep tree; what the sandbox refused (a hard link across mounts, a mount without the privilege)
is n/a, and said. Then the dyno's folder is wiped: by `dynosim ps:restart` (drawn from the seed) and by
the run's stop, or by the stop alone.

Outside the dyno are two sentinel folders, one the dyno sees (under the trial's work folder) and one
under this machine's /tmp, which a namespaced dyno does not see but a link to it resolves where the
wipe runs: each file's content, mode and mtime (and each folder's) must be the same after every wipe.
A wipe failed when the dyno's folder is still there after it, when the run prints a traceback, or
when dynosim's output has no one-line error saying why it left a folder.

Run alone: `python -m trials.wipe --count 2 --seed 22`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a file: this folder first on sys.path would shadow the stdlib's http
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from trials.base import Failure, Result, free_port, replay_command
from trials.kill import (
    EXIT_WAIT,
    TOKEN,
    WORK_DIR,
    Place,
    Run,
    answers,
    case_env,
    clean_up,
    new_app,
    traceback_in,
)

FIXTURE = Path(__file__).resolve().parent / "apps" / "wipe"
UP = r"heroku\[web\.1\]: State changed from starting to up"
HOSTILE = re.compile(r"app\[web\.1\]: hostile: (.*)")
WAIT = 90.0  # seconds for a dyno to come up, its content made


@dataclass(frozen=True)
class Case:
    index: int
    sandbox: str
    restart: bool  # `dynosim ps:restart` wipes the first dyno, the stop the second; else the stop alone

    def describe(self) -> str:
        how = "ps:restart, then the stop" if self.restart else "the stop"
        return f"case {self.index}: --sandbox {self.sandbox}, wiped by {how}"


def draw(count: int, seed: int) -> list[Case]:
    rng = random.Random(seed)
    return [Case(i, "namespaces" if i % 2 == 0 else "copy", rng.random() < 0.5) for i in range(count)]


def make_sentinel(folder: Path) -> None:
    (folder / "inner").mkdir(parents=True)
    (folder / "keep.txt").write_text("outside the dyno: a wipe must not touch this\n")
    (folder / "inner" / "deeper.txt").write_text("nor this\n")
    os.chmod(folder / "inner", 0o755)
    past = time.time() - 3600  # an hour old: a touch would show
    for path in (folder / "keep.txt", folder / "inner" / "deeper.txt", folder / "inner", folder):
        os.utime(path, (past, past))


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """relative path -> (mode, mtime_ns, content hash or link target) of the folder and all under it."""
    found: dict[str, tuple[int, int, str]] = {}
    for directory, dirs, files in os.walk(folder):
        for name in [".", *dirs, *files]:
            path = os.path.join(directory, name) if name != "." else directory
            if name == "." and directory != str(folder):
                continue
            info = os.lstat(path)
            if os.path.islink(path):
                what = "-> " + os.readlink(path)
            elif os.path.isfile(path):
                what = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            else:
                what = "dir"
            found[os.path.relpath(path, folder)] = (info.st_mode, info.st_mtime_ns, what)
    return found


def changed(before: dict[str, tuple[int, int, str]], folder: Path) -> list[str]:
    after = snapshot(folder) if folder.exists() else {}
    return sorted(
        f"{folder / path}: {'gone' if path not in after else 'new' if path not in before else 'changed'}"
        for path in before.keys() | after.keys()
        if before.get(path) != after.get(path)
    )


def dyno_folders(runtime_dir: Path) -> set[Path]:
    try:
        return {Path(entry.path) for entry in os.scandir(runtime_dir) if entry.name.startswith("web.1-")}
    except OSError:
        return set()


def explained(lines: list[str], folder: Path) -> bool:
    """Whether dynosim said, in one line, why it left `folder`."""
    return any(str(folder) in line and "Traceback" not in line for line in lines)


@dataclass
class Tally:
    wipes: int = 0
    changed: int = 0
    failed: int = 0
    refused: int = 0  # wipes that left the folder with a one-line error
    tracebacks: int = 0  # runs that printed one
    refused_parts: set[str] = field(default_factory=set)  # what a sandbox would not let the dyno make


def play(case: Case, tally: Tally) -> list[str]:
    problems: list[str] = []
    token = os.urandom(8).hex()
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    outside = Path(tempfile.mkdtemp(prefix="wipe-outside-", dir=WORK_DIR))
    host_tmp = Path(tempfile.mkdtemp(prefix="dynosim-wipe-outside-"))
    env_lines = {TOKEN: token, "WIPE_OUTSIDE": str(outside / "s"), "WIPE_HOST_TMP": str(host_tmp / "s")}
    sentinels: Sentinels = {}
    for folder in (outside / "s", host_tmp / "s"):
        make_sentinel(folder)
        sentinels[folder] = snapshot(folder)
    try:
        with new_app(f"wipe-{case.index}-", FIXTURE, env_lines) as place:
            env = case_env(token, "native")
            try:
                port = free_port()
                run = Run(place.app, port, case.sandbox, "native", env)
                try:
                    problems += wipes(case, run, place, port, env, sentinels, tally)
                finally:
                    if run.proc.poll() is None:
                        run.kill_group()
            finally:
                clean_up(place, False)
    finally:
        for folder in (outside, host_tmp):
            subprocess.run(["umount", "-R", "-l", str(folder)], capture_output=True, check=False)
            shutil.rmtree(folder, ignore_errors=True)
    return problems


Sentinels = dict[Path, dict[str, tuple[int, int, str]]]


def wipes(
    case: Case, run: Run, place: Place, port: int, env: dict[str, str], sentinels: Sentinels, tally: Tally
) -> list[str]:
    problems: list[str] = []

    def hostile_up(start: int) -> str | None:
        at = run.wait_for(UP, WAIT, start)
        line = run.wait_for(HOSTILE.pattern, WAIT, start)
        if at is None or line is None:
            return None
        match = HOSTILE.search(run.seen()[line])
        return match.group(1) if match else None

    def check(how: str, gone: set[Path]) -> None:
        tally.wipes += 1
        outside = [entry for folder, before in sentinels.items() for entry in changed(before, folder)]
        tally.changed += len(outside)
        if outside:
            problems.append(f"the wipe by {how} changed outside the dyno: {'; '.join(outside[:5])}")
        left = sorted(folder for folder in gone if os.path.lexists(folder))
        if left:
            if all(explained(run.seen(), folder) for folder in left):
                tally.refused += 1
            else:
                tally.failed += 1
                problems.append(f"the wipe by {how} left {', '.join(map(str, left))} without a word")

    made = hostile_up(0)
    if made is None:
        return [f"the hostile dyno never came up; last lines: {run.tail()}"]
    refused = [f"{case.sandbox} {part.replace(' n/a', '')}" for part in made.split(", ") if " n/a " in part]
    tally.refused_parts.update(refused)
    if case.restart:
        first = dyno_folders(place.runtime_dir)
        start = len(run.seen())
        done = subprocess.run(
            [sys.executable, "-m", "dynosim", "ps:restart", "web", "-C", str(place.app)],
            env=env,
            capture_output=True,
            text=True,
            timeout=EXIT_WAIT,
            check=False,
        )
        if done.returncode != 0 or "Traceback" in done.stderr:
            problems.append(f"`dynosim ps:restart web` failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        if hostile_up(start) is None:
            problems.append(f"the restarted dyno never came up; last lines: {run.tail()}")
        elif (answer := answers(port, WAIT)) is not None:
            problems.append(f"the router never answered 200 after the restart ({answer})")
        check("ps:restart", first)
    last = dyno_folders(place.runtime_dir)
    run.proc.send_signal(signal.SIGINT)
    if not run.exited(EXIT_WAIT):
        problems.append(f"the run still ran {EXIT_WAIT:.0f} s after SIGINT; last lines: {run.tail()}")
        run.kill_group()
    check("the stop", last)
    found = traceback_in(run.seen())
    if found:
        tally.tracebacks += 1
        problems.append(f"a traceback in the run's output ({found})")
    return problems


def run(count: int, seed: int) -> Result:
    cases = draw(count, seed)
    replay = replay_command("wipe", seed, count)
    tally = Tally()
    failures: list[Failure] = []
    for case in cases:
        problems = play(case, tally)
        if problems:
            failures.append(Failure(f"{case.describe()}: {'; '.join(problems)}", replay))
    refused = f", {tally.refused} refused in one line" if tally.refused else ""
    return Result(
        runs=tally.wipes,
        failures=tuple(failures),
        figure=(
            f"{tally.changed} files changed outside the dyno in {tally.wipes} wipes; {tally.failed} wipes failed"
            f"{refused}; {tally.tracebacks} of {len(cases)} runs printed a traceback"
            f"{'; n/a: ' + ', '.join(sorted(tally.refused_parts)) if tally.refused_parts else ''}"
        ),
        goal="0 changed; 0 failed (or a one-line error)",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--seed", type=int, default=22)
    args = parser.parse_args()
    result = run(args.count, args.seed)
    print(result.figure)
    for failure in result.failures:
        print("FAILED", failure.description)
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
