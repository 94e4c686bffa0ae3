"""4. Whether the web process listens where Heroku's router looks: 0.0.0.0:$PORT.

Read from the Procfile and the script it runs, then seen for real: web.1 is run briefly from a
copy of the app (so the app's own release history and add-on data are left alone).
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from ..buildpack.source import export_source
from ..errors import BuildError, DynosimError
from ..runtime.sandbox import MARKER, wipe_dir
from ..webservers import CODE_FIX as _CODE_FIX
from ..webservers import DEFAULTS as _DEFAULTS
from ..webservers import FIX as _FIX
from ..webservers import server as _server
from .findings import ERROR, INFO, WARNING, Finding
from .source import AppSource

if TYPE_CHECKING:
    from ..api import App
    from ..logs import LogLine

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
BUILD_TIMEOUT = 600.0  # seconds for the slug build and add-ons before web.1 starts
POLL = 0.1
SCAN_EVERY = 0.5  # seconds between looks at what web.1's processes listen on
LAST_LINES = 8

# Calls that take the address as a (host, port) tuple first, and make_server(host, port, app).
_ADDRESS_TUPLE = frozenset(
    {"HTTPServer", "ThreadingHTTPServer", "TCPServer", "ThreadingTCPServer", "WSGIServer", "create_server", "bind"}
)
_NOT_SERVERS = frozenset({"asyncio", "subprocess", "trio", "anyio", "loop", "runner"})


# the static hints
def static_hints(src: AppSource) -> list[Finding]:
    web = src.procfile.processes.get("web") if src.procfile else None
    if web is None:
        return []
    findings = _procfile_hints(web.command, web.line)
    script = _script(src, web.command)
    if script is not None:
        findings += _code_hints(src, script)
    return findings


def _procfile_hints(command: str, line: int) -> list[Finding]:
    try:
        tokens = shlex.split(command)
    except ValueError:
        return []
    server = _server(tokens)
    host, port = _bind(tokens)
    default = _DEFAULTS.get(server or "")
    if default is not None:
        host, port = host or default[0], port or default[1]
    fix = f"make it {_FIX[server]}" if server else "bind 0.0.0.0:$PORT"
    said = "" if server is None else f" ({server})"
    findings = []
    if host in LOOPBACK_HOSTS:
        findings.append(
            Finding(
                ERROR,
                "web-loopback",
                f"the web command{said} listens on {host}: Heroku's router "
                "cannot reach a dyno's loopback interface (R10 after 60 s)",
                fix,
                "Procfile",
                line,
            )
        )
    if port is not None and port.isdigit():
        findings.append(
            Finding(
                ERROR,
                "web-fixed-port",
                f"the web command{said} listens on port {port}, not $PORT: "
                "Heroku gives each web dyno its own $PORT and crashes a dyno that does not bind it "
                "(R10)",
                fix,
                "Procfile",
                line,
            )
        )
    return findings


def _bind(tokens: list[str]) -> tuple[str | None, str | None]:
    """The host and port a command line names (--bind host:port, --host, --port, runserver addr:port)."""
    host = port = None
    for option, value in _options(tokens):
        if option in ("--bind", "-b", "--listen"):
            if ":" in value:
                host, _, port = value.rpartition(":")
            elif value.isdigit():
                port = value
            else:
                host = value  # daphne's -b is the host alone
        elif option in ("--host", "-h", "-H"):
            host = value
        elif option in ("--port", "-p", "-P"):
            port = value
    if "runserver" in tokens:
        rest = [t for t in tokens[tokens.index("runserver") + 1 :] if not t.startswith("-")]
        if rest:
            host, _, port = rest[0].rpartition(":") if ":" in rest[0] else ("", "", rest[0])
            host = host or None
    return (host.strip("*") or None) if host else None, port


def _options(tokens: list[str]) -> Iterator[tuple[str, str]]:
    for index, token in enumerate(tokens):
        if token.startswith("-") and "=" in token:
            option, _, value = token.partition("=")
            yield option, value
        elif token.startswith("-") and index + 1 < len(tokens):
            yield token, tokens[index + 1]


def _script(src: AppSource, command: str) -> str | None:
    """The Python file the web command runs (python app.py, python -m pkg.server), if in the app."""
    try:
        tokens = shlex.split(command)
    except ValueError:
        return None
    for index, token in enumerate(tokens):
        if not re.fullmatch(r"python(\d(\.\d+)?)?", Path(token).name):
            continue
        rest = tokens[index + 1 :]
        if rest[:1] == ["-m"] and len(rest) > 1:
            base = rest[1].replace(".", "/")
            candidates = [f"{base}.py", f"{base}/__main__.py"]
        else:
            candidates = [next((t for t in rest if not t.startswith("-")), "").removeprefix("./")]
        return next((c for c in candidates if c in src.files), None)
    return None


def _code_hints(src: AppSource, rel: str) -> list[Finding]:
    tree = src.tree(rel)
    if tree is None:
        return []
    text = src.text(rel) or ""
    flask = re.search(r"^\s*(from|import)\s+flask\b", text, re.M) is not None
    findings = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        bound = _call_bind(node, flask)
        if bound is None:
            continue
        host, port, host_why, port_why = bound
        if host in LOOPBACK_HOSTS:
            findings.append(
                Finding(
                    ERROR,
                    "web-loopback",
                    f"the web process listens on {host}{host_why}: Heroku's "
                    "router cannot reach a dyno's loopback interface (R10 after 60 s)",
                    _CODE_FIX,
                    rel,
                    node.lineno,
                )
            )
        if port is not None:
            findings.append(
                Finding(
                    ERROR,
                    "web-fixed-port",
                    f"the web process listens on port {port}{port_why}, not "
                    "$PORT: Heroku gives each web dyno its own $PORT (R10 after 60 s)",
                    _CODE_FIX,
                    rel,
                    node.lineno,
                )
            )
    return findings


def _call_bind(node: ast.Call, flask: bool) -> tuple[str | None, int | None, str, str] | None:
    """(literal host, literal port, and why each: a default) of a call that starts a server, else None."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
    keywords = {k.arg: k.value for k in node.keywords if k.arg}
    host_node, port_node = keywords.get("host"), keywords.get("port")
    host_why = port_why = ""
    if name in _ADDRESS_TUPLE:
        first = node.args[0] if node.args else None
        if not isinstance(first, ast.Tuple) or len(first.elts) != 2:
            return None
        host_node, port_node = first.elts
    elif name == "make_server" and len(node.args) >= 2:
        host_node, port_node = node.args[0], node.args[1]
    elif name == "run" and owner == "uvicorn":
        if host_node is None:
            host_node, host_why = ast.Constant("127.0.0.1"), " (uvicorn.run's default host)"
    elif name == "run" and flask and owner not in _NOT_SERVERS:
        host_node = host_node or (node.args[0] if node.args else None)
        port_node = port_node or (node.args[1] if len(node.args) > 1 else None)
        if host_node is None:
            host_node, host_why = ast.Constant("127.0.0.1"), " (Flask's app.run default host)"
        if port_node is None:
            port_node, port_why = ast.Constant(5000), " (Flask's app.run default port)"
    elif name not in ("run_app", "serve"):
        return None
    host = host_node.value if isinstance(host_node, ast.Constant) and isinstance(host_node.value, str) else None
    port = port_node.value if isinstance(port_node, ast.Constant) and isinstance(port_node.value, int) else None
    return host, port, host_why, port_why


