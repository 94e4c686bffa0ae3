"""Django's static files on Heroku: the Python buildpack runs collectstatic at build time for every
Django app, so a misconfigured staticfiles app fails the build, and a skipped collectstatic leaves
STATIC_ROOT empty (WhiteNoise's manifest storage then answers 500 on every {% static %} page)."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..config import ConfigStore, load_dotenv
from ..errors import DynosimError
from ..manifest import load_manifest
from .findings import ERROR, WARNING, Finding
from .source import AppSource

MANAGE_DEPTH = 3  # as the buildpack's `find . -maxdepth 3 -name manage.py`
STATICFILES_APP = "django.contrib.staticfiles"
_SETTINGS_MODULE = re.compile(r"""DJANGO_SETTINGS_MODULE["']\s*,\s*["']([\w.]+)["']""")
_DISABLE_FIX = "DISABLE_COLLECTSTATIC=1 (app.json env, or heroku config:set)"


@dataclass(frozen=True)
class _Settings:
    files: tuple[str, ...]  # the settings module and what it star-imports, relative to the app
    names: dict[str, tuple[str, int]]  # setting assigned → (file, line) of its first assignment
    strings: frozenset[str]  # every string literal in them


def staticfiles(src: AppSource) -> list[Finding]:
    if not src.depends_on("django"):
        return []
    manage = _manage_py(src)
    disabled = _disabled(src)
    settings = _read_settings(src, manage) if manage is not None else None
    findings: list[Finding] = []
    if settings is not None and disabled is None:
        findings += _build_failures(settings)
    if settings is None or STATICFILES_APP not in settings.strings:
        return findings
    findings += _release_phase(src)
    if manage is not None and disabled is None:
        return findings
    if _collected_elsewhere(src):
        return findings
    if manage is None:
        deeper = next((rel for rel in src.files if PurePosixPath(rel).name == "manage.py"), None)
        why = (
            f"the buildpack looks for manage.py only {MANAGE_DEPTH - 1} folders down, and {deeper} is deeper"
            if deeper
            else "the buildpack finds no manage.py"
        )
        fix = "move manage.py up, or run collectstatic in bin/post_compile"
    else:
        why = f"collectstatic is skipped ({disabled})"
        fix = (
            "let the build collect them: remove DISABLE_COLLECTSTATIC (or the file), or run "
            f"'python {manage} collectstatic --noinput' in bin/post_compile"
        )
    manifest = any("ManifestStaticFilesStorage" in text for text in settings.strings)
    whitenoise = any(text.startswith("whitenoise.") for text in settings.strings)
    if not (manifest or whitenoise):
        return findings  # static files served from elsewhere (or not at all): nothing to predict
    effect = (
        "with a manifest storage every page that uses {% static %} answers 500 (Missing staticfiles manifest entry)"
        if manifest
        else "WhiteNoise answers 404 for every static file"
    )
    where = settings.names.get("STORAGES") or settings.names.get("STATICFILES_STORAGE") or (settings.files[0], 0)
    findings.append(
        Finding(
            ERROR if manifest else WARNING,
            "static-files-missing",
            f"static files would be missing on Heroku: {why}, so STATIC_ROOT is empty in the slug; {effect}",
            fix,
            where[0],
            where[1] or None,
        )
    )
    return findings


def _build_failures(settings: _Settings) -> list[Finding]:
    """What makes the buildpack's collectstatic fail, so that Heroku rejects the push."""
    first = settings.files[0]
    if "INSTALLED_APPS" in settings.names and STATICFILES_APP not in settings.strings:
        file, line = settings.names["INSTALLED_APPS"]
        return [
            Finding(
                ERROR,
                "collectstatic-fails",
                f"{STATICFILES_APP} is not in INSTALLED_APPS: Heroku's Python buildpack runs collectstatic "
                "for every Django app, which fails (Unknown command: 'collectstatic'), and the build "
                "is rejected",
                f"add '{STATICFILES_APP}' to INSTALLED_APPS with STATIC_URL and STATIC_ROOT; if the app "
                f"serves no static files, set {_DISABLE_FIX}",
                file,
                line,
            )
        ]
    if STATICFILES_APP not in settings.strings:
        return []
    findings = []
    for name, example in (
        ("STATIC_URL", 'STATIC_URL = "static/"'),
        ("STATIC_ROOT", 'STATIC_ROOT = BASE_DIR / "staticfiles"'),
    ):
        if name not in settings.names:
            findings.append(
                Finding(
                    ERROR,
                    "collectstatic-fails",
                    f"{name} is not set: Heroku's Python buildpack runs collectstatic for every Django app, which "
                    f"fails (ImproperlyConfigured: You're using the staticfiles app without having set the "
                    f"{'required STATIC_URL setting' if name == 'STATIC_URL' else 'STATIC_ROOT setting to a filesystem path'}"
                    "), and the build is rejected",
                    f"add {example} to the settings",
                    first,
                )
            )
    return findings


