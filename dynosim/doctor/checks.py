"""The static checks: what reading the app's files shows would go wrong on Heroku."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from .findings import ERROR, WARNING, Finding
from .source import AppSource

_PROCFILE_WARNING = re.compile(r"^Procfile:(\d+): (.*)$", re.S)
# procfile.py's warnings end with the fix after "; " or ". ": split it off.
_FIX_PART = re.compile(r"^(.*?)[.;] ((?:[Ww]rite|[Uu]se|[Pp]ut|[Ss]ave|[Rr]ename)\b.*)$", re.S)
_SERVERS = re.compile(r"\b(gunicorn|uvicorn|hypercorn|daphne|waitress-serve|runserver|flask run)\b|\.py\b")
_MIGRATES = re.compile(r"\bmigrate\b|\bdb upgrade\b|\balembic\b.*\bupgrade\b")


# 1. no Procfile, or no web type
def procfile(src: AppSource) -> list[Finding]:
    if src.procfile is None:
        error = (src.procfile_error or "").partition(": ")[2]  # after the path it names
        line, note = suggest_web(src)
        if "no process type found" in error:
            return [
                Finding(
                    ERROR,
                    "no-web",
                    "the Procfile declares no process type: Heroku would start no web dyno (H14)",
                    f'add the line "{line}"{note}',
                    "Procfile",
                )
            ]
        if "only reads a file named exactly" in error:
            return [Finding(ERROR, "no-procfile", error.split(". ")[0], "rename it to Procfile")]
        if "no Procfile" in error or not error:
            return [
                Finding(
                    ERROR,
                    "no-procfile",
                    "no Procfile: Heroku would start no web dyno and answer every "
                    "request with H14 (No web processes running)",
                    f'create a file named Procfile with the line "{line}"{note}',
                )
            ]
        what, _, fix = error.partition(". ")
        return [Finding(ERROR, "no-procfile", what, fix or "fix the Procfile", "Procfile")]
    if "web" in src.procfile.processes:
        return []
    server = next(
        (p for p in src.procfile.processes.values() if p.name != "release" and _SERVERS.search(p.command)), None
    )
    if server is not None:
        fix = f'rename "{server.name}:" to "web:" (only the web type receives HTTP from Heroku\'s router)'
        return [
            Finding(
                ERROR,
                "no-web",
                f'no "web" process type; "{server.name}" looks like the web server but '
                "Heroku routes requests only to web dynos (H14)",
                fix,
                "Procfile",
                server.line,
            )
        ]
    line, note = suggest_web(src)
    return [
        Finding(
            ERROR,
            "no-web",
            'no "web" process type: Heroku would answer every request with H14 (No web processes running)',
            f'add the line "{line}"{note}',
            "Procfile",
        )
    ]


def suggest_web(src: AppSource) -> tuple[str, str]:
    """A web line for this app, from what is there, and a note on what else it needs."""

    def flask_like(kind: str) -> tuple[str, str] | None:
        for rel in src.python_files:
            if "/" in rel:
                continue
            match = re.search(rf"^(\w+)\s*=\s*(?:\w+\.)?{kind}\(", src.text(rel) or "", re.M)
            if match:
                return rel[:-3], match.group(1)
        return None

    if src.exists("manage.py"):
        wsgi = next((rel for rel in src.python_files if rel.count("/") == 1 and rel.endswith("/wsgi.py")), None)
        if wsgi:
            return f"web: gunicorn {wsgi.split('/')[0]}.wsgi", _needs(src, "gunicorn")
    if (found := flask_like("FastAPI")) is not None:
        return f"web: uvicorn {found[0]}:{found[1]} --host 0.0.0.0 --port $PORT", _needs(src, "uvicorn")
    if (found := flask_like("Flask")) is not None:
        return f"web: gunicorn {found[0]}:{found[1]}", _needs(src, "gunicorn")
    if src.depends_on("gunicorn") and (src.exists("app.py") or src.exists("wsgi.py")):
        module = "app" if src.exists("app.py") else "wsgi"
        return f"web: gunicorn {module}:app", ""
    script = next((name for name in ("app.py", "server.py", "main.py") if src.exists(name)), None)
    if script:
        return f"web: python {script}", f" (and make {script} listen on 0.0.0.0:$PORT)"
    return "web: gunicorn app:app", _needs(src, "gunicorn")


def _needs(src: AppSource, package: str) -> str:
    return "" if src.depends_on(package) else f", and add {package} to requirements.txt"


# 2. Procfile lines Heroku drops or rewrites
def procfile_lines(src: AppSource) -> list[Finding]:
    findings = []
    for warning in src.procfile.warnings if src.procfile else ():
        match = _PROCFILE_WARNING.match(warning)
        line, text = (int(match.group(1)), match.group(2)) if match else (None, warning)
        split = _FIX_PART.match(text)
        if split:
            message, fix = split.group(1), split.group(2)
            fix = fix[0].upper() + fix[1:]
        elif "defined again" in text:
            message, fix = text, "keep one line per process type"
        else:
            message, fix = text, "fix or delete this line"
        findings.append(Finding(WARNING, "procfile-line", message, fix, "Procfile", line))
    return findings


# 5. DATABASE_URL handed to SQLAlchemy as Heroku sets it (postgres://)
def database_url(src: AppSource) -> list[Finding]:
    users = [
        rel
        for rel in src.app_python_files
        if "DATABASE_URL" in (text := src.text(rel) or "")
        and re.search(r"create_engine|SQLALCHEMY_DATABASE_URI|sqlalchemy", text)
    ]
    if not users or any(_rewrites_scheme(src, rel) for rel in src.python_files):
        return []
    findings = []
    for rel in users:
        findings.append(
            Finding(
                ERROR,
                "postgres-scheme",
                "DATABASE_URL goes to SQLAlchemy as it is, but Heroku Postgres sets it as postgres://…, which "
                "SQLAlchemy 1.4+ rejects (NoSuchModuleError: Can't load plugin: sqlalchemy.dialects:postgres)",
                'rewrite the scheme first: url = os.environ["DATABASE_URL"].replace("postgres://", "postgresql://", 1)',
                rel,
                src.grep(rel, "DATABASE_URL"),
            )
        )
    return findings


def _rewrites_scheme(src: AppSource, rel: str) -> bool:
    text = src.text(rel) or ""
    if "dj_database_url" in text or re.search(r"""replace\(\s*['"]postgres://""", text):
        return True
    return any(value in ("postgres://", "postgres:") for value, _ in src.strings(rel))


_SQLITE_LOST = (
    "on Heroku a SQLite file lives in the dyno's ephemeral filesystem and is lost at every restart, "
    "deploy and daily cycle, and each dyno (web.2, a worker, a one-off) has its own copy"
)
_SQLITE_FIX = (
    "use the heroku-postgresql add-on through DATABASE_URL (dynosim run --addon heroku-postgresql gives "
    "you one locally) and keep SQLite for tests only"
)
_SQLITE_FIX_DJANGO = (
    'read DATABASE_URL: DATABASES = {"default": dj_database_url.config(conn_max_age=600, '
    "ssl_require=True)} with the heroku-postgresql add-on"
)


# 6. SQLite as the database, or as the fallback when DATABASE_URL is unset; not where only a laptop runs it
def sqlite_fallback(src: AppSource) -> list[Finding]:
    findings = []
    for rel in src.app_python_files:
        found = [
            _sqlite_setting(src, rel, node)
            for node in src.string_nodes(rel)
            if isinstance(node.value, str)
            and (node.value.startswith("sqlite:") or node.value == "django.db.backends.sqlite3")
            and not src.off_heroku(rel, node)
        ]
        found += [_sqlite_connect(rel, call) for call in _sqlite_connects(src, rel)]
        if found:
            findings.append(min(found, key=lambda finding: finding.line or 0))  # one per file
    return findings


def _sqlite_setting(src: AppSource, rel: str, node: ast.Constant) -> Finding:
    source_line = (src.text(rel) or "").splitlines()[node.lineno - 1]
    fallback = "DATABASE_URL" in source_line or "default" in source_line
    what = "falls back to SQLite when DATABASE_URL is unset" if fallback else "uses SQLite"
    return Finding(
        WARNING,
        "sqlite",
        f"the configuration {what}: {_SQLITE_LOST}",
        _SQLITE_FIX_DJANGO if str(node.value).startswith("django.") else _SQLITE_FIX,
        rel,
        node.lineno,
    )


def _sqlite_connect(rel: str, call: ast.Call) -> Finding:
    return Finding(
        WARNING,
        "sqlite",
        f"the app keeps its data in a SQLite file ({ast.unparse(call)}): {_SQLITE_LOST}",
        _SQLITE_FIX,
        rel,
        call.lineno,
    )


def _sqlite_connects(src: AppSource, rel: str) -> list[ast.Call]:
    """sqlite3.connect(…) calls (through any import of it) that open a file, on Heroku's side of the code."""
    tree = src.tree(rel)
    if tree is None:
        return []
    modules: set[str] = {"sqlite3"}
    functions: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.asname for alias in node.names if alias.name == "sqlite3" and alias.asname)
        elif isinstance(node, ast.ImportFrom) and node.module == "sqlite3":
            functions.update(alias.asname or alias.name for alias in node.names if alias.name == "connect")
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if not (
            (
                isinstance(func, ast.Attribute)
                and func.attr == "connect"
                and isinstance(func.value, ast.Name)
                and func.value.id in modules
            )
            or (isinstance(func, ast.Name) and func.id in functions)
        ):
            continue
        target = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "database"), None)
        if isinstance(target, ast.Constant) and str(target.value).startswith((":memory:", "file::memory:")):
            continue  # in memory: nothing on the disk to lose
        if not src.off_heroku(rel, node):
            calls.append(node)
    return calls