# the short real run
@dataclass
class Trial:
    outcome: str = "failed"  # up, loopback, timeout, crashed, failed
    detail: str = ""
    port: int | None = None  # the $PORT web.1 was given
    seconds: float = 0.0  # from "Starting process" to the outcome
    listening: set[str] = field(default_factory=set)  # "ip:port" web.1 listened on besides $PORT
    app_lines: list[str] = field(default_factory=list)  # web.1's output up to the outcome
    failure: BaseException | None = None

    @property
    def evidence(self) -> str:
        """What the run showed, in a few words."""
        if self.outcome == "loopback":
            return f"web.1 listened on 127.0.0.1:{self.port} only"
        if self.outcome == "timeout":
            where = (
                f"listened on {', '.join(sorted(self.listening))}, not on $PORT ({self.port}), and "
                if self.listening
                else ""
            )
            return f"web.1 {where}got R10 after {self.seconds:.0f}s"
        return f"web.1 {self.outcome}"


def trial_run(src: AppSource, boot_timeout: float) -> Trial:
    """Run web.1 from a copy of the app until it is up, fails to bind, or crashes."""
    from ..api import App  # the whole runtime: only when the app is really run
    from ..app import load_app

    assert src.procfile is not None
    top = Path(tempfile.mkdtemp(prefix="dynosim-doctor-"))
    try:
        staged = _stage(src, top)
        formation = {kind: int(kind == "web") for kind in src.procfile.formation_types}
        app = App(staged, formation=formation, boot_timeout=boot_timeout, dirty=True, ready_timeout=BUILD_TIMEOUT)
        runtime_dir = load_app(staged).runtime_dir  # where its dyno filesystems go: removed after
        try:
            trial = _watch(app, staged, boot_timeout)
        finally:
            wipe_dir(runtime_dir, runtime_dir.parent)
    except DynosimError as exc:
        trial = Trial("failed", failure=exc)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    return trial


