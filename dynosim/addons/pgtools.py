"""The real PostgreSQL client tools (pg_dump, pg_restore, psql, createdb) pointed at an add-on's server
or at any database URL: what pg:backups and pg:pull/pg:push run.

    tools = tools_for(record)                      # record: the add-on's entry in addons.json
    dump = tools.command("pg_dump", app_target(record), "-Fc")
    restore = tools.command("pg_restore", app_target(record, "scratch"), "--no-owner", "--no-acl")
    pipe(dump, restore)                            # pg_dump | pg_restore, streamed, both checked

Which tools: a native add-on's own bindir (the same server build, so versions match); for a docker
add-on, this machine's tools when they are at least the server's major version (pg_dump refuses a
newer server), else the ones inside its container (`docker exec -i dynosim-<name>`, stdin and stdout
streamed); for a URL that is not ours, this machine's (PATH, then the native bindir).

Where to connect is a `Target` (user, password, database, host, port); a `Command` carries it in
libpq's environment (PGHOST, PGUSER, PGPASSWORD…), so no password is ever in an argv, and the user's
own PG* variables never redirect a tool elsewhere. Inside a container the tools use the unix socket,
which trusts local connections (services/postgres.py DOCKER_HBA): no password crosses `docker exec`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from dynosim.errors import AddonError

HOST = "127.0.0.1"
CONTAINER_SOCKET = "/var/run/postgresql"  # the official image's unix socket folder
CHUNK = 1 << 16
# libpq's URL parameters a foreign DATABASE_URL may carry, and the variables that set them
_URL_PARAMS = {
    "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT", "application_name": "PGAPPNAME", "options": "PGOPTIONS",
}  # fmt: skip
_REAL_ERROR = re.compile(r"\b(ERROR|FATAL)\b|error:")


@dataclass(frozen=True)
class Target:
    """One database to connect to, as seen from this machine."""

    user: str
    password: str
    database: str
    host: str = HOST
    port: int = 5432
    params: Mapping[str, str] = field(default_factory=dict)  # PGSSLMODE…, from a URL's query

    def on(self, database: str) -> Target:
        """The same server and user, another database."""
        return replace(self, database=database)

    def env(self) -> dict[str, str]:
        return {
            "PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user, "PGDATABASE": self.database,
            "PGPASSWORD": self.password, **self.params,
        }  # fmt: skip

    def describe(self) -> str:
        """Where it is, without the password: for messages."""
        return f"{self.user}@{self.host}:{self.port}/{self.database}"


@dataclass(frozen=True)
class Command:
    """One client tool's argv and environment, ready for subprocess."""

    name: str  # the tool: "pg_dump"
    argv: tuple[str, ...]
    env: Mapping[str, str]


@dataclass(frozen=True)
class Tools:
    """Where the client tools run: a bindir on this machine, or inside a docker container."""

    bindir: Path | None = None  # None: `container`'s
    container: str | None = None  # "dynosim-postgresql-curly-12345"
    docker: str = "docker"  # the docker CLI, when `container`

    def command(self, tool: str, target: Target, *args: str) -> Command:
        """`tool` (pg_dump, pg_restore, psql, createdb…) connecting to `target`; pg_restore gets
        `--dbname` (without one it writes SQL instead of restoring)."""
        connect = ["--dbname", target.database] if tool == "pg_restore" else []
        if self.container is None:
            assert self.bindir is not None
            return Command(tool, (str(self.bindir / tool), *connect, *args), {**client_env(), **target.env()})
        inside = {**target.env(), "PGHOST": CONTAINER_SOCKET, "PGPORT": "5432"}
        inside.pop("PGPASSWORD")  # the socket trusts local connections: no secret in docker's argv
        env_args = [f"--env={key}={value}" for key, value in inside.items()]
        argv = (self.docker, "exec", "-i", "--user", "postgres", *env_args, self.container, tool, *connect, *args)
        return Command(tool, argv, client_env())


def client_env() -> dict[str, str]:
    """The user's environment without libpq settings that would point a tool elsewhere."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


# --- targets ----------------------------------------------------------------------------------------


def app_target(record: Mapping[str, Any], database: str | None = None) -> Target:
    """The app's own role on its add-on (what DATABASE_URL names), on its database or `database`."""
    return Target(
        str(record["user"]), str(record["password"]), database or str(record["database"]), port=int(record["port"])
    )


def superuser_target(record: Mapping[str, Any], database: str = "postgres") -> Target:
    """dynosim's superuser on the add-on's server: for CREATE, DROP and ALTER DATABASE."""
    from dynosim.addons.services.postgres_native import SUPERUSER

    return Target(SUPERUSER, str(record.get("admin_password") or ""), database, port=int(record["port"]))


