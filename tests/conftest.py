"""Shared helpers: run the real `dynosim` command on a copy of a fixture app and read its output."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
# Not under /tmp: a dyno gets a private /tmp, so slugs must live elsewhere.
CACHE_DIR = Path(os.environ.get("DYNOSIM_TEST_CACHE", "/var/tmp/dynosim-test-cache"))
# the tests' certificate authority, not the user's own
os.environ.setdefault("DYNOSIM_CA_DIR", "/var/tmp/dynosim-test-ca")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


def make_app(tmp_path: Path, fixture: str = "dynolab", procfile: str | None = None, **files: str) -> Path:
    app = tmp_path / "app"
    # not the state a `dynosim run -C fixtures/…` by hand left in the fixture (its ports, its add-ons' data)
    shutil.copytree(FIXTURES / fixture, app, ignore=shutil.ignore_patterns(".dynosim"))
    if procfile is not None:
        (app / "Procfile").write_text(procfile)
    for name, text in files.items():
        (app / name.replace("__", ".")).write_text(text)
    return app


class DynosimRun:
    """A `dynosim run` subprocess whose output lines are collected as they arrive."""

    def __init__(
        self,
        app: Path,
        *args: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
        python: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.lines: list[str] = []
        self._last = -1
        self._queue: queue.Queue[str | None] = queue.Queue()
        full_env = {**os.environ, "DYNOSIM_CACHE_DIR": str(CACHE_DIR), **(env or {})}
        full_env.pop("PORT", None)
        if "--dashboard-port" not in args:  # the router's port + 1 may be another test's router
            args = (*args, "--no-dashboard")
        self.proc = subprocess.Popen(
            [*(python or [sys.executable]), "-m", "dynosim", "run", "-C", str(app), "--port", str(self.port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 60.0, *, after_last: bool = False) -> re.Match[str]:
        """The first output line matching `pattern` (a regex), waiting for it if need be;
        with `after_last`, only lines after the one the previous call matched."""
        regex = re.compile(pattern)
        start = self._last + 1 if after_last else 0
        for index in range(start, len(self.lines)):
            if (match := regex.search(self.lines[index])) is not None:
                self._last = index
                return match
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no line matching {pattern!r} within {timeout}s; output:\n" + "\n".join(self.lines[-60:])
                )
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(
                    f"dynosim exited ({self.proc.wait()}) before {pattern!r}; output:\n" + "\n".join(self.lines[-60:])
                )
            self.lines.append(line)
            if (match := regex.search(line)) is not None:
                self._last = len(self.lines) - 1
                return match

    def drain(self) -> list[str]:
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return self.lines
            if line is None:
                return self.lines
            self.lines.append(line)

    def supervisor(self) -> psutil.Process:
        """The dynosim process itself, also when it was started through runuser."""
        process = psutil.Process(self.proc.pid)
        if "dynosim" in " ".join(process.cmdline()[:1]) or process.name() != "runuser":
            return process
        return next(p for p in process.children() if "dynosim" in " ".join(p.cmdline()))

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.supervisor().send_signal(signal.SIGINT)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        self.drain()
        return code

    def output(self) -> str:
        self.drain()
        return "\n".join(self.lines)


@pytest.fixture
def dynosim(request: pytest.FixtureRequest) -> Iterator[type[DynosimRun]]:
    runs: list[DynosimRun] = []

    class Tracked(DynosimRun):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            runs.append(self)

    yield Tracked
    for run in runs:
        if run.proc.poll() is None:
            try:
                run.supervisor().kill()  # through runuser too: its dynos die with it
            except (psutil.Error, StopIteration):
                pass
            run.proc.kill()
            run.proc.wait(10)


def run_dynosim(app: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`dynosim ARGS` to completion."""
    env = {**os.environ, "DYNOSIM_CACHE_DIR": str(CACHE_DIR)}
    return subprocess.run(
        [sys.executable, "-m", "dynosim", *args],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --- add-ons on both backends ------------------------------------------------------------------------

# No registry can be reached in CI: .ci/docker-images.sh builds local stand-ins for the official images,
# and the tests point the docker backend at them, as a user would point it at a mirror.
DOCKER_IMAGES = {
    "DYNOSIM_POSTGRES_IMAGE": "dynosim-test/postgres:15",
    "DYNOSIM_REDIS_IMAGE": "dynosim-test/redis:7",
    "DYNOSIM_SEARCH_IMAGE": "dynosim-test/search:8",
}


def docker_problem() -> str | None:
    """Why tests cannot use the docker backend here, or None."""
    try:
        from dynosim.addons.backends.docker import NoEngine, probe
    except ImportError as error:
        return f"the docker backend cannot load ({error})"
    try:
        client, _ = probe()
    except NoEngine as error:
        return f"no Docker engine answers ({error.reason})"
    try:
        missing = [image for image in DOCKER_IMAGES.values() if not client.images.list(name=image)]
    finally:
        client.close()
    return f"the local test images are missing ({', '.join(missing)}); run .ci/docker-images.sh" if missing else None


def need_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skips the test without an engine and the test images (fails instead under DYNOSIM_REQUIRE_DOCKER=1,
    as in CI), and points the docker backend at the test images."""
    problem = docker_problem()
    if problem is not None:
        if os.environ.get("DYNOSIM_REQUIRE_DOCKER") == "1":
            pytest.fail(f"DYNOSIM_REQUIRE_DOCKER=1 but {problem}")
        pytest.skip(problem)
    for var, image in DOCKER_IMAGES.items():
        monkeypatch.setenv(var, image)


@pytest.fixture(params=["native", "docker"])
def addon_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test that takes it runs on both backends; give `remove_app_containers(state_dir)` at its end."""
    if request.param == "docker":
        need_docker(monkeypatch)
    return str(request.param)


def remove_app_containers(state: Path) -> None:
    """Test cleanup only: the test app's containers and volumes go (the backend never does this)."""
    try:
        import docker

        from dynosim.addons.backends.docker import LABEL_APP, app_id

        client = docker.from_env(timeout=30)
        client.ping()
    except Exception:
        return
    label = f"{LABEL_APP}={app_id(state)}"
    for container in client.containers.list(all=True, filters={"label": label}):
        container.remove(force=True, v=True)
    for volume in client.volumes.list(filters={"label": label}):
        volume.remove(force=True)
    client.close()


# --- what a user sees of a command -------------------------------------------------------------------


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The output of a command that must succeed, without a traceback."""
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """A refusal as dynosim gives one: a non-zero exit, exactly one `dynosim: error:` line (after any
    progress lines) holding each needle, and no traceback."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("dynosim: error: ")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]