def _stage(src: AppSource, top: Path) -> Path:
    """A copy of what `dynosim run --dirty` would deploy, with the config vars, minus the release phase
    (doctor must not run migrations against whatever database .env names)."""
    staged = top / src.root.name
    staged.mkdir()
    export_source(src.root, staged, dirty=True, say=lambda _: None)
    if (src.root / ".env").is_file():
        shutil.copy2(src.root / ".env", staged / ".env")
    config = src.root / ".dynosim" / "config.json"
    if config.is_file():
        (staged / ".dynosim").mkdir(mode=0o700, exist_ok=True)
        shutil.copy2(config, staged / ".dynosim" / "config.json")
    release = src.procfile.release if src.procfile else None
    if release is not None:
        lines = (staged / "Procfile").read_text().split("\n")
        lines[release.line - 1] = "# " + lines[release.line - 1]
        (staged / "Procfile").write_text("\n".join(lines))
    return staged


def _watch(app: App, staged: Path, boot_timeout: float) -> Trial:
    """Start the app, watch web.1 until it is up, fails or crashes, then stop everything."""
    trial = Trial()
    failure: list[BaseException] = []

    def start() -> None:
        try:
            app.start()
        except BaseException as exc:
            failure.append(exc)

    starter = threading.Thread(target=start, name="doctor-start", daemon=True)
    starter.start()
    started_at: float | None = None
    scanned = 0.0
    deadline = time.monotonic() + BUILD_TIMEOUT
    try:
        while True:
            lines = app.logs.lines(dyno="web.1")
            if started_at is None and any(line.text.startswith("Starting process") for line in lines):
                started_at = time.monotonic()
                deadline = started_at + boot_timeout + 10
            decided = _decide(trial, lines)
            if decided is not None:
                trial.app_lines = [line.text for line in lines[:decided] if line.source == "app"][-LAST_LINES:]
                break
            if not starter.is_alive():
                if failure:
                    trial.outcome, trial.failure = "failed", failure[0]
                else:
                    trial.outcome = "up"
                break
            if time.monotonic() > deadline:
                trial.outcome, trial.detail = "failed", "gave up waiting for web.1"
                break
            if started_at is not None and time.monotonic() - scanned > SCAN_EVERY:
                scanned = time.monotonic()
                port, listening = _listening(staged)
                trial.port = port or trial.port
                trial.listening |= listening
            time.sleep(POLL)
        trial.seconds = time.monotonic() - started_at if started_at else 0.0
        if trial.outcome == "failed" and trial.failure is None and failure:
            trial.failure = failure[0]
    finally:
        if not failure:  # App.start stops the app itself when it fails
            app.stop()
        starter.join(5)  # it ends with the app's loop; never wait on it long
    return trial


def _decide(trial: Trial, lines: Sequence[LogLine]) -> int | None:
    """The index of the line that settles the outcome, which it sets; None while undecided."""
    for index, line in enumerate(lines):
        if line.source == "dynosim" and "listens on 127.0.0.1:" in line.text:
            trial.outcome, trial.detail = "loopback", line.text
            trial.port = int(re.search(r"127\.0\.0\.1:(\d+)", line.text).group(1))  # type: ignore[union-attr]
            return index
        if line.source == "heroku" and line.text.startswith("Error R10"):
            trial.outcome, trial.detail = "timeout", line.text
            return index
        if line.source == "heroku" and line.text == "State changed from starting to up":
            trial.outcome = "up"
            return index
        if line.source == "heroku" and line.text.startswith("Process exited with status"):
            trial.outcome, trial.detail = "crashed", line.text.rsplit(" ", 1)[-1]
            return index
    return None


