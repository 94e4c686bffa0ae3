"""What the benchmarks share: a temp copy of an app, the two commands, starting and stopping them.

dynosim and its baseline (honcho) are launched the same way: the console scripts next to this
interpreter (not pyenv shims), stdin closed, in a session of their own, stopped with SIGINT
as Ctrl-C would, and checked to have left nothing behind.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
# Not under /tmp: every dyno gets a private /tmp, so the slug cache must live elsewhere.
CACHE_DIR = Path(os.environ.get("DYNOSIM_BENCH_CACHE", "/var/tmp/dynosim-bench-cache"))
WORK_DIR = Path(os.environ.get("DYNOSIM_BENCH_WORK", "/var/tmp/dynosim-bench"))


def tool(name: str) -> str:
    found = BIN / name
    return str(found) if found.exists() else (shutil.which(name) or name)


def make_app(name: str, files: dict[str, str]) -> Path:
    """A fresh app folder under WORK_DIR holding these files (a Procfile among them)."""
    app = WORK_DIR / name
    shutil.rmtree(app, ignore_errors=True)
    app.mkdir(parents=True)
    for file, text in files.items():
        (app / file).write_text(text)
    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dynosim_argv(*args: str) -> list[str]:
    """`dynosim run`, to be launched in the app's folder as a user would."""
    return [tool("dynosim"), "run", *args]


def honcho_argv(*args: str) -> list[str]:
    """`honcho start`, to be launched in the app's folder (its processes inherit that cwd)."""
    return [tool("honcho"), "start", *args]


def dynosim_env() -> dict[str, str]:
    """The supervisor's environment. Its bytecode goes to a cache outside the repo: an editable
    install has no .pyc files and this machine sets PYTHONDONTWRITEBYTECODE, so dynosim would
    otherwise compile every module at every start, while honcho (installed by pip) has its
    bytecode. DYNOSIM_BENCH_NO_BYTECODE=1 measures that case. Dynos never see these variables."""
    env = {**os.environ, "DYNOSIM_CACHE_DIR": str(CACHE_DIR)}
    if not os.environ.get("DYNOSIM_BENCH_NO_BYTECODE"):
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(WORK_DIR / "pycache")
    return env


def launch(argv: list[str], env: dict[str, str], cwd: Path, stdout=subprocess.DEVNULL) -> psutil.Popen:
    return psutil.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout,
                        stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: psutil.Popen, timeout: float = 40) -> None:
    """SIGINT (Ctrl-C) to the supervisor only; wait for it and everything it started."""
    try:
        family = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        family = [proc]
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    proc.wait(timeout)
    gone, alive = psutil.wait_procs(family, timeout=5)
    if alive:
        for leftover in alive:
            leftover.kill()
        raise RuntimeError(f"{proc.args[0]} left processes running: {[p.pid for p in alive]}")


def find_venv(supervisor: psutil.Process) -> Path:
    """The virtualenv dynosim gave its dynos: the first PATH entry of a process with $DYNO."""
    for child in supervisor.children(recursive=True):
        try:
            env = child.environ()
        except psutil.Error:
            continue
        if "DYNO" in env:
            return Path(env["PATH"].split(":")[0]).parent
    complete = sorted((CACHE_DIR / "venvs").glob("*/.complete"), key=lambda p: p.stat().st_mtime)
    if not complete:
        raise RuntimeError(f"no dyno and no virtualenv under {CACHE_DIR}/venvs")
    return complete[-1].parent


def honcho_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DYNOSIM")}


def dyno_env_for_honcho(venv: Path) -> dict[str, str]:
    """honcho's environment for the sample app: the same venv first on PATH and the same knobs
    dynosim sets for a standard-1x web dyno."""
    env = honcho_env()
    env.update(PATH=f"{venv}/bin:{os.environ['PATH']}", PYTHONUNBUFFERED="true", WEB_CONCURRENCY="2",
               GUNICORN_CMD_ARGS="--access-logfile -", FORWARDED_ALLOW_IPS="*")
    return env


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    return f"{min(values):.3g}–{max(values):.3g}"
