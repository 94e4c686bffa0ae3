"""Database pools larger than the Postgres plan allows: every web dyno runs WEB_CONCURRENCY (or gunicorn
`-w`) processes, each with its own pool, so pool × workers × web dynos connections may be open at
once, and past the plan's limit the next one gets Postgres' `too many connections for role`.

Read statically, from plain literals only: the plan of the app's DATABASE add-on (app.json, or
`dynosim addons:create`); web's quantity and size (app.json formation, `ps:scale`); the workers
(`-w`/`--workers` in the Procfile, `workers =` in gunicorn.conf.py or the `-c` file, else
WEB_CONCURRENCY from app.json env/.env/config:set, else what Heroku's Python buildpack sets for the
dyno size); the pool per process (SQLAlchemy's create_engine(pool_size=…, max_overflow=…), with its
defaults 5 and 10; Flask-SQLAlchemy's SQLALCHEMY_ENGINE_OPTIONS or engine_options; Django: one
connection per thread, kept open with CONN_MAX_AGE).
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..addons import app_requests
from ..addons.catalogue import offering_for
from ..addons.plans import PostgresPlan, postgres_plan
from ..config import ConfigStore, load_dotenv
from ..errors import DynosimError
from ..formation import FormationStore, resolve_formation
from ..manifest import load_manifest
from .findings import WARNING, Finding
from .source import AppSource

SQLALCHEMY_POOL = (5, 10)  # QueuePool's pool_size and max_overflow when create_engine is not told
_SERVERS = ("gunicorn", "uvicorn")  # both take WEB_CONCURRENCY as their default worker count


@dataclass(frozen=True)
class Pool:
    size: int  # connections one process may hold at once
    what: str  # "create_engine(pool_size=5, max_overflow=10)"
    per_thread: bool  # Django: one per thread, not one pool per process
    file: str
    line: int


@dataclass(frozen=True)
class Workers:
    count: int
    what: str  # "gunicorn -w 4 in the Procfile"
    threads: int = 1


def pools(src: AppSource) -> list[Finding]:
    if src.procfile is None or "web" not in src.procfile.processes:
        return []
    plan = _plan(src)
    pool = _pool(src)
    if plan is None or pool is None:
        return []
    web = src.procfile.processes["web"]
    try:
        manifest = load_manifest(src.root)
        formation = resolve_formation(src.procfile, manifest, app=FormationStore(src.root / ".dynosim").load())
    except DynosimError:
        return []  # a broken app.json or formation is another check's finding
    quantity = formation.quantities.get("web", 1)
    workers = _workers(src, web.command, formation.sizes["web"].web_concurrency, formation.sizes["web"].name)
    per_process = pool.size * (workers.threads if pool.per_thread else 1)
    total = per_process * workers.count * quantity
    if total <= plan.connections:
        return []
    pool_words = f"{pool.size} per thread × {workers.threads} threads" if pool.per_thread else str(pool.size)
    dynos = f"{quantity} web dyno{'s' if quantity != 1 else ''}"
    message = (
        f"{pool_words} × {workers.count} workers × {dynos} = {total} connections > {plan.name}'s "
        f"{plan.connections}: past it the next connection gets Postgres' `too many connections for role` "
        f"(pool: {pool.what}; workers: {workers.what}; web={quantity})"
    )
    room = max(plan.connections // max(workers.count * quantity, 1), 1)
    bigger = _bigger_plan(total)
    fix = (
        f"keep pool × workers × web dynos within {plan.connections}: e.g. a pool of {room} per process "
        f"(pool_size={room}, max_overflow=0), fewer workers (WEB_CONCURRENCY), or a plan with more connections"
        + (f" (heroku-postgresql:{bigger.name} allows {bigger.connections})" if bigger else "")
        + "; or put PgBouncer in front (heroku-buildpack-pgbouncer)"
    )
    return [Finding(WARNING, "pool-exceeds-plan", message, fix, pool.file, pool.line)]


# --- the plan ---------------------------------------------------------------------------------------


def _plan(src: AppSource) -> PostgresPlan | None:
    """The plan of the app's DATABASE Postgres (app.json's, or addons:create's); None without one."""
    try:
        requests = app_requests(load_manifest(src.root).addons, src.root / ".dynosim")
    except DynosimError:
        return None
    for request in requests:
        try:
            if (
                offering_for(request.plan).service == "postgres"
                and (request.as_name or "DATABASE").upper() == "DATABASE"
            ):
                return postgres_plan(request.plan)
        except DynosimError:
            return None  # an unknown plan is refused at addons:create and at the run's start
    return None


