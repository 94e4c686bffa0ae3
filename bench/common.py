"""What the benchmarks share: a temp app folder, the two commands, starting and stopping them.

dynosim and its baseline (honcho) are launched the same way: the console scripts next to this
interpreter (not pyenv shims), stdin closed, in a session of their own, stopped with SIGINT
as Ctrl-C would, and checked to have left nothing behind.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
# Not under /tmp: every dyno gets a private /tmp, so the slug cache must live elsewhere.
CACHE_DIR = Path(os.environ.get("DYNOSIM_BENCH_CACHE", "/var/tmp/dynosim-bench-cache"))
WORK_DIR = Path(os.environ.get("DYNOSIM_BENCH_WORK", "/var/tmp/dynosim-bench"))
PYCACHE = WORK_DIR / "pycache"


def tool(name: str) -> str:
    found = BIN / name
    return str(found) if found.exists() else (shutil.which(name) or name)


def make_app(name: str, files: dict[str, str]) -> Path:
    """A fresh app folder under WORK_DIR holding these files (a Procfile among them), and the
    requirements.txt without which Heroku's Python buildpack refuses an app (empty unless given)."""
    app = WORK_DIR / name
    shutil.rmtree(app, ignore_errors=True)
    app.mkdir(parents=True)
    for file, text in {"requirements.txt": "", **files}.items():
        (app / file).write_text(text)
    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dynosim_argv(*args: str) -> list[str]:
    """`dynosim run`, to be launched in the app's folder as a user would, reading its bytecode
    from PYCACHE (see prime_bytecode). DYNOSIM_BENCH_NO_BYTECODE=1 measures it without."""
    if os.environ.get("DYNOSIM_BENCH_NO_BYTECODE"):
        return [tool("dynosim"), "run", *args]
    return [sys.executable, "-X", f"pycache_prefix={prime_bytecode()}", tool("dynosim"), "run", *args]


@functools.cache
def prime_bytecode() -> Path:
    """Bytecode for dynosim, outside the repo. An editable install has no .pyc files and this
    machine sets PYTHONDONTWRITEBYTECODE, so dynosim would compile every module at every start
    while honcho, installed by pip, has its bytecode. One process writes the bytecode of what
    the supervisor imports into PYCACHE; the measured runs keep PYTHONDONTWRITEBYTECODE (nothing
    they start writes bytecode anywhere) and only read it there (-X pycache_prefix, which,
    unlike PYTHONPYCACHEPREFIX, reaches neither pip nor the dynos)."""
    PYCACHE.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in dynosim_env().items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-X", f"pycache_prefix={PYCACHE}", "-c", _PRIME], env=env, cwd=PYCACHE, check=True)
    return PYCACHE


_PRIME = """\
import compileall, importlib, dynosim, dynosim.cli, dynosim.api
for lazy in ("watchdog.observers", "watchdog.events", "rich.console", "cryptography.x509",
             "cryptography.hazmat.primitives.asymmetric.ec", "httptools", "psutil", "pathspec", "html",
             "tarfile", "hashlib", "secrets", "aiohttp.web"):  # what a run imports after its start, too
    # (aiohttp.web: the dashboard's, imported on the run's loop as the dynos boot; uncompiled, it
    # held the loop, the router's too, for 150-340 ms of a start)
    try:
        importlib.import_module(lazy)
    except ImportError:
        pass
compileall.compile_dir(dynosim.__path__[0], quiet=1)
"""


def honcho_argv(*args: str) -> list[str]:
    """`honcho start`, to be launched in the app's folder (its processes inherit that cwd)."""
    return [tool("honcho"), "start", *args]


def dynosim_env() -> dict[str, str]:
    """The supervisor's environment: this one, with the slug cache outside /tmp and this
    repository's dynosim first on the path (an editable install may point at another checkout;
    dynos never see PYTHONPATH, pip's build drops it)."""
    path = os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH"))))
    return {**os.environ, "DYNOSIM_CACHE_DIR": str(CACHE_DIR), "PYTHONPATH": path}


def command_name(argv: list[str]) -> str:
    """`dynosim run` or `honcho start`, for messages (argv may start with the interpreter)."""
    names = [Path(a).name for a in argv]
    for name in ("dynosim", "honcho"):
        if name in names:
            i = names.index(name)
            return " ".join([name, *argv[i + 1 : i + 2]])
    return names[0]


def launch(argv: list[str], env: dict[str, str], cwd: Path, stdout=subprocess.DEVNULL) -> psutil.Popen:
    return psutil.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: psutil.Popen, timeout: float = 40) -> None:
    """SIGINT (Ctrl-C) to the supervisor only; wait for it and everything it started."""
    try:
        family = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = [proc]
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    proc.wait(timeout)
    _gone, alive = psutil.wait_procs(family, timeout=5)
    if alive:
        for leftover in alive:
            leftover.kill()
        raise RuntimeError(f"{command_name(proc.args)} left processes running: {[p.pid for p in alive]}")


def find_venv(supervisor: psutil.Process) -> Path:
    """The virtualenv dynosim gave its dynos: the first PATH entry of a process with $DYNO
    (not a guess from the cache, which may hold other apps' virtualenvs)."""
    for child in supervisor.children(recursive=True):
        try:
            env = child.environ()
        except psutil.Error:
            continue
        if "DYNO" in env:
            return Path(env["PATH"].split(":")[0]).parent
    raise RuntimeError("no running dyno carries $DYNO: cannot tell which virtualenv dynosim uses")


