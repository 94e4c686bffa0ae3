"""The kill trial (issue 22): `dynosim run` stopped by SIGINT, SIGTERM or SIGKILL at a random moment, and a
count of what it left behind.

Each case is a fresh copy of trials/apps/kill (a web dyno that ignores SIGTERM, a worker whose daemon
double-forks out of the dyno's tree, a release phase; heroku-postgresql and heroku-redis from app.json)
in a git repository of its own, run with `--sandbox namespaces` or `copy` (alternating) and native
add-ons, or docker ones every other pair of cases when a Docker engine with the test images answers.
The signal goes to dynosim's pid (as `kill PID` would) at a moment read off its output, plus a delay
drawn from the seed: during the build, the add-ons' start, the release phase, the boot, the steady
state, a `dynosim ps:restart` or a `dynosim deploy` of a new commit.

After the stop (SIGINT and SIGTERM: once dynosim has exited; SIGKILL: at once, as after a crash, with
SETTLE seconds for the docker watcher and the kernel) the trial counts what is left of the case:
processes (any whose environment carries the case's token, which dynosim and, as a config var, every
dyno process get, or whose command line names the case's folder: daemons reparented to init included),
the app's running containers (by dynosim's label), mounts under the case's folders (mountinfo), listening
ports (the router's, the web dynos', the add-ons' recorded ones) and dyno folders in the app's run folder
and build folders in the slug cache. After a SIGKILL the app's run folder, run.json and a build
folder are the next start's to clear (nothing else can), so they count only after the next start. Then the app is started
again: it must come up clean (web answers 200 through the router within NEXT_START seconds, no
traceback) and, stopped with SIGINT, leave nothing at all.

Run alone: `python -m trials.kill --count 4 --seed 22`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a file: this folder first on sys.path would shadow the stdlib's http
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from trials.base import Failure, Result, free_port, replay_command, start_run

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "trials" / "apps" / "kill"
# not under /tmp: a dyno gets a private /tmp, so the app and the slug cache live elsewhere
WORK_DIR = Path(os.environ.get("DYNOSIM_TRIALS_WORK", "/var/tmp/dynosim-trials"))
# the trial's own slug cache, so a build folder left in it is this trial's
CACHE_DIR = Path(os.environ.get("DYNOSIM_TRIALS_KILL_CACHE", "/var/tmp/dynosim-trials-kill-cache"))
CA_DIR = Path(os.environ.get("DYNOSIM_TRIALS_CA", "/var/tmp/dynosim-trials-ca"))  # not the user's own CA
TOKEN = "DYNOSIM_KILL_TRIAL"  # the case's mark, in dynosim's environment and every dyno's config vars
DOCKER_IMAGES = {  # what .ci/docker-images.sh builds: no registry is reached
    "DYNOSIM_POSTGRES_IMAGE": "dynosim-test/postgres:15",
    "DYNOSIM_REDIS_IMAGE": "dynosim-test/redis:7",
}
STOP_TIMEOUT = 2  # the web dyno ignores SIGTERM: Heroku's SIGKILL after the grace, sooner than 30 s
EXIT_WAIT = 60.0  # seconds a SIGINT or SIGTERM has to end dynosim
SETTLE = 10.0  # seconds what was stopped has to go (the docker watcher's `docker stop`, the kernel's reaping)
NEXT_START = 90.0  # seconds the next start has to answer 200
PHASE_WAIT = 90.0  # seconds to wait for the line that opens a moment
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
# each moment: the line that opens it, and the longest delay after it (seconds)
MOMENTS: dict[str, tuple[str, float]] = {
    "build": (r"-----> Building source", 0.15),
    "add-on start": (r"-----> Starting add-ons", 0.8),
    "release": (r"Running release v\d+ commands", 1.2),
    "boot": (r"app\[api\]: Scaled to", 0.15),
    "steady state": (r"heroku\[web\.1\]: State changed from starting to up", 1.0),
    "restart": (r"heroku\[web\.1\]: Stopping all processes with SIGTERM", STOP_TIMEOUT + 1.5),
    "deploy": (r"app\[api\]: Deploy \S+ by user", 3.0),
}
# the lines of each moment as it happens, in order: which one a signal came in is the last one seen
PHASES = [
    ("build", r"-----> Building source"),
    ("add-on start", r"-----> Starting add-ons"),
    ("release", r"Running release v\d+ commands"),
    ("boot", r"app\[api\]: Scaled to"),
    ("steady state", r"heroku\[web\.1\]: State changed from starting to up"),
    ("restart", r"heroku\[web\.1\]: Stopping all processes with SIGTERM"),
    ("deploy", r"app\[api\]: Deploy \S+ by user"),
]
UP_LINES = (
    r"heroku\[web\.1\]: State changed from starting to up",
    r"heroku\[worker\.1\]: State changed from starting to up",
)


# -- the cases


@dataclass(frozen=True)
class Case:
    index: int
    signum: int
    moment: str
    delay: float  # seconds after the moment's line
    sandbox: str
    backend: str

    def describe(self) -> str:
        name = signal.Signals(self.signum).name
        return (
            f"case {self.index}: {name} during {self.moment} (+{self.delay:.2f} s), "
            f"--sandbox {self.sandbox}, {self.backend} add-ons"
        )


def draw(count: int, seed: int, docker: bool) -> list[Case]:
    """`count` cases from `seed`: every signal × moment once a cycle, each cycle shuffled; the sandboxes
    alternate, and the backends every other pair (docker only where an engine answers)."""
    rng = random.Random(seed)
    combos: list[tuple[int, str]] = []
    while len(combos) < count:
        cycle = list(itertools.product(SIGNALS, MOMENTS))
        rng.shuffle(cycle)
        combos.extend(cycle)
    cases = []
    for index, (signum, moment) in enumerate(combos[:count]):
        delay = round(rng.uniform(0, MOMENTS[moment][1]), 3)
        sandbox = "namespaces" if index % 2 == 0 else "copy"
        backend = "docker" if docker and index // 2 % 2 == 1 else "native"
        cases.append(Case(index, signum, moment, delay, sandbox, backend))
    return cases


def docker_ready() -> bool:
    """An engine answers and has the test images."""
    try:
        from dynosim.addons.backends.docker import NoEngine, probe
    except ImportError:
        return False
    try:
        client, _ = probe()
    except NoEngine:
        return False
    try:
        return all(client.images.list(name=image) for image in DOCKER_IMAGES.values())
    finally:
        client.close()


# -- one run of dynosim, its lines collected


class Run:
    """`dynosim run` of the case's app as a subprocess of its own session; its output lines collected."""

    def __init__(self, app: Path, port: int, sandbox: str, backend: str, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        args = ["--no-dashboard", "--sandbox", sandbox, "--addons", backend, "--stop-timeout", str(STOP_TIMEOUT)]
        self.proc = start_run(app, port, args, env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float, start: int = 0) -> int | None:
        """The index of the first line from `start` matching `pattern`, or None after `timeout` or the exit."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        index = start
        with self._cond:
            while True:
                while index < len(self.lines):
                    if regex.search(self.lines[index]):
                        return index
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return None
                self._cond.wait(min(remaining, 0.5))

    def seen(self) -> list[str]:
        with self._cond:
            return list(self.lines)

    def tail(self, n: int = 12) -> str:
        return " | ".join(line[-160:] for line in self.seen()[-n:])

    def exited(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        self._reader.join(5)
        return True

    def kill_group(self) -> None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.exited(10)


def traceback_in(lines: list[str]) -> str | None:
    for index, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            rest = [entry for entry in lines[index + 1 : index + 60] if entry and not entry.startswith(" ")]
            return rest[0][:160] if rest else "a traceback"
    return None


# -- what a case leaves


@dataclass
class Place:
    """One case's app and everything that names it."""

    folder: Path  # the case's own folder: the app is in it
    app: Path
    token: str
    runtime_dir: Path
    state_dir: Path
    ports: set[int] = field(default_factory=set)  # the router's and the web dynos' as the runs said them

    def addon_ports(self) -> set[int]:
        try:
            record = json.loads((self.state_dir / "addons.json").read_text())
        except (OSError, ValueError):
            return set()
        found: set[int] = set()

        def walk(value: object, key: str = "") -> None:
            if isinstance(value, dict):
                for name, inner in value.items():
                    walk(inner, str(name))
            elif isinstance(value, list):
                for inner in value:
                    walk(inner, key)
            elif isinstance(value, int) and not isinstance(value, bool) and key.endswith("port") and value > 0:
                found.add(value)

        walk(record)
        return found


def processes(place: Place) -> dict[int, str]:
    """pid -> command line of every process marked by the case's token, naming its folder or working in it."""
    mark = f"{TOKEN}={place.token}".encode()
    folder = str(place.folder).encode()
    me = os.getpid()
    found: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                cmdline = handle.read()
            with open(f"/proc/{name}/environ", "rb") as handle:
                environ = handle.read()
            with open(f"/proc/{name}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
            cwd = os.readlink(f"/proc/{name}/cwd").encode()
        except OSError:
            continue
        if state == b"Z":  # a zombie holds nothing; its parent reaps it
            continue
        if mark in environ.split(b"\0") or folder in cmdline or cwd == folder or cwd.startswith(folder + b"/"):
            found[int(name)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    return found


def mounts(place: Place) -> list[str]:
    roots = [str(place.folder), str(place.runtime_dir)]
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = line.split()[4].replace("\\040", " ")
            if any(point == root or point.startswith(root + "/") for root in roots):
                found.append(point)
    return found


def listening() -> set[int]:
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                next(handle)
                for line in handle:
                    fields = line.split()
                    if fields[3] == "0A":  # LISTEN
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            continue
    return ports


def containers(place: Place, docker: bool) -> list[str]:
    if not docker:
        return []
    import docker as docker_sdk

    from dynosim.addons.backends.docker import LABEL_APP, app_id

    client = docker_sdk.from_env(timeout=30)
    try:
        label = f"{LABEL_APP}={app_id(place.state_dir)}"
        return [c.name for c in client.containers.list(filters={"label": label, "status": "running"})]
    finally:
        client.close()


def build_folders() -> set[str]:
    with suppress(OSError):
        return {entry.name for entry in os.scandir(CACHE_DIR / "slugs") if entry.name.startswith(".build-")}
    return set()


def left_behind(place: Place, docker: bool, builds_before: set[str], *, folders: bool) -> list[str]:
    """What is left of the case, one short phrase each; `folders`: the run and build folders and run.json
    count too (after a SIGKILL they are the next start's and the next build's to clear)."""
    found = [f"process {pid} ({cmd})" for pid, cmd in sorted(processes(place).items())]
    found += [f"container {name} running" for name in containers(place, docker)]
    found += [f"mount {point}" for point in mounts(place)]
    open_ports = listening()
    found += [f"port {port} listening" for port in sorted((place.ports | place.addon_ports()) & open_ports)]
    if folders:
        found += [f"build folder {CACHE_DIR / 'slugs' / name}" for name in sorted(build_folders() - builds_before)]
        with suppress(OSError):
            found += [f"folder {entry.path}" for entry in os.scandir(place.runtime_dir)]
        if (place.state_dir / "run.json").exists():
            found.append(f"lock {place.state_dir / 'run.json'}")
    return found


def settled(place: Place, docker: bool, builds_before: set[str], *, folders: bool) -> list[str]:
    """left_behind once it stops shrinking to nothing, within SETTLE seconds."""
    deadline = time.monotonic() + SETTLE
    while True:
        found = left_behind(place, docker, builds_before, folders=folders)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.25)


def clean_up(place: Place, docker: bool) -> None:
    """The trial's own cleanup after a case, whatever it found: nothing of one case may meet the next."""
    for pid in processes(place):
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for point in sorted(mounts(place), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    if docker:
        remove_containers(place.state_dir)
    for folder in (place.runtime_dir, place.folder):
        subprocess.run(["rm", "-rf", "--one-file-system", str(folder)], capture_output=True, check=False)


def remove_containers(state_dir: Path) -> None:
    """The case's containers and volumes (the backend keeps them for the next run; the trial has none)."""
    import docker as docker_sdk

    from dynosim.addons.backends.docker import LABEL_APP, app_id

    client = docker_sdk.from_env(timeout=60)
    try:
        label = f"{LABEL_APP}={app_id(state_dir)}"
        for container in client.containers.list(all=True, filters={"label": label}):
            with suppress(docker_sdk.errors.APIError):
                container.remove(force=True, v=True)
        for volume in client.volumes.list(filters={"label": label}):
            with suppress(docker_sdk.errors.APIError):
                volume.remove(force=True)
    finally:
        client.close()


# -- one case


def git(app: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(app), "-c", "user.email=trials@dynosim.invalid", "-c", "user.name=trials", *args],
        check=True,
        capture_output=True,
    )


@contextmanager
def new_app(prefix: str, fixture: Path, env_lines: dict[str, str]) -> Iterator[Place]:
    """A fresh copy of `fixture` in a git repository, with `env_lines` in its .env (left uncommitted)."""
    from dynosim.app import load_app

    WORK_DIR.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=WORK_DIR))
    app = folder / "app"
    shutil.copytree(fixture, app)
    (app / ".gitignore").write_text(".env\n")
    git(app, "init", "-q")
    git(app, "add", "-A")
    git(app, "commit", "-qm", "the trial's app")
    (app / ".env").write_text("".join(f"{name}={value}\n" for name, value in env_lines.items()))
    loaded = load_app(app)
    place = Place(folder, app, env_lines.get(TOKEN, ""), loaded.runtime_dir, loaded.state_dir)
    yield place


