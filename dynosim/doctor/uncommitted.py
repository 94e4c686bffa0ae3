"""3. Files the code imports or opens that git would not push: works here, breaks on Heroku."""

from __future__ import annotations

import ast
import posixpath
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass

from .findings import ERROR, WARNING, Finding
from .source import DEPENDENCY_FILES, AppSource

NOT_COMMITTED = frozenset({"untracked", "added", "renamed", "copied"})  # not in HEAD at all
CHANGED = frozenset({"modified", "type changed"})  # in HEAD, in an older version
DEPLOY_FILES = frozenset({"Procfile", ".python-version", "runtime.txt", *DEPENDENCY_FILES})
_TEMPLATE = re.compile(r"\.(html?|jinja2?|j2|txt|xml)$")
_QUOTED_NAME = re.compile(r"""["']([^"'\s]+\.\w+)["']""")
_GUNICORN_APP = re.compile(r"^([\w.]+):[\w.()]+$")  # module:callable


@dataclass(frozen=True)
class Reference:
    path: str  # the uncommitted file
    file: str  # where the committed code names it
    line: int | None
    imported: bool  # an import (or a Procfile module), not just a name in a string


def uncommitted(src: AppSource) -> list[Finding]:
    if src.git is None:
        return [
            Finding(
                WARNING,
                "not-git",
                "not a git repository: Heroku deploys only what git push sends, so "
                "doctor cannot tell which files would be missing there",
                "git init && git add -A && git commit -m 'first commit'",
            )
        ]
    if src.git.head is None:
        return [
            Finding(
                ERROR,
                "no-commits",
                "the git repository has no commits: git push would deploy nothing",
                "git add -A && git commit -m 'first commit'",
            )
        ]
    status = src.git.changes
    missing = {path for path, word in status.items() if word in NOT_COMMITTED}
    changed = {path for path, word in status.items() if word in CHANGED}
    findings = [_deploy_file(path, status[path]) for path in sorted(missing | changed) if path in DEPLOY_FILES]
    first: dict[str, Reference] = {}
    count: dict[str, int] = {}
    for ref in _references(src, missing | changed):
        if ref.path in DEPLOY_FILES:
            continue
        count[ref.path] = count.get(ref.path, 0) + 1
        if ref.path not in first or (ref.imported and not first[ref.path].imported):
            first[ref.path] = ref
    for path, ref in first.items():
        findings.append(_referenced(ref, status[path], count[path] - 1))
    return findings


def _deploy_file(path: str, word: str) -> Finding:
    if word in CHANGED:
        return Finding(
            WARNING,
            "uncommitted-change",
            f"{path} is modified but not committed: Heroku would build with the committed version",
            f"git commit {path}",
            path,
        )
    return Finding(
        ERROR,
        "uncommitted-file",
        f"{path} is {word} but not committed: Heroku would build without it",
        f"git add {path} && git commit",
        path,
    )


def _referenced(ref: Reference, word: str, others: int) -> Finding:
    more = f" (and {others} more place{'s' if others > 1 else ''})" if others else ""
    if word in CHANGED:
        return Finding(
            WARNING,
            "uncommitted-change",
            f"{ref.path} is modified but not committed; {ref.file} uses it{more}: Heroku would run the "
            "committed version",
            f"commit the change: git commit {ref.path}",
            ref.file,
            ref.line,
        )
    if ref.imported:
        verb = "runs" if ref.file == "Procfile" else "imports"
        return Finding(
            ERROR,
            "uncommitted-import",
            f"{ref.path} is {word}, not committed, and {ref.file} {verb} it{more}: works here, "
            "ModuleNotFoundError on Heroku",
            f"git add {ref.path} && git commit",
            ref.file,
            ref.line,
        )
    return Finding(
        WARNING,
        "uncommitted-file",
        f"{ref.path} is {word}, not committed, and {ref.file} names it{more}: Heroku deploys only "
        "committed files, so it will not be there",
        f"git add {ref.path} && git commit (or, for data, load it from storage that outlives a deploy)",
        ref.file,
        ref.line,
    )