# 6. uploads saved on the dyno's disk (werkzeug's FileStorage.save, as Flask hands them out)
def uploads(src: AppSource) -> list[Finding]:
    settings = _upload_settings(src)
    found = []
    for rel in src.app_python_files:
        tree = src.tree(rel)
        saves = (
            [
                call
                for call in _upload_saves(tree)
                if not _scratch(_resolved(_save_target(call), settings)) and not src.off_heroku(rel, call)
            ]
            if tree is not None
            else []
        )
        if saves:
            found.append(
                (f"uploaded files are saved to the dyno's disk ({ast.unparse(saves[0])})", rel, saves[0].lineno)
            )
    if not found:  # saved where this cannot follow (a helper's argument): the setting says where they go
        found = [
            (f"uploads go to {setting}, a folder on the dyno's disk", rel, line)
            for rel, (line, setting) in settings.folders.items()
        ]
    return [
        Finding(WARNING, "local-uploads", f"{what}: {_UPLOADS_LOST}", _UPLOADS_FIX, rel, line)
        for what, rel, line in found
    ]


_UPLOADS_LOST = (
    "on Heroku that filesystem is ephemeral: every upload is lost at the next restart, deploy and daily "
    "cycle, and a file web.1 saved is not there for web.2 or a worker"
)
_UPLOADS_FIX = (
    "store uploads in object storage: S3 (boto3's upload_fileobj(request.files[...], bucket, key)) or an "
    "add-on such as Bucketeer or Cloudinary; keep /tmp for files needed only while a request runs"
)
_UPLOAD_SETTING = re.compile(r"^UPLOADS?_(FOLDER|DIR|DIRECTORY|PATH|ROOT)$", re.I)
_SCRATCH_PATH = re.compile(r"['\"]/tmp\b|\btempfile\b|gettempdir|TMPDIR|BytesIO|SpooledTemporaryFile")


