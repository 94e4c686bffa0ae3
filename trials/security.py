"""The security trial: a real `dynosim run` of a small app with native heroku-postgresql and heroku-redis,
and a count of checks on it.

- Every file under the app's `.dynosim/` (config vars, add-on records, releases, run.json, snapshots,
  reset baselines, the add-ons' data, the control socket) is mode 0600 (no bit for group or others) and
  every folder 0700, as ARCHITECTURE.md says of an app's state; `snapshot:save` makes a snapshot first,
  so its files are among them.
- Every socket the run's process tree listens on (psutil: the router, the dashboard, the add-ons' servers
  and proxies) is bound to 127.0.0.1 or is a unix socket, but for the app's own web server on $PORT, which Heroku requires to listen on all interfaces (issue 22
  tracks giving dynos a network of their own).
- Each add-on refuses a connection without its password and with a wrong one, through the official
  clients (psycopg, redis-py), and takes one with it; each password is random (16 characters or more,
  no two add-ons alike).
- The control socket refuses another user: a forked child as `nobody` gets EACCES connecting to it
  (checked only as root, which can become nobody; the folders above the app are made traversable so
  that only .dynosim's own modes stand in the way).
- Config values with shell metacharacters (`$(touch …)`, backticks, `;`, `|`, `&`, quotes, newlines,
  `$VAR`) set with one `config:set` reach the app unchanged (it echoes its environment over HTTP) and
  never run: no marker file appears, on the host or in the dyno.

`count` rounds, each a fresh app and run whose payloads' marker names come from the seed; runs in the
table are checks made. Loopback only; the run is stopped with SIGINT at the end of each round.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil

from trials.base import Failure, Result, free_port, replay_command, start_run

WORK = Path(os.environ.get("DYNOSIM_TRIALS_WORK", "/var/tmp/dynosim-trials-security"))
CACHE = Path(os.environ.get("DYNOSIM_TRIALS_CACHE", "/var/tmp/dynosim-trials-cache"))
CA = Path(os.environ.get("DYNOSIM_TRIALS_CA", "/var/tmp/dynosim-trials-ca"))  # not the user's own CA
UP = r"web\.1.*State changed from starting to up"

SERVER = """\
import glob, json, os
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        markers = glob.glob("/tmp/*pwned*") + glob.glob("/app/*pwned*") + glob.glob("*pwned*")
        body = json.dumps({"env": dict(os.environ), "markers": markers}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"""
PROCFILE = "web: python server.py\nrelease: python -c \"print('release phase')\"\n"


@dataclass
class Tally:
    """Checks made and the ones that failed, each failure one line."""

    checks: int = 0
    failed: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        self.checks += 1
        if not ok:
            self.failed.append(what)


class Run:
    """A `dynosim run` subprocess in its own session, its output lines collected as they come."""

    def __init__(self, app: Path, port: int, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        args = ["--dashboard-port", str(free_port())]  # its listener is among those checked
        args += ["--addons", "native", "--addon", "heroku-postgresql", "--addon", "heroku-redis"]
        self.proc = start_run(app, port, args, env)
        threading.Thread(target=self._read, daemon=True).start()
        self._seen = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> None:
        """Until a line after the last one matched matches `pattern`; RuntimeError after `timeout`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            while self._seen < len(self.lines):
                self._seen += 1
                if regex.search(self.lines[self._seen - 1]):
                    return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"no line matching {pattern!r} in {timeout:.0f} s; last: {self.lines[-3:]}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"dynosim exited ({self.proc.wait()}) before {pattern!r}: {self.lines[-5:]}")
            self.lines.append(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def dynosim(app: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dynosim", *args],
        cwd=app,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def app_env(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        data: dict[str, object] = json.load(response)
    return data


def payloads(token: str) -> dict[str, str]:
    """Config values a shell would run or change, each naming its own marker file."""
    mark = lambda n: f"/tmp/{token}-pwned-{n}"  # noqa: E731
    return {
        "TRIAL_SUBSHELL": f"$(touch {mark(1)})",
        "TRIAL_BACKTICKS": f"`touch {mark(2)}`",
        "TRIAL_SEMICOLON": f"x; touch {mark(3)}; rm -rf /app/nothing",
        "TRIAL_PIPE": f"x | touch {mark(4)} & touch pwned-{token}",
        "TRIAL_QUOTES": f"'\"; touch {mark(5)}; echo \"'",
        "TRIAL_NEWLINE": f"first line\ntouch {mark(6)}\n",
        "TRIAL_VARIABLE": "$HOME ${PATH} $(echo) %s %n \\n",
        "TRIAL_BACKSLASH": f"\\$(touch {mark(7)})\\",
    }


def check_files(state: Path, tally: Tally) -> None:
    for folder, folders, files in os.walk(state):
        for name in folders:
            path = Path(folder, name)
            mode = path.lstat().st_mode & 0o777
            tally.check(mode == 0o700, f"{path.relative_to(state.parent)}/ is mode {mode:04o}, not 0700")
        for name in files:
            path = Path(folder, name)
            mode = path.lstat().st_mode & 0o777
            tally.check(mode & 0o077 == 0, f"{path.relative_to(state.parent)} is mode {mode:04o}, not 0600")
    mode = state.lstat().st_mode & 0o777
    tally.check(mode == 0o700, f".dynosim/ is mode {mode:04o}, not 0700")


def check_listening(run: Run, web_port: int, tally: Tally) -> None:
    root = psutil.Process(run.proc.pid)
    tree = [root, *root.children(recursive=True)]
    for process in tree:
        try:
            connections = process.net_connections(kind="inet")
            name = " ".join(process.cmdline()[:3])[:80]
        except psutil.Error:
            continue
        for connection in connections:
            if connection.status != psutil.CONN_LISTEN:
                continue
            ip, port = connection.laddr.ip, connection.laddr.port
            if port == web_port:  # the app's own server, on all interfaces as Heroku requires
                continue
            tally.check(ip == "127.0.0.1", f"{name} (pid {process.pid}) listens on {ip}:{port}, not 127.0.0.1")


def _refused(connect: Callable[[], object]) -> str | None:
    """None when `connect` raises (the server refused); else what it returned."""
    try:
        result = connect()
    except Exception:
        return None
    return f"connected: {result!r}"[:120]


def check_addons(config: dict[str, str], tally: Tally) -> None:
    import psycopg
    import redis

    def without(url: str, password: str | None) -> str:
        parts = urlsplit(url)
        user = parts.username or ""
        login = f"{user}:{password}" if password is not None else user
        return urlunsplit(parts._replace(netloc=f"{login}@{parts.hostname}:{parts.port}"))

    database, cache = config["DATABASE_URL"], config["REDIS_URL"]
    passwords = [urlsplit(database).password or "", urlsplit(cache).password or ""]
    tally.check(all(len(p) >= 16 for p in passwords), f"an add-on password shorter than 16 characters: {passwords}")
    tally.check(passwords[0] != passwords[1], "heroku-postgresql and heroku-redis have the same password")

    def pg(url: str) -> object:
        with psycopg.connect(url.replace("postgres://", "postgresql://", 1), connect_timeout=5) as db:
            return db.execute("select 1").fetchone()

    def rd(url: str) -> object:
        client = redis.Redis.from_url(url, ssl_cert_reqs=None, socket_timeout=5)
        try:
            return client.ping()
        finally:
            client.close()

    for addon, url, call in (("heroku-postgresql", database, pg), ("heroku-redis", cache, rd)):
        for how, target in (("without a password", without(url, None)), ("with a wrong one", without(url, "x" * 32))):
            got = _refused(lambda t=target, c=call: c(t))  # type: ignore[misc]
            tally.check(got is None, f"{addon} took a connection {how}: {got}")
        try:
            call(url)
            tally.check(True, "")
        except Exception as error:
            tally.check(False, f"{addon} refused its own URL: {type(error).__name__}: {str(error)[:100]}")


def check_control_socket(state: Path, tally: Tally) -> None:
    """A forked child, as nobody, connects to the control socket: it must get EACCES."""
    path = state / "control.sock"
    if os.geteuid() != 0:
        return  # only root can become another user; said in the figure
    nobody = 65534
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: only os calls, then _exit
        os.close(reader)
        code = b"?"
        try:
            os.setgroups([])
            os.setgid(nobody)
            os.setuid(nobody)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                code = b"connected"
            except OSError as error:
                code = errno.errorcode.get(error.errno or 0, "?").encode()
        finally:
            os.write(writer, code)
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        answer = pipe.read().decode()
    os.waitpid(child, 0)
    tally.check(answer == "EACCES", f"nobody connecting to .dynosim/control.sock got {answer}, not EACCES")


def check_config(app: Path, run: Run, env: dict[str, str], port: int, token: str, tally: Tally) -> int:
    """The config checks; the web dyno's $PORT after the restart they make."""
    values = payloads(token)
    done = dynosim(app, env, "config:set", *(f"{k}={v}" for k, v in values.items()))
    tally.check(done.returncode == 0, f"config:set failed: {done.stderr.strip()[-160:]}")
    run.wait_for(UP, 90)
    deadline = time.monotonic() + 30
    seen: dict[str, object] = {}
    while time.monotonic() < deadline:
        seen = app_env(port)
        if isinstance(seen["env"], dict) and "TRIAL_SUBSHELL" in seen["env"]:
            break
        time.sleep(0.2)
    dyno_env = seen.get("env", {})
    assert isinstance(dyno_env, dict)
    for name, value in values.items():
        got = dyno_env.get(name)
        tally.check(got == value, f"config var {name} reached the app as {got!r}, set as {value!r}")
    markers = [str(m) for m in seen.get("markers", []) or []]  # type: ignore[union-attr]
    tally.check(not markers, f"a config value ran in the dyno: {markers}")
    on_host = sorted(str(p) for p in Path("/tmp").glob(f"{token}-pwned-*")) + sorted(
        str(p) for p in app.rglob(f"*pwned-{token}*")
    )
    tally.check(not on_host, f"a config value ran on the host: {on_host}")
    return int(str(dyno_env.get("PORT", 0)))


def round_of(seed: int, tally: Tally) -> None:
    token = f"t{random.Random(seed).randrange(1 << 30):x}"
    WORK.mkdir(parents=True, exist_ok=True)
    os.chmod(WORK, 0o755)  # nobody may walk to .dynosim: only its own mode must stop them
    app = WORK / f"app-{token}"
    shutil.rmtree(app, ignore_errors=True)
    app.mkdir(mode=0o755)
    os.chmod(app, 0o755)
    for name, text in {"Procfile": PROCFILE, "server.py": SERVER, "requirements.txt": ""}.items():
        (app / name).write_text(text)
    env = {**os.environ, "DYNOSIM_CACHE_DIR": str(CACHE), "DYNOSIM_CA_DIR": str(CA), "NO_COLOR": "1"}
    env.pop("PORT", None)
    port = free_port()
    run = Run(app, port, env)
    try:
        run.wait_for(UP, 180)
        first = app_env(port)
        config = first["env"]
        assert isinstance(config, dict)
        web_port = int(config["PORT"])
        saved = dynosim(app, env, "snapshot:save", "trial")
        tally.check(saved.returncode == 0, f"snapshot:save failed: {saved.stderr.strip()[-160:]}")
        check_addons(config, tally)
        check_listening(run, web_port, tally)
        check_control_socket(app / ".dynosim", tally)
        web_port = check_config(app, run, env, port, token, tally)
        check_listening(run, web_port, tally)  # after the restart too
        check_files(app / ".dynosim", tally)
    finally:
        run.stop()
    for leftover in Path("/tmp").glob(f"{token}-pwned-*"):
        leftover.unlink()
    shutil.rmtree(app, ignore_errors=True)


def run(count: int, seed: int) -> Result:
    tally = Tally()
    for index in range(count):
        round_of(seed + index, tally)
    replay = replay_command("security", seed, count)
    as_root = "" if os.geteuid() == 0 else "; control socket vs another user not checked (not root)"
    return Result(
        runs=tally.checks,
        failures=tuple(Failure(what, replay) for what in tally.failed),
        figure=f"{tally.checks - len(tally.failed):,} of {tally.checks:,} checks passed in {count} run(s){as_root}",
        goal="all",
    )