def url_target(url: str) -> Target:
    """A postgres:// URL (a DATABASE_URL of another app, a server elsewhere) as a Target."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql") or not parts.path.strip("/"):
        raise AddonError(f"{_hide(url)} is not a database URL; give one as postgres://user:password@host:port/database")
    query = urllib.parse.parse_qs(parts.query)
    params = {_URL_PARAMS[k]: v[-1] for k, v in query.items() if k in _URL_PARAMS}
    try:
        port = parts.port or 5432
    except ValueError:
        raise AddonError(f"{_hide(url)}: the port is not a number") from None
    return Target(
        urllib.parse.unquote(parts.username or os.environ.get("USER", "postgres")),
        urllib.parse.unquote(parts.password or ""),
        urllib.parse.unquote(parts.path.lstrip("/")),
        host=parts.hostname or HOST,
        port=port,
        params=params,
    )


def target_url(target: Target) -> str:
    """The URL of a Target (with its password): what DATABASE_URL looks like."""
    user = urllib.parse.quote(target.user, safe="")
    password = urllib.parse.quote(target.password, safe="")
    return f"postgres://{user}:{password}@{target.host}:{target.port}/{urllib.parse.quote(target.database)}"


def _hide(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":…@", 1)
    return url


# --- which tools ------------------------------------------------------------------------------------


def tools_for(record: Mapping[str, Any]) -> Tools:
    """The tools for an add-on's server (see the module's docstring); the server must be running."""
    if record.get("backend") == "docker":
        host = _host_bindir()
        if host is not None and _major(host) >= _server_major(host, record):
            return Tools(bindir=host)
        docker = shutil.which("docker")
        if docker is None:
            raise AddonError(
                "this machine's pg_dump is older than the add-on's server and there is no docker CLI to run the "
                "container's; install the docker CLI or a newer postgresql-client"
            )
        return Tools(container=f"dynosim-{record['name']}", docker=docker)
    native = _native_bindir()
    if native is not None:
        return Tools(bindir=native)
    return host_tools()


def host_tools() -> Tools:
    """This machine's tools, for a database that is not an add-on of ours: PATH, then the native bindir."""
    found = _host_bindir() or _native_bindir()
    if found is None:
        raise AddonError("no pg_dump found (on PATH or next to a Postgres server); install postgresql-client")
    return Tools(bindir=found)


@functools.cache
def _host_bindir() -> Path | None:
    on_path = shutil.which("pg_dump")
    return Path(on_path).parent if on_path else None  # not realpath: Debian links them all to one wrapper


@functools.cache
def _native_bindir() -> Path | None:
    from dynosim.addons.backends.native import NativeBackend
    from dynosim.addons.services.postgres_native import find_binaries, is_tool

    backend = NativeBackend(lambda _: None)
    try:
        bindir = find_binaries(backend).bindir
    except AddonError:
        return None
    finally:
        backend.close()
    return bindir if is_tool(bindir / "pg_dump") else None


@functools.cache
def _major(bindir: Path) -> int:
    out = subprocess.run([str(bindir / "pg_dump"), "--version"], capture_output=True, text=True, check=False).stdout
    found = re.search(r"\) (\d+)", out)
    return int(found[1]) if found else 0


def _server_major(bindir: Path, record: Mapping[str, Any]) -> int:
    """The running server's major version (SHOW server_version_num), 0 when it cannot be asked."""
    if not os.access(bindir / "psql", os.X_OK):
        return 1 << 30  # no psql beside pg_dump to ask with: take the container's tools, which always match
    ask = Tools(bindir=bindir).command("psql", superuser_target(record), "-XAtc", "SHOW server_version_num")
    done = subprocess.run(ask.argv, env=ask.env, capture_output=True, text=True, timeout=30, check=False)
    return int(done.stdout.strip()) // 10000 if done.stdout.strip().isdigit() else 1 << 30


# --- running them -----------------------------------------------------------------------------------


def run(command: Command, script: str | None = None, timeout: float = 120) -> str:
    """Runs a tool to the end (psql with a script on stdin, createdb…); its output, or AddonError with
    its first real error line."""
    try:
        done = subprocess.run(
            command.argv, input=script, capture_output=True, text=True, env=command.env, timeout=timeout, check=False
        )
    except OSError as error:
        raise AddonError(f"cannot run {command.argv[0]}: {error.strerror}") from None
    except subprocess.TimeoutExpired:
        raise AddonError(f"{command.name} did not finish in {timeout:.0f} s") from None
    if done.returncode != 0:
        raise AddonError(f"{command.name} failed: {first_error(done.stderr or done.stdout)}")
    return done.stdout