def _bigger_plan(total: int) -> PostgresPlan | None:
    from ..addons.plans import POSTGRES_PLANS

    fits = [plan for plan in POSTGRES_PLANS.values() if plan.connections >= total]
    return min(fits, key=lambda plan: (plan.connections, plan.storage)) if fits else None


# --- the workers --------------------------------------------------------------------------------------


_WORKERS_FLAG = re.compile(r"^(?:-w(\d+)|--workers=(\d+))$")
_THREADS_FLAG = re.compile(r"^--threads=(\d+)$")


def _workers(src: AppSource, command: str, size_default: int, size: str) -> Workers:
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    server = next((word for word in words if PurePosixPath(word).name in _SERVERS), None)
    if server is None:
        return Workers(1, "one process (the web command is not gunicorn or uvicorn)")
    name = PurePosixPath(server).name
    count, threads = _flag(words, ("-w", "--workers"), _WORKERS_FLAG), _flag(words, ("--threads",), _THREADS_FLAG)
    threads_count = threads or 1
    if count is not None:
        return Workers(count, f"{name} --workers {count} in the Procfile", threads_count)
    if name == "gunicorn":
        conf = _flag_value(words, ("-c", "--config")) or "gunicorn.conf.py"
        conf = conf.removeprefix("python:").removeprefix("./")
        settings = _module_ints(src, conf)
        threads_count = threads or settings.get("threads", 1)
        if "workers" in settings:
            return Workers(settings["workers"], f"workers = {settings['workers']} in {conf}", threads_count)
    concurrency = _web_concurrency(src)
    if concurrency is not None:
        value, where = concurrency
        return Workers(value, f"WEB_CONCURRENCY={value} from {where}", threads_count)
    return Workers(
        size_default,
        f"WEB_CONCURRENCY={size_default}, which Heroku's Python buildpack sets on {size} dynos",
        threads_count,
    )


def _flag(words: list[str], names: tuple[str, ...], joined: re.Pattern[str]) -> int | None:
    value = _flag_value(words, names)
    if value is None:
        for word in words:
            if match := joined.match(word):
                value = next(group for group in match.groups() if group)
    return int(value) if value is not None and value.isdigit() else None


def _flag_value(words: list[str], names: tuple[str, ...]) -> str | None:
    for index, word in enumerate(words[:-1]):
        if word in names:
            return words[index + 1]
    for word in words:
        for name in names:
            if name.startswith("--") and word.startswith(name + "="):
                return word.split("=", 1)[1]
    return None


def _module_ints(src: AppSource, rel: str) -> dict[str, int]:
    """Module-level `name = <int literal>` assignments (gunicorn's config file)."""
    tree = src.tree(rel) if src.exists(rel) else None
    found: dict[str, int] = {}
    for node in tree.body if tree is not None else ():
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and type(node.value.value) is int:
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found


def _web_concurrency(src: AppSource) -> tuple[int, str] | None:
    """WEB_CONCURRENCY as the config vars would resolve it: app.json env, then .env, then config:set."""
    found = None
    try:
        sources = [
            ("app.json env", {k: v.value for k, v in load_manifest(src.root).env.items() if v.value is not None}),
            (".env", load_dotenv(src.root / ".env")),
        ]
        if (src.root / ".dynosim" / "config.json").is_file():
            sources.append(("dynosim config:set", ConfigStore(src.root / ".dynosim").load()))
    except DynosimError:
        return None
    for where, values in sources:
        value = str(values.get("WEB_CONCURRENCY", "")).strip()
        if value.isdigit() and int(value) > 0:
            found = (int(value), where)
    return found


# --- the pool -----------------------------------------------------------------------------------------