def _references(src: AppSource, uncommitted: set[str]) -> Iterator[Reference]:
    """Where committed files import or name an uncommitted one."""
    if not uncommitted:
        return
    committed = [rel for rel in src.files if src.git and src.git.changes.get(rel) not in NOT_COMMITTED]
    committed_set = set(committed)
    for rel in committed:
        if rel.endswith(".py"):
            for module_paths, line in _imports(src, rel):
                for path in _module_files(module_paths, uncommitted):
                    yield Reference(path, rel, line, imported=True)
            for value, line in src.strings(rel):
                for path in _named(value, uncommitted, committed_set):
                    yield Reference(path, rel, line, imported=False)
        elif _TEMPLATE.search(rel):
            for number, text in enumerate((src.text(rel) or "").splitlines(), 1):
                for name in _QUOTED_NAME.findall(text):
                    for path in _named(name, uncommitted, committed_set):
                        yield Reference(path, rel, number, imported=False)
    if src.procfile is not None and "Procfile" in committed_set:
        for process in src.procfile.processes.values():
            for modules, is_module in _procfile_targets(process.command):
                found = _module_files(modules, uncommitted) if is_module else [p for p in modules if p in uncommitted]
                for path in found:
                    yield Reference(path, "Procfile", process.line, imported=True)


def _imports(src: AppSource, rel: str) -> Iterator[tuple[list[str], int]]:
    """For each import in a Python file: the module paths it may load ("pkg/mod"), and its line."""
    tree = src.tree(rel)
    if tree is None:
        return
    here = posixpath.dirname(rel)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield _prefixes(alias.name.split("."), ("", here)), node.lineno
        elif isinstance(node, ast.ImportFrom):
            parts = node.module.split(".") if node.module else []
            if node.level:
                base = here
                for _ in range(node.level - 1):
                    base = posixpath.dirname(base)
                bases: tuple[str, ...] = (base,)
            else:
                bases = ("", here)
            paths = _prefixes(parts, bases)
            for alias in node.names:
                if alias.name != "*":
                    paths += _prefixes([*parts, alias.name], bases)[-len(bases) :]
            yield paths, node.lineno


def _prefixes(parts: list[str], bases: tuple[str, ...]) -> list[str]:
    """`a.b` from base dirs → a, a/b under each base: every module the import loads."""
    found = []
    for count in range(1, len(parts) + 1):
        for base in dict.fromkeys(bases):
            found.append(posixpath.join(base, *parts[:count]))
    return found


def _module_files(module_paths: list[str], uncommitted: set[str]) -> list[str]:
    found = []
    for module in module_paths:
        for candidate in (f"{module}.py", f"{module}/__init__.py"):
            if candidate in uncommitted and candidate not in found:
                found.append(candidate)
    return found


def _named(value: str, uncommitted: set[str], committed: set[str]) -> list[str]:
    """Uncommitted files a string literal names: the path itself, or its tail ("index.html")."""
    name = value.strip().removeprefix("./").lstrip("/")
    if not name or len(name) > 200 or any(c.isspace() for c in name) or ("." not in name and "/" not in name):
        return []

    def names(path: str) -> bool:
        return path == name or path.endswith("/" + name)

    if any(names(path) for path in committed):
        return []  # a committed file answers to that name too
    return [path for path in uncommitted if names(path)]


def _procfile_targets(command: str) -> Iterator[tuple[list[str], bool]]:
    """What a Procfile command loads: (module paths, True) for `mod:app` and `-m mod`, ([file], False) for files."""
    try:
        tokens = shlex.split(command)
    except ValueError:
        tokens = command.split()
    for index, token in enumerate(tokens):
        if (match := _GUNICORN_APP.match(token)) is not None:
            yield _prefixes(match.group(1).split("."), ("",)), True
        elif token == "-m" and index + 1 < len(tokens):
            yield _prefixes(tokens[index + 1].split("."), ("",)), True
        elif token.endswith(".py") or "/" in token:
            yield [token.removeprefix("./")], False
