"""The processes of the add-ons that dynosim runs itself, on either backend: servers forked as our own
children with a parent-death signal (`Spawner`, `Child`), what a service's start returns (`Server`),
and the ports they listen on, all on 127.0.0.1 (new ones come from dynosim.runtime.ports, as dynos' do).

Every server is a direct child of dynosim (never daemonised) started with a parent-death signal, so a
dynosim killed with SIGKILL takes its servers with it. The kernel sends that signal when the *thread*
that forked the child exits, so servers are forked from a thread of ours that lives until they are
stopped (`Spawner`), not from whichever worker thread called `start()`. Each server gets its own
session, so a Ctrl-C meant for dynosim does not reach it: the runtime stops add-ons after the last
dyno, in order.

The signal is set by util-linux's `setpriv --pdeathsig`, exec'd in front of the server, where it is
found and the server runs as us: a preexec_fn would set it in Python, but makes subprocess fork where
it could vfork, and a fork copies dynosim's page tables (3 ms of every start, 10 under load). A dynosim
killed in the half millisecond before setpriv sets it leaves that server running (a preexec_fn checks
for that; setpriv cannot), which the next start of its add-on finds (Postgres: settle_leftover).
"""

from __future__ import annotations

import ctypes
import functools
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

from dynosim.addons.spec import Endpoint, ServiceSpec
from dynosim.errors import AddonError

HOST = "127.0.0.1"
POLL = 0.02  # seconds between readiness probes (measured: Postgres accepts ≈ 50 ms after exec)
READY_POLL = 0.002  # seconds between the first probes of a starting container (the docker backend's)
READY_TIMEOUT = 60.0  # crash recovery of a big WAL can take a while
STOP_TIMEOUT = 30.0
LOG_KEEP = 5 * 1024 * 1024  # a server's log is rotated once past this size, at start

_PR_SET_PDEATHSIG = 1


class Host(Protocol):
    """What a service's native start needs from the backend it runs under: where to say things, the
    thread that forks its servers, and what was looked up once per run (binaries, certificates)."""

    say: Callable[[str], None]
    spawner: Spawner
    found: dict[str, object]


class Spawner:
    """A thread that forks the servers and lives as long as they do (see the module's docstring)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dynosim-addons-spawner", daemon=True)
                self._thread.start()
        done: Future[subprocess.Popen[bytes]] = Future()
        self._jobs.put((lambda: subprocess.Popen(args, **kwargs), done))
        return done.result()

    def close(self) -> None:
        with self._lock:
            if self._thread is not None:
                self._jobs.put(None)
                self._thread.join()
                self._thread = None

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            call, done = job
            try:
                done.set_result(call())
            except BaseException as error:  # handed to the caller's thread
                done.set_exception(error)


def deathsig_preexec(sig: int) -> Callable[[], None] | None:
    """A preexec_fn that makes the child receive `sig` when its parent thread dies (Linux only).

    The setting survives execve of anything but a set-user-ID (or file-capability) binary, and entering a
    user namespace, so it also holds for a server that `unshare` execs in place."""
    if not sys.platform.startswith("linux"):
        return None  # macOS has no parent-death signal; stop() is the only guarantee there
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


@functools.cache
def _setpriv() -> str | None:
    """util-linux's setpriv, when it can set a parent-death signal (Linux; 2.33 and newer have --pdeathsig)."""
    if not sys.platform.startswith("linux"):
        return None
    found = shutil.which("setpriv")
    if found is None:
        return None
    try:  # its option's name is in the binary: no `setpriv --help` process
        return found if b"pdeathsig" in Path(found).read_bytes() else None
    except OSError:
        return None