def honcho_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DYNOSIM")}


def dyno_env_for_honcho(venv: Path) -> dict[str, str]:
    """honcho's environment for the sample app: the same venv first on PATH and the same knobs
    dynosim sets for a standard-1x web dyno."""
    env = honcho_env()
    env.update(
        PATH=f"{venv}/bin:{os.environ['PATH']}",
        PYTHONUNBUFFERED="true",
        WEB_CONCURRENCY="2",
        GUNICORN_CMD_ARGS="--access-logfile -",
        FORWARDED_ALLOW_IPS="*",
    )
    return env


def median(values: list[float]) -> float:
    return statistics.median(values)


def mad(values: list[float]) -> float:
    """Median absolute deviation: how far a value of these typically is from their median."""
    centre = median(values)
    return median([abs(v - centre) for v in values])


def spread(values: list[float]) -> str:
    return f"{min(values):.3g}–{max(values):.3g}"


# --- what the benchmarks need from the machine --------------------------------------------------


class Unavailable(RuntimeError):
    """A benchmark, or one of its baselines, cannot run on this machine; the message says what is
    missing and how to get it."""


@dataclass(frozen=True)
class Requirement:
    """A command a benchmark runs (any of `commands`), the Debian packages that provide it, in the
    order to try them, and how a user gets it otherwise."""

    commands: tuple[str, ...]
    packages: tuple[str, ...]
    hint: str

    @property
    def name(self) -> str:
        return self.commands[0]


NGINX = Requirement(("nginx",), ("nginx-light", "nginx"), "apt-get install nginx-light")
WRK = Requirement(("wrk",), ("wrk",), "apt-get install wrk")
CHROMIUM = Requirement(("chromium", "chromium-browser"), ("chromium",), "apt-get install chromium")
HONCHO = Requirement(("honcho",), (), "pip install -e '.[test]', as `make install` does")
# nginx lives in /usr/sbin, which a user's PATH may lack.
SBIN = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))
DOCKER_IMAGE = "dynosim-test/postgres:15"  # what bench/addons.py runs unless DYNOSIM_POSTGRES_IMAGE says otherwise


def find(requirement: Requirement) -> str | None:
    """The command's path: next to this interpreter, on PATH or in an sbin folder; None if nowhere."""
    for command in requirement.commands:
        if (BIN / command).exists():
            return str(BIN / command)
        found = shutil.which(command) or shutil.which(command, path=SBIN)
        if found:
            return found
    return None


def missing(requirement: Requirement) -> str:
    return f"{requirement.name} not found ({requirement.hint})"


def require(requirement: Requirement) -> str:
    found = find(requirement)
    if found is None:
        raise Unavailable(missing(requirement))
    return found


def can_install() -> bool:
    """Root on a machine with apt-get: the benchmarks may install what they need."""
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def provide(requirements: Iterable[Requirement], why: str) -> None:
    """Installs with apt-get those of `requirements` that are missing, when we may (see can_install),
    saying so in one line; a package that will not install is named in one more. Whatever is still
    missing afterwards, the benchmark needing it skips with a line of its own."""
    wanted = list(dict.fromkeys(r for r in requirements if r.packages and find(r) is None))
    if not wanted or not can_install():
        return
    names = ", ".join(r.packages[0] for r in wanted)
    print(f"bench: installing {names} with apt-get ({why})", file=sys.stderr, flush=True)
    updated = False
    for requirement in wanted:
        error = ""
        for package in requirement.packages:
            error = _apt_install(package)
            if error and not updated:  # a fresh machine's package lists may be stale or absent
                updated = True
                _apt(["update", "-qq"])
                error = _apt_install(package)
            if not error and find(requirement):
                break
        else:
            print(f"bench: could not install {requirement.name}: {error or 'not found after install'}", file=sys.stderr)


def _apt(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False, timeout=900
    )


def _apt_install(package: str) -> str:
    """Empty if `apt-get install package` succeeded, else its last line of complaint."""
    done = _apt(["install", "-y", "-qq", package])
    lines = (done.stderr or done.stdout).strip().splitlines()
    return "" if done.returncode == 0 else (lines[-1] if lines else f"apt-get exited with {done.returncode}")


def provide_docker_images() -> None:
    """Builds the docker add-on's local images with .ci/docker-images.sh (which also installs and
    starts the engine) when they are missing and we may; bench/addons.py notes docker skipped otherwise."""
    script = REPO / ".ci" / "docker-images.sh"
    image = os.environ.get("DYNOSIM_POSTGRES_IMAGE", DOCKER_IMAGE)
    if not can_install() or not script.exists() or _docker_has(image):
        return
    print(f"bench: building the docker test images with {script.relative_to(REPO)}", file=sys.stderr, flush=True)
    done = subprocess.run([str(script)], cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        print(
            f"bench: {script.relative_to(REPO)} failed ({done.returncode}); docker runs will be skipped",
            file=sys.stderr,
        )


def _docker_has(image: str) -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        inspect = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return inspect.returncode == 0