@dataclass(frozen=True)
class _UploadSettings:
    values: dict[str, ast.expr]  # a name or config key → what it is set to
    folders: dict[str, tuple[int, str]]  # file → (line, source) of an upload folder setting that is not /tmp


def _upload_settings(src: AppSource) -> _UploadSettings:
    """What the app's names and config keys are set to (UPLOAD_FOLDER = "uploads", app.config["X"] = …,
    app.config.update(X=…)), across its files, for telling where a save goes."""
    values: dict[str, ast.expr] = {}
    folders: dict[str, tuple[int, str]] = {}
    for rel in src.app_python_files:
        tree = src.tree(rel)
        for node in ast.walk(tree) if tree is not None else ():
            pairs: list[tuple[str, ast.expr]] = []
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        pairs.append((target.id, node.value))
                    elif isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant):
                        pairs.append((str(target.slice.value), node.value))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "update":
                pairs += [(k.arg, k.value) for k in node.keywords if k.arg]
            for name, value in pairs:
                values[name] = value
                if _UPLOAD_SETTING.match(name) and rel not in folders and not _scratch(ast.unparse(value)):
                    folders[rel] = (value.lineno, f"{name} = {ast.unparse(value)}")
    return _UploadSettings(values, folders)


def _upload_saves(tree: ast.Module) -> list[ast.Call]:
    """The .save(…) calls on an uploaded file: request.files[...], .get(...), .getlist(...)'s items, or a name
    bound to one."""

    def upload(node: ast.expr) -> bool:
        if isinstance(node, ast.Subscript):
            return _is_files(node.value)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            return _is_files(node.func.value)
        return isinstance(node, ast.Name) and node.id in names

    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.NamedExpr)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if upload(node.value):
                names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.For, ast.comprehension)) and isinstance(node.target, ast.Name):
            source = node.iter
            if isinstance(source, ast.Call) and isinstance(source.func, ast.Attribute) and _is_files(source.func.value):
                names.add(node.target.id)  # request.files.getlist("photos"), .values()
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "save"
        and upload(node.func.value)
        and (node.args or any(k.arg == "dst" for k in node.keywords))
    ]


