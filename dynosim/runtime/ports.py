"""Ports: finding free ones, and seeing who listens on a dyno's $PORT."""

from __future__ import annotations

import errno
import random
import socket
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import PortError

if TYPE_CHECKING:  # psutil is imported where it is used: a run's first dyno starts without it
    pass

ANY = "any"  # listening on all interfaces (0.0.0.0 or ::), so Heroku's router could reach it
LOOPBACK = "loopback"
OTHER = "other"


# Dyno and add-on ports come from below the kernel's ephemeral range, so that an outgoing connection's
# local port never takes the port a dyno or an add-on is about to bind (and parallel runs rarely meet).
PORT_RANGE = (20000, 32000)


def free_port(avoid: Collection[int] = ()) -> int:
    """A port nothing holds, for a dyno or an add-on; never one of `avoid` (given out, not yet bound)."""
    for _ in range(100):
        port = random.randint(*PORT_RANGE)
        if port not in avoid and not bound(port):
            return port
    while True:
        with socket.socket() as sock:
            sock.bind(("0.0.0.0", 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port


def claim_port(port: int, host: str = "0.0.0.0", *, flag: str = "--port") -> None:
    """Fail with a clear line if `port` cannot be bound, naming who holds it."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortError(f"port {port} is taken{_holder(port)}; choose another with {flag}") from None
            raise PortError(f"cannot use port {port}: {exc.strerror}; choose another with {flag}") from None


def _holder(port: int) -> str:
    import psutil

    try:
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return f" by {psutil.Process(conn.pid).name()} (pid {conn.pid})"
    except (psutil.Error, OSError):
        pass
    return ""


def bound(port: int) -> bool:
    """Whether any socket holds `port`: a bind that fails says so in microseconds, where reading
    /proc/net/tcp on a busy machine takes milliseconds."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def listeners(port: int) -> set[str]:
    """How `port` is listened on: ANY, LOOPBACK and/or OTHER; empty when nobody listens."""
    if not bound(port):
        return set()
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            return _listeners_psutil(port)
        for row in rows:
            fields = row.split()
            if len(fields) < 4 or fields[3] != "0A":  # 0A: TCP_LISTEN
                continue
            address, _, hexport = fields[1].partition(":")
            if int(hexport, 16) == port:
                found.add(_classify(bytes.fromhex(address), width))
    return found


def _classify(raw: bytes, width: int) -> str:
    # /proc/net prints each 32-bit word of the address in host (little-endian) order
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if not any(words):
        return ANY
    family = socket.AF_INET if width == 4 else socket.AF_INET6
    text = socket.inet_ntop(family, words)
    if text.startswith("127.") or text in ("::1", "::ffff:127.0.0.1"):
        return LOOPBACK
    return OTHER


def _listeners_psutil(port: int) -> set[str]:
    import psutil

    found: set[str] = set()
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            ip = conn.laddr.ip
            found.add(ANY if ip in ("0.0.0.0", "::") else LOOPBACK if ip.startswith("127.") or ip == "::1" else OTHER)
    return found