def _pool(src: AppSource) -> Pool | None:
    """The largest pool one process of the app may hold, from what is written as literals."""
    found: list[Pool] = []
    options = _engine_options(src)  # Flask-SQLAlchemy's, wherever the config says them
    for rel in src.app_python_files:
        tree = src.tree(rel)
        for node in ast.walk(tree) if tree is not None else ():
            if isinstance(node, ast.Call):
                name = _called(node)
                if name == "create_engine":
                    found.extend(_sqlalchemy(node, rel, "create_engine"))
                elif name == "SQLAlchemy" and "flask_sqlalchemy" in (src.text(rel) or ""):
                    given = next((k.value for k in node.keywords if k.arg == "engine_options"), None)
                    if given is not None:
                        options = (given, rel, node.lineno)
                    pool = _options(*options) if options is not None else _default_pool(rel, node.lineno)
                    found.extend([pool] if pool is not None else [])
            elif isinstance(node, ast.Assign) and _assigns(node, "DATABASES"):
                found.extend(_django(node, rel))
    return max(found, key=lambda pool: pool.size) if found else None


def _called(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _sqlalchemy(node: ast.Call, rel: str, what: str) -> list[Pool]:
    keywords = {k.arg: k.value for k in node.keywords if k.arg}
    if "poolclass" in keywords or any(k.arg is None for k in node.keywords):
        return []  # another pool class (NullPool…), or **options: not read
    values = []
    for key, default in zip(("pool_size", "max_overflow"), SQLALCHEMY_POOL, strict=True):
        value = keywords.get(key)
        if value is None:
            values.append(default)
        elif isinstance(value, ast.Constant) and isinstance(value.value, int):
            values.append(value.value)
        else:
            return []  # not a literal
    said = ", ".join(f"{key}={value}" for key, value in zip(("pool_size", "max_overflow"), values, strict=True))
    return [Pool(sum(values), f"{what}({said}) = {sum(values)} each", False, rel, node.lineno)]


def _options(value: ast.expr, rel: str, line: int) -> Pool | None:
    """Flask-SQLAlchemy's engine options: a dict literal, or SQLAlchemy's defaults when absent."""
    if not isinstance(value, ast.Dict):
        return None
    call = ast.Call(
        func=ast.Name("create_engine"),
        args=[],
        keywords=[
            ast.keyword(arg=k.value, value=v)
            for k, v in zip(value.keys, value.values, strict=True)
            if isinstance(k, ast.Constant) and isinstance(k.value, str)
        ],
    )
    call.lineno = line
    pools = _sqlalchemy(call, rel, "SQLALCHEMY_ENGINE_OPTIONS")
    return pools[0] if pools else None


def _engine_options(src: AppSource) -> tuple[ast.expr, str, int] | None:
    """SQLALCHEMY_ENGINE_OPTIONS = {...} (a config class or module) or app.config[...] = {...}, and where."""
    for rel in src.app_python_files:
        tree = src.tree(rel)
        for node in ast.walk(tree) if tree is not None else ():
            if isinstance(node, ast.Assign) and _assigns(node, "SQLALCHEMY_ENGINE_OPTIONS"):
                return node.value, rel, node.lineno
    return None


def _default_pool(rel: str, line: int) -> Pool:
    size = sum(SQLALCHEMY_POOL)
    return Pool(size, f"Flask-SQLAlchemy's default (pool_size=5, max_overflow=10) = {size} each", False, rel, line)


def _assigns(node: ast.Assign, name: str) -> bool:
    for target in node.targets:
        if isinstance(target, ast.Name) and target.id == name:
            return True
        if isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant) and target.slice.value == name:
            return True
    return False


def _django(node: ast.Assign, rel: str) -> list[Pool]:
    """DATABASES = {"default": {...}}: one connection per thread; CONN_MAX_AGE keeps it open."""
    if not isinstance(node.value, ast.Dict):
        return []
    persistent = False
    for entry in node.value.values:
        if isinstance(entry, ast.Dict):
            for key, value in zip(entry.keys, entry.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "CONN_MAX_AGE" and isinstance(value, ast.Constant):
                    persistent = value.value is None or (isinstance(value.value, int) and value.value > 0)
    what = "Django, one connection per thread" + (", kept open (CONN_MAX_AGE)" if persistent else "")
    return [Pool(1, what, True, rel, node.lineno)]