class Child:
    """A server process of ours: its log, and how to stop it."""

    def __init__(self, proc: subprocess.Popen[bytes], what: str, label: str, log: Path, stop_signal: int) -> None:
        self.proc = proc
        self.what = what  # "postgres", "redis-server"
        self.label = label
        self.log = log
        self.stop_signal = stop_signal

    @classmethod
    def spawn(
        cls,
        spawner: Spawner,
        args: list[str],
        *,
        what: str,
        label: str,
        log: Path,
        stop_signal: int,
        death_signal: int,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        user: int | None = None,
        group: int | None = None,
    ) -> Child:
        rotate(log)
        # the log, and whatever the server writes (Redis's data, pid), its user's alone: they hold data
        with open(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:
            os.fchmod(out.fileno(), 0o600)
            ids: dict[str, Any] = {}
            if user is not None:
                ids = {"user": user, "group": group, "extra_groups": []}
            setpriv = _setpriv() if user is None and os.path.isabs(args[0]) and os.access(args[0], os.X_OK) else None
            try:
                proc = spawner.popen(
                    [setpriv, f"--pdeathsig={signal.Signals(death_signal).name.removeprefix('SIG')}", "--", *args]
                    if setpriv
                    else args,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                    umask=0o077,
                    preexec_fn=None if setpriv else deathsig_preexec(death_signal),
                    **ids,
                )
            except OSError as error:
                raise AddonError(f"{label}: cannot run {args[0]}: {error.strerror}") from None
        return cls(proc, what, label, log, stop_signal)

    def wait_ready(self, probe: Callable[[], bool], timeout: float = READY_TIMEOUT, interval: float = POLL) -> float:
        """Polls `probe` every `interval` until it says yes; returns the seconds it took. The server's
        exit is an error."""
        started = time.monotonic()
        while True:
            ready = probe()
            code = self.proc.poll()
            if code is not None:
                raise AddonError(
                    f"{self.label}: {self.what} exited with status {code} while starting: "
                    f"{last_line(self.log)}; see {self.log}"
                )
            if ready:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                self.stop()
                raise AddonError(
                    f"{self.label}: {self.what} did not accept connections within {timeout:g} s; see {self.log}"
                )
            time.sleep(interval)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(self.stop_signal)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Server:
    """A running native service: what `Addons` holds and stops."""

    def __init__(self, child: Child, endpoint: Endpoint, backend: str = "native") -> None:
        self.child = child
        self.endpoint = endpoint
        self.backend = backend

    def stop(self) -> None:
        self.child.stop()


def end_process(pid: int, signals: tuple[tuple[int, float], ...]) -> None:
    """Ends a server that is not our child: each signal in turn, until it is gone (a zombie counts as gone:
    in a container, PID 1 may never reap it)."""
    import psutil

    for sig, wait in signals:
        try:
            psutil.Process(pid).send_signal(sig)
        except psutil.NoSuchProcess:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    return
            except psutil.NoSuchProcess:
                return
            time.sleep(POLL)


def rotate(log: Path) -> None:
    try:
        if log.stat().st_size > LOG_KEEP:
            log.replace(log.with_name(log.name + ".1"))
    except FileNotFoundError:
        pass


def tail(log: Path, size: int = 4096) -> str | None:
    """The last `size` bytes of a server's log, as text; None when it cannot be read."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def last_line(log: Path) -> str:
    text = tail(log)
    if text is None:
        return "(no log)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(empty log)"


def port_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port (TIME_WAIT leftovers of our own server do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def check_port(spec: ServiceSpec) -> None:
    if not port_free(spec.port):
        state = spec.folder.parent.parent / "addons.json"
        raise AddonError(
            f"{spec.label}: its port {spec.port} on {HOST} is taken by another program; stop that program, "
            f'or delete "port" from this add-on in {state} to get a new port'
        )


def check_tls_port(spec: ServiceSpec) -> None:
    """The search add-on's second, https, port (SEARCHBOX_SSL_URL), whichever backend serves it."""
    if spec.tls_port is not None and not port_free(spec.tls_port):
        raise AddonError(
            f"{spec.label}: its https port {spec.tls_port} on {HOST} is taken by another program; stop that "
            f'program, or delete "tls_port" from this add-on in {spec.folder.parent.parent / "addons.json"}'
        )


def accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False