def _listening(staged: Path) -> tuple[int | None, set[str]]:
    """web.1's $PORT, and the other TCP ports its processes listen on (found by dynosim's dyno marker)."""
    try:
        run_id = json.loads((staged / ".dynosim" / "run.json").read_text())["run_id"]
    except (OSError, ValueError, KeyError):
        return None, set()
    prefix = f"{run_id}/web.1/"
    port: int | None = None
    found: set[str] = set()
    for process in psutil.process_iter():
        try:
            env = process.environ()
            if not env.get(MARKER, "").startswith(prefix):
                continue
            port = int(env["PORT"]) if env.get("PORT", "").isdigit() else port
            for conn in process.net_connections("tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr:
                    found.add(f"{conn.laddr.ip}:{conn.laddr.port}")
        except (psutil.Error, OSError):
            continue
    return port, {address for address in found if port is None or not address.endswith(f":{port}")}


def findings(trial: Trial, boot_timeout: float) -> list[Finding]:
    """What the run showed, as findings."""
    seen = "running web.1"
    if trial.outcome == "up":
        return [
            Finding(
                INFO,
                "web-up",
                f"web.1 listened on 0.0.0.0:$PORT {trial.seconds:.1f}s after it started "
                "(a short local run; skip it with --no-run)",
                "",
            )
        ]
    if trial.outcome == "loopback":
        return [
            Finding(
                ERROR,
                "web-loopback",
                f"{seen}: it listens on 127.0.0.1:{trial.port} only; Heroku's router "
                "cannot reach a dyno's loopback interface, so the dyno fails with R10",
                "listen on all interfaces: 0.0.0.0:$PORT (gunicorn --bind 0.0.0.0:$PORT, "
                'app.run(host="0.0.0.0"), HTTPServer(("0.0.0.0", port), …))',
            )
        ]
    if trial.outcome == "timeout" and trial.listening:
        where = ", ".join(sorted(trial.listening))
        return [
            Finding(
                ERROR,
                "web-fixed-port",
                f"{seen}: it listens on {where} but not on its $PORT ({trial.port}): {trial.detail}",
                'listen on the port Heroku gives in $PORT: int(os.environ["PORT"]), --port $PORT',
            )
        ]
    if trial.outcome == "timeout":
        return [
            Finding(
                ERROR,
                "boot-timeout",
                f"{seen}: {trial.detail} (Heroku's limit is 60 s; doctor waited {boot_timeout:g} s)",
                "bind 0.0.0.0:$PORT as soon as the process starts; move slow "
                "start-up work to the release phase or a worker",
            )
        ]
    if trial.outcome == "crashed":
        tail = "\n".join(f"  {line}" for line in trial.app_lines) or "  (no output)"
        return [
            Finding(
                ERROR,
                "boot-crash",
                f"web.1 exited with status {trial.detail} while booting; its last lines:\n{tail}",
                "fix the error above (dynosim run shows the whole log); a missing "
                "module often means a dependency missing from requirements.txt",
            )
        ]
    failure = trial.failure
    if isinstance(failure, BuildError):
        return [
            Finding(
                ERROR,
                "build-failed",
                f"the build failed: {failure}",
                "fix the build (dynosim run shows its whole output)",
            )
        ]
    what = str(failure) if isinstance(failure, DynosimError) else (trial.detail or repr(failure))
    return [
        Finding(
            WARNING,
            "run-failed",
            f"could not run web.1 to check it: {what.splitlines()[0] if what else '?'}",
            "fix that and run doctor again, or skip the run with --no-run",
        )
    ]


def merge(static: list[Finding], trial: Trial, boot_timeout: float) -> list[Finding]:
    """What the run showed settles the static hints: confirmed ones carry its evidence, wrong ones go."""
    live = findings(trial, boot_timeout)
    if trial.outcome == "up":
        return live
    merged = list(static)
    for finding in live:
        same = [i for i, f in enumerate(merged) if f.code == finding.code]
        if not same:
            merged.append(finding)
            continue
        first = merged[same[0]]
        message = f"{first.message}; confirmed by running it: {trial.evidence}"
        merged[same[0]] = Finding(first.severity, first.code, message, first.fix, first.file, first.line)
    return merged