def pipe(
    producer: Command | IO[bytes], consumer: Command | IO[bytes], echo: Callable[[str], None] | None = None
) -> None:
    """producer | consumer, streamed (nothing is held in memory): a Command's stdout, or a binary file
    (a dump on disk, an HTTP response), into a Command's stdin, or a file. Both exit codes are checked;
    a failure is one AddonError with the first real error line of the side that failed first (a
    consumer that stops early leaves its producer a broken pipe, which is not the news). `echo`
    also gets each line the tools write to stderr as they write it (pg:pull's --verbose output)."""
    if not isinstance(producer, Command) and not isinstance(consumer, Command):
        raise TypeError("pipe needs a Command on at least one side")
    with tempfile.TemporaryFile() as producer_err, tempfile.TemporaryFile() as consumer_err:
        first = second = None
        tees: list[threading.Thread] = []
        try:
            if isinstance(producer, Command):
                sink = consumer if not isinstance(consumer, Command) and _has_fd(consumer) else subprocess.PIPE
                first = _start(producer, stdin=subprocess.DEVNULL, stdout=sink, stderr=_err(producer_err, echo))
                tees += _tee(first, producer_err, echo)
            if isinstance(consumer, Command):
                if first is not None:
                    source: Any = first.stdout
                elif _has_fd(producer):
                    source = producer
                else:
                    source = subprocess.PIPE
                second = _start(consumer, stdin=source, stdout=subprocess.DEVNULL, stderr=_err(consumer_err, echo))
                tees += _tee(second, consumer_err, echo)
            if first is not None and second is not None:
                assert first.stdout is not None
                first.stdout.close()  # the consumer's now: its exit gives the producer SIGPIPE
            elif second is not None and second.stdin is not None:  # a file object without a descriptor
                _copy(producer, second.stdin, close=True)  # type: ignore[arg-type]
            elif first is not None and first.stdout is not None:
                _copy(first.stdout, consumer, close=False)  # type: ignore[arg-type]
                first.stdout.close()
            codes = [(p, p.wait(), err) for p, err in ((first, producer_err), (second, consumer_err)) if p is not None]
        except BaseException:
            for process in (first, second):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait()
            raise
        finally:
            for tee in tees:
                tee.join()
        failed = [(p, code, err) for p, code, err in codes if code != 0]
        if not failed:
            return
        said = {p: _read(err) for p, _, err in failed}
        real = [f for f in failed if f[1] != -signal.SIGPIPE and "Broken pipe" not in said[f[0]]] or failed
        process, code, _ = real[0]
        said_by = said[process]
        name = producer.name if process is first and isinstance(producer, Command) else consumer.name
        raise AddonError(f"{name} failed: {first_error(said_by) if said_by.strip() else f'exit status {code}'}")


def _err(file: IO[bytes], echo: Callable[[str], None] | None) -> Any:
    return subprocess.PIPE if echo is not None else file


def _tee(
    process: subprocess.Popen[bytes], file: IO[bytes], echo: Callable[[str], None] | None
) -> list[threading.Thread]:
    """With `echo`, a thread that copies the process's stderr into `file` and, line by line, to `echo`."""
    if echo is None or process.stderr is None:
        return []
    stream = process.stderr

    def copy() -> None:
        with stream:
            for line in stream:
                file.write(line)
                echo(line.decode("utf-8", "replace").rstrip("\n"))

    thread = threading.Thread(target=copy, name="pipe stderr", daemon=True)
    thread.start()
    return [thread]


def _read(err: IO[bytes]) -> str:
    err.seek(0)
    return err.read().decode("utf-8", "replace")


def _start(command: Command, **streams: Any) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(command.argv, env=dict(command.env), **streams)
    except OSError as error:
        raise AddonError(f"cannot run {command.argv[0]}: {error.strerror}") from None


def _has_fd(stream: Any) -> bool:
    """A file on disk, whose descriptor a tool can read or write itself (an HTTP response has one
    too, its socket's, but the bytes on it are not the body)."""
    return isinstance(getattr(stream, "raw", stream), io.FileIO)


def _copy(source: IO[bytes], sink: IO[bytes], *, close: bool) -> None:
    """Copies until the end, or until the reader of `sink` has gone (its exit code then says why);
    `close`: `sink` is a process's stdin, closed after (its end of input). A source that fails (a URL
    that stops answering) is an AddonError."""
    try:
        while True:
            try:
                chunk = source.read(CHUNK)
            except OSError as error:
                raise AddonError(f"reading the input failed: {error.strerror or error}") from None
            if not chunk:
                break
            sink.write(chunk)
        sink.flush()
    except BrokenPipeError:
        pass
    finally:
        if close:
            with contextlib.suppress(BrokenPipeError):
                sink.close()


def first_error(output: str) -> str:
    """The first line that is a real error (ERROR, FATAL, `pg_restore: error:`), else the last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if _REAL_ERROR.search(line):
            return line
    return lines[-1] if lines else "(no output)"