def case_env(token: str, backend: str) -> dict[str, str]:
    env = {**os.environ, TOKEN: token, "DYNOSIM_CACHE_DIR": str(CACHE_DIR), "NO_COLOR": "1"}
    env["DYNOSIM_CA_DIR"] = os.environ.get("DYNOSIM_CA_DIR", str(CA_DIR))
    env.pop("PORT", None)
    if backend == "docker":
        env.update(DOCKER_IMAGES)
    return env


def cli(app: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dynosim", *args, "-C", str(app)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )


def phase_at(lines: list[str]) -> str:
    """The moment the last of `lines` is in: a restart or deploy only once the steady state was reached
    (the first release's Deploy line comes before it)."""
    current = "start-up"
    for line in lines:
        for name, pattern in PHASES:
            later = name not in ("restart", "deploy") or current in ("steady state", "restart", "deploy")
            if later and re.search(pattern, line):
                current = name
    return current


def up(run: Run, timeout: float) -> bool:
    return all(run.wait_for(pattern, timeout) is not None for pattern in UP_LINES)


def answers(port: int, timeout: float) -> str | None:
    """None once the router answers 200 within `timeout` seconds, else what it answered last."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                if response.status == 200:
                    return None
                last = f"status {response.status}"
        except urllib.error.HTTPError as error:
            last = f"status {error.code}"
        except OSError as error:
            last = str(error)[:80]
        time.sleep(0.3)
    return last


def web_ports(run: Run) -> set[int]:
    return {int(m.group(1)) for line in run.seen() if (m := re.search(r"web listening on (\d+)", line))}


def strike(case: Case, run: Run, place: Place, env: dict[str, str]) -> tuple[str | None, str, list[str]]:
    """Wait for the case's moment, send its signal: why the moment never came (None when it did), the
    moment the signal came in as dynosim's lines tell it, and the CLI's problems."""
    problems: list[str] = []
    at = "never"
    command: subprocess.Popen[str] | None = None
    start = 0
    if case.moment in ("restart", "deploy"):
        if not up(run, PHASE_WAIT):
            return "the dynos never came up", at, problems
        start = len(run.seen())
        if case.moment == "restart":
            command = cli(place.app, env, "ps:restart")
        else:
            (place.app / "deployed.txt").write_text(f"case {case.index}\n")
            git(place.app, "add", "deployed.txt")
            git(place.app, "commit", "-qm", "a deploy")
            command = cli(place.app, env, "deploy")
    pattern = MOMENTS[case.moment][0]
    if run.wait_for(pattern, PHASE_WAIT, start) is None:
        reason = f"its line /{pattern}/ never came"
    else:
        reason = None
        time.sleep(case.delay)
        with suppress(ProcessLookupError):
            os.kill(run.proc.pid, case.signum)
        at = phase_at(run.seen())
    if command is not None:
        try:
            output, _ = command.communicate(timeout=EXIT_WAIT)
        except subprocess.TimeoutExpired:
            command.kill()
            output, _ = command.communicate()
            problems.append(f"`dynosim {command.args[3]}` still running {EXIT_WAIT:.0f} s after the signal")
        found = traceback_in(output.splitlines())
        if found:
            problems.append(f"`dynosim {command.args[3]}` printed a traceback ({found})")
    return reason, at, problems


@dataclass(frozen=True)
class Outcome:
    problems: list[str]  # each a short phrase; none when the case passed
    left: int  # things left behind, after the signal's stop and after the next start's
    clean: bool  # the next start came up clean


def play(case: Case, docker: bool) -> Outcome:
    problems: list[str] = []
    left: list[str] = []
    clean = True
    token = os.urandom(8).hex()
    builds = build_folders()
    with new_app(f"kill-{case.index}-", FIXTURE, {TOKEN: token}) as place:
        env = case_env(token, case.backend)
        try:
            port = free_port()
            place.ports.add(port)
            run = Run(place.app, port, case.sandbox, case.backend, env)
            try:
                missed, at, cli_problems = strike(case, run, place, env)
                problems += cli_problems
                if missed:
                    problems.append(f"the moment never came: {missed}; last lines: {run.tail()}")
                    run.proc.send_signal(signal.SIGINT)
                elif at != case.moment:
                    problems.append(f"(the signal came in {at})")
                if (case.signum != signal.SIGKILL or missed) and not run.exited(EXIT_WAIT):
                    problems.append(f"still running {EXIT_WAIT:.0f} s after the signal; last lines: {run.tail()}")
                    run.kill_group()
                run.exited(EXIT_WAIT)
                place.ports |= web_ports(run)
                found = traceback_in(run.seen())
                if found:
                    problems.append(f"a traceback on the way down ({found})")
            finally:
                if run.proc.poll() is None:
                    run.kill_group()
            after = settled(place, docker, builds, folders=case.signum != signal.SIGKILL)
            if after:
                problems.append(f"left after the stop: {'; '.join(after)}")
            left += after
            port = free_port()
            place.ports.add(port)
            again = Run(place.app, port, case.sandbox, case.backend, env)
            try:
                if not up(again, NEXT_START):
                    clean = False
                    problems.append(f"the next start never came up; last lines: {again.tail()}")
                elif (answer := answers(port, NEXT_START)) is not None:
                    clean = False
                    problems.append(f"the next start's router never answered 200 ({answer})")
                again.proc.send_signal(signal.SIGINT)
                if not again.exited(EXIT_WAIT):
                    problems.append(f"the next start still ran {EXIT_WAIT:.0f} s after SIGINT")
                place.ports |= web_ports(again)
                found = traceback_in(again.seen())
                if found:
                    clean = False
                    problems.append(f"a traceback in the next start ({found})")
            finally:
                if again.proc.poll() is None:
                    again.kill_group()
            after = settled(place, docker, builds, folders=True)
            if after:
                problems.append(f"left after the next start's stop: {'; '.join(after)}")
            left += after
        finally:
            clean_up(place, docker)
    # a note of where the signal came in is no failure by itself
    failed = [p for p in problems if not p.startswith("(")]
    return Outcome(problems if failed else [], len(left), clean)


def run(count: int, seed: int) -> Result:
    docker = docker_ready()
    cases = draw(count, seed, docker)
    replay = replay_command("kill", seed, count)
    failures: list[Failure] = []
    left = 0
    clean = 0
    for case in cases:
        outcome = play(case, docker)
        left += outcome.left
        clean += outcome.clean
        if outcome.problems:
            failures.append(Failure(f"{case.describe()}: {'; '.join(outcome.problems)}", replay))
    backends = "native and docker add-ons" if docker else "native add-ons (no Docker engine with the test images)"
    return Result(
        runs=len(cases),
        failures=tuple(failures),
        figure=f"{left} left behind after {len(cases)} stops; {clean} of {len(cases)} next starts clean ({backends})",
        goal=f"0 left; {len(cases)} of {len(cases)} clean",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--case", type=int, help="play only this case of the draw")
    args = parser.parse_args()
    docker = docker_ready()
    for case in draw(args.count, args.seed, docker):
        if args.case is not None and case.index != args.case:
            continue
        started = time.monotonic()
        outcome = play(case, docker)
        took = time.monotonic() - started
        print(f"{case.describe()}: {'; '.join(outcome.problems) or 'clean'} ({took:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