def _save_target(call: ast.Call) -> ast.expr:
    return call.args[0] if call.args else next(k.value for k in call.keywords if k.arg == "dst")


def _is_files(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "files"


def _resolved(target: ast.expr, settings: _UploadSettings, seen: frozenset[str] = frozenset()) -> str:
    """The target's source, with what the names and config keys in it are set to, and theirs in turn."""
    parts = [ast.unparse(target)]
    for node in ast.walk(target):
        key = node.id if isinstance(node, ast.Name) else _key(node)
        if key is not None and key in settings.values and key not in seen:
            parts.append(_resolved(settings.values[key], settings, seen | {key}))
    return " ".join(parts)


def _key(node: ast.AST) -> str | None:
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return str(node.slice.value)
    return None


def _scratch(source: str) -> bool:
    """Whether a path's source says /tmp (or memory): scratch, which Heroku's dynos have for that."""
    return bool(_SCRATCH_PATH.search(source))


# 7. migrations with no release phase to run them
def migrations(src: AppSource) -> list[Finding]:
    if src.procfile is None:
        return []
    found = _migration_tool(src)
    if found is None:
        return []
    command, evidence = found
    at_boot = [p for p in src.procfile.processes.values() if p.name != "release" and _MIGRATES.search(p.command)]
    if at_boot:
        process = at_boot[0]
        return [
            Finding(
                WARNING,
                "migrate-at-boot",
                f"the {process.name} command runs the migrations at every dyno boot: with several dynos "
                "they race, and a failed migration crashes the dynos instead of stopping the deploy",
                f'move them to the release phase: add "release: {command}" and drop them from {process.name}',
                "Procfile",
                process.line,
            )
        ]
    if src.procfile.release is not None:
        return []
    return [
        Finding(
            WARNING,
            "no-release-phase",
            f"the app has database migrations ({evidence}) but the Procfile has no release phase: "
            "nothing runs them on Heroku, and new code meets the old schema",
            f'add "release: {command}" to the Procfile (Heroku runs it before each release goes live)',
            evidence.split(" ")[0],
        )
    ]


def _migration_tool(src: AppSource) -> tuple[str, str] | None:
    """(the command that migrates, where the migrations were seen), or None."""
    django_migration = any(re.search(r"(^|/)migrations/0\w*\.py$", rel) for rel in src.files)
    if src.exists("manage.py") and (src.depends_on("django") or django_migration):
        return "python manage.py migrate", "manage.py with Django"
    flask_migrate = src.depends_on("flask-migrate") or any(
        "flask_migrate" in (src.text(rel) or "") for rel in src.app_python_files
    )
    if flask_migrate or any(rel.startswith("migrations/versions/") for rel in src.files):
        return "flask db upgrade", "migrations/ (Flask-Migrate)"
    if src.exists("alembic.ini") or any(rel.startswith("alembic/versions/") for rel in src.files):
        return "alembic upgrade head", "alembic.ini" if src.exists("alembic.ini") else "alembic/"
    return None


# 8. what the Python buildpack refuses or deprecates
def dependency_file(src: AppSource) -> list[Finding]:
    present = [name for name in ("requirements.txt", "Pipfile.lock", "poetry.lock", "uv.lock") if src.exists(name)]
    if len(present) > 1:
        return [
            Finding(
                ERROR,
                "several-dependency-files",
                f"several dependency files ({', '.join(present)}): Heroku's Python buildpack needs exactly "
                "one and fails the build",
                "keep one, or list the others in .slugignore",
                present[1],
            )
        ]
    if present:
        return []
    if src.exists("Pipfile"):
        return [
            Finding(
                ERROR,
                "no-dependency-file",
                "Pipfile without Pipfile.lock: Heroku's build fails",
                "run pipenv lock and commit Pipfile.lock",
                "Pipfile",
            )
        ]
    alone = "pyproject.toml alone" if src.exists("pyproject.toml") else "no requirements.txt"
    return [
        Finding(
            ERROR,
            "no-dependency-file",
            f"{alone} (nor Pipfile.lock, poetry.lock, uv.lock): Heroku's Python buildpack refuses the app",
            "add a requirements.txt (pip freeze > requirements.txt, or an empty file if the app needs nothing)",
        )
    ]


def runtime_txt(src: AppSource) -> list[Finding]:
    if not src.exists("runtime.txt"):
        return []
    match = re.search(r"python-(\d+\.\d+)", src.text("runtime.txt") or "")
    version = match.group(1) if match else "3.12"
    return [
        Finding(
            WARNING,
            "runtime-txt",
            "runtime.txt is deprecated by Heroku's Python buildpack",
            f'replace it with a .python-version file containing "{version}"',
            "runtime.txt",
            1,
        )
    ]


# 8. HTTPS redirect that cannot see Heroku's X-Forwarded-Proto (the router terminates TLS)
def ssl_redirect(src: AppSource) -> list[Finding]:
    web = src.procfile.processes.get("web") if src.procfile else None
    if web is not None and re.match(r"\s*gunicorn\b", web.command):
        return []  # the buildpack sets FORWARDED_ALLOW_IPS='*': gunicorn trusts X-Forwarded-Proto
    texts = {rel: src.text(rel) or "" for rel in src.app_python_files}
    findings = []
    if not any("SECURE_PROXY_SSL_HEADER" in text for text in texts.values()):
        for rel, text in texts.items():
            if re.search(r"^\s*SECURE_SSL_REDIRECT\s*=\s*(?!False\b)\S", text, re.M):
                findings.append(
                    Finding(
                        WARNING,
                        "ssl-redirect-loop",
                        "SECURE_SSL_REDIRECT without SECURE_PROXY_SSL_HEADER: Heroku's router ends TLS and sends plain "
                        "HTTP with X-Forwarded-Proto: https, so Django redirects every request to HTTPS, forever",
                        'add SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")',
                        rel,
                        src.grep(rel, r"^\s*SECURE_SSL_REDIRECT\s*="),
                    )
                )
    if not any("ProxyFix" in text for text in texts.values()):
        for rel, text in texts.items():
            if re.search(r"\bTalisman\(", text) and "force_https=False" not in text:
                findings.append(
                    Finding(
                        WARNING,
                        "ssl-redirect-loop",
                        "Flask-Talisman forces HTTPS but nothing trusts X-Forwarded-Proto: behind Heroku's router "
                        "every request looks like plain HTTP and is redirected, forever",
                        "wrap the app: app.wsgi_app = ProxyFix(app.wsgi_app, x_proto=1) (werkzeug.middleware.proxy_fix)",
                        rel,
                        src.grep(rel, r"\bTalisman\("),
                    )
                )
    return findings
