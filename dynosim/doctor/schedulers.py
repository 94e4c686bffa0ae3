"""The classic in-process scheduler bug: jobs scheduled inside the web process run once per web dyno
(and per gunicorn worker), so with web=2 every email goes out twice.

The web command's entry module (`gunicorn app:app`, `python server.py`) and the app modules it
imports are read for an APScheduler background scheduler, the `schedule` library's jobs or a Flask-
APScheduler instance; a web command that runs celery beat (`-B`, `beat`) is the same bug.
"""

from __future__ import annotations

import ast
import re

from .findings import WARNING, Finding
from .source import AppSource

# APScheduler's schedulers that run beside the app's own code; BlockingScheduler is a clock process's
_IN_PROCESS = frozenset(
    {"BackgroundScheduler", "AsyncIOScheduler", "GeventScheduler", "TornadoScheduler", "TwistedScheduler"}
)
_CELERY_BEAT = re.compile(r"\bcelery\b.*(\sbeat\b|\s-B\b|\s--beat\b)")
_FIX = (
    'run each job once, outside web: as a Heroku Scheduler job (`dynosim scheduler:add "python -m tasks" '
    "--every 1h`), or from a single `clock` dyno (Procfile `clock: python clock.py` with APScheduler's "
    "BlockingScheduler, scaled to clock=1)"
)


def schedulers(src: AppSource) -> list[Finding]:
    if src.procfile is None or "web" not in src.procfile.processes:
        return []
    web = src.procfile.processes["web"]
    if _CELERY_BEAT.search(web.command):
        return [
            Finding(
                WARNING,
                "scheduler-in-web",
                f"the web command runs celery beat ({web.command}): with web=N every periodic task is sent N times",
                _FIX.replace("as a Heroku", "celery beat in one `beat` dyno (scaled to 1), as a Heroku"),
                src.procfile.path.name,
                web.line,
            )
        ]
    found = []
    for rel in _web_modules(src, web.command):
        tree = src.tree(rel)
        for node in ast.walk(tree) if tree is not None else ():
            what = _scheduler(node)
            if what is not None and not src.off_heroku(rel, node):
                found.append(
                    Finding(
                        WARNING,
                        "scheduler-in-web",
                        f"an in-process scheduler ({what}) starts in the web process: with web=N (and "
                        "WEB_CONCURRENCY gunicorn workers in each) every job runs N times over",
                        _FIX,
                        rel,
                        node.lineno,  # type: ignore[attr-defined]
                    )
                )
                break
    return found


def _scheduler(node: ast.AST) -> str | None:
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    if name in _IN_PROCESS:
        return f"APScheduler's {name}"
    if name == "APScheduler":
        return "Flask-APScheduler"
    if name == "every" and isinstance(func, ast.Attribute) and ast.unparse(func.value) == "schedule":
        return "the schedule library's schedule.every()"
    return None


def _web_modules(src: AppSource, command: str) -> list[str]:
    """The web command's entry file and the app's own modules it imports, transitively."""
    known = set(src.app_python_files)
    # `app:app` (gunicorn, uvicorn, waitress), `server.py`, `-m pkg.main`: a word naming an app module
    words = (word.split(":")[0].removesuffix(".py").replace("/", ".") for word in command.split())
    queue = [rel for rel in (_module_file(word, known) for word in words) if rel]
    seen: list[str] = []
    while queue:
        rel = queue.pop(0)
        if rel in seen:
            continue
        seen.append(rel)
        tree = src.tree(rel)
        for node in ast.walk(tree) if tree is not None else ():
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and not node.level
                else []
            )
            queue.extend(found for name in names if (found := _module_file(name, known)))
    return seen


def _module_file(name: str, known: set[str]) -> str | None:
    path = name.replace(".", "/")
    for rel in (f"{path}.py", f"{path}/__init__.py"):
        if rel in known:
            return rel
    return None
