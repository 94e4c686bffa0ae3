"""The sandbox as users run it: as themselves, not root (CI runs as root, so run as `nobody`)."""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import FIXTURES, ROOT

BASE = Path("/var/tmp/dynosim-nobody")
SANDBOXES = ["namespaces", "copy"]


@pytest.fixture(scope="session")
def nobody() -> dict[str, object]:
    """A Python that `nobody` can run, with this checkout of dynosim installed in it."""
    if os.geteuid() != 0 or shutil.which("runuser") is None or not Path("/usr/bin/python3").exists():
        pytest.skip("needs root, runuser and /usr/bin/python3 to run dynosim as another user")
    user = pwd.getpwnam("nobody")
    BASE.mkdir(parents=True, exist_ok=True)
    venv = BASE / "venv"
    with open(BASE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers share it
        if not (venv / "bin" / "python").exists():
            subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "-q", "--python", str(venv / "bin" / "python"), "install", str(ROOT)],
            check=True,
            capture_output=True,
        )
        for folder in ("cache", "apps"):
            (BASE / folder).mkdir(exist_ok=True)
            os.chown(BASE / folder, user.pw_uid, user.pw_gid)
    return {
        "uid": user.pw_uid,
        "gid": user.pw_gid,
        "python": ["runuser", "-u", "nobody", "--", str(venv / "bin" / "python")],
    }


def nobody_app(nobody, name: str, procfile: str) -> Path:
    app = BASE / "apps" / f"{name}-{os.getpid()}-{time.monotonic_ns()}"
    shutil.copytree(FIXTURES / "dynolab", app)
    (app / "Procfile").write_text(procfile)
    for path in [app, *app.rglob("*")]:
        os.chown(path, nobody["uid"], nobody["gid"])
    return app


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.read().decode()


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_an_unprivileged_user_gets_the_same_promises(nobody, dynosim, sandbox):
    app = nobody_app(nobody, sandbox, "web: python server.py\n")
    try:
        run = dynosim(
            app,
            "--sandbox",
            sandbox,
            "--cycle-every",
            "3s",
            "--no-jitter",
            python=nobody["python"],
            env={"DYNOSIM_CACHE_DIR": str(BASE / "cache")},
        )
        notice = run.wait_for(rf"dyno sandbox: {sandbox} .*").group(0)
        assert ("dynos run as" in notice) == (sandbox == "copy"), notice  # as nobody too: a user, /app, a host name
        run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
        body = json.loads(get(run.port, "/"))
        assert body["cwd"] != str(app) and body["env"]["HOME"] == body["cwd"]
        if sandbox == "namespaces":  # Heroku's layout needs no privilege: the slug at /app
            assert body["cwd"] == "/app"
        get(run.port, "/write/notes.txt")
        assert get(run.port, "/read/notes.txt") == "written by web.1"
        run.wait_for(r"heroku\[web\.1\]: Cycling", timeout=20, after_last=True)
        run.wait_for(r"heroku\[web\.1\]: State changed from starting to up", after_last=True)
        assert get(run.port, "/read/notes.txt") == "missing"
        assert not (app / "notes.txt").exists()
        pids = [p.pid for p in psutil.Process(run.proc.pid).children(recursive=True)]
        assert run.stop() == 0
        time.sleep(0.5)
        assert not [
            pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        ]
    finally:
        shutil.rmtree(app, ignore_errors=True)


def test_an_unprivileged_supervisor_killed_with_sigkill_leaves_nothing(nobody, dynosim):
    app = nobody_app(nobody, "kill", "web: python forker.py\n")
    try:
        run = dynosim(
            app, "--sandbox", "namespaces", python=nobody["python"], env={"DYNOSIM_CACHE_DIR": str(BASE / "cache")}
        )
        run.wait_for(r"heroku\[web\.1\]: State changed from starting to up")
        supervisor = run.supervisor()
        pids = [p.pid for p in supervisor.children(recursive=True)]
        assert len(pids) >= 4
        supervisor.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(psutil.pid_exists(pid) for pid in pids):
            time.sleep(0.05)
        assert not [
            pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        ]
        run.proc.wait(10)
    finally:
        shutil.rmtree(app, ignore_errors=True)