def _release_phase(src: AppSource) -> list[Finding]:
    release = src.procfile.processes.get("release") if src.procfile else None
    if release is None or "collectstatic" not in release.command:
        return []
    return [
        Finding(
            WARNING,
            "collectstatic-in-release",
            "collectstatic in the release phase: the release dyno's files are discarded when it exits, "
            "web dynos never see them",
            "leave it to the build (Heroku's Python buildpack runs collectstatic itself)",
            "Procfile",
            release.line,
        )
    ]


def _collected_elsewhere(src: AppSource) -> bool:
    """collectstatic in bin/post_compile (into the slug) or before the web server (at every boot)."""
    web = src.procfile.processes.get("web") if src.procfile else None
    return "collectstatic" in (src.text("bin/post_compile") or "") or (
        web is not None and "collectstatic" in web.command
    )


def _manage_py(src: AppSource) -> str | None:
    """The manage.py the buildpack would run: the shallowest within MANAGE_DEPTH, then by path."""
    found = sorted(
        (rel.count("/"), rel)
        for rel in src.files
        if PurePosixPath(rel).name == "manage.py" and rel.count("/") < MANAGE_DEPTH
    )
    return found[0][1] if found else None


def _disabled(src: AppSource) -> str | None:
    """Why the buildpack would skip collectstatic, or None."""
    if src.exists(".heroku/collectstatic_disabled"):
        return "the file .heroku/collectstatic_disabled exists"
    config: list[tuple[str, dict[str, str]]] = []
    try:
        config.append(
            ("app.json env", {k: v.value for k, v in load_manifest(src.root).env.items() if v.value is not None})
        )
        config.append((".env", load_dotenv(src.root / ".env")))
        if (src.root / ".dynosim" / "config.json").is_file():
            config.append(("dynosim config:set", ConfigStore(src.root / ".dynosim").load()))
    except DynosimError:
        pass  # a broken app.json or .env is another check's finding
    found = None
    for where, values in config:  # later ones win, as config vars resolve
        if "DISABLE_COLLECTSTATIC" in values:
            found = (where, values["DISABLE_COLLECTSTATIC"])
    if found is None or found[1] == "0":
        return None
    return f"DISABLE_COLLECTSTATIC={found[1]} in {found[0]}"


def _read_settings(src: AppSource, manage: str) -> _Settings | None:
    """The settings module manage.py names, read with what it star-imports; None if not found."""
    base = PurePosixPath(manage).parent
    match = _SETTINGS_MODULE.search(src.text(manage) or "")
    if match is None:
        return None
    pending = [_module_file(src, base, match.group(1))]
    files: list[str] = []
    names: dict[str, tuple[str, int]] = {}
    strings: set[str] = set()
    while pending:
        rel = pending.pop(0)
        if rel is None or rel in files:
            continue
        tree = src.tree(rel)
        if tree is None:
            continue
        files.append(rel)
        for node in ast.walk(tree):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, (ast.AnnAssign, ast.AugAssign))
                else []
            )
            for target in targets:
                if isinstance(target, ast.Name):
                    names.setdefault(target.id, (rel, target.lineno))
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.add(node.value)
            if isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names):
                package = PurePosixPath(rel).parent
                if node.level:
                    folder = package
                    for _ in range(node.level - 1):
                        folder = folder.parent
                    pending.append(_module_file(src, folder, node.module or ""))
                else:
                    pending.append(_module_file(src, base, node.module or ""))
    return _Settings(tuple(files), names, frozenset(strings)) if files else None


def _module_file(src: AppSource, root: PurePosixPath, module: str) -> str | None:
    path = root.joinpath(*module.split(".")) if module else root
    return next((rel for rel in (f"{path}.py", f"{path}/__init__.py") if src.exists(rel)), None)
