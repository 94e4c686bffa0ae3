"""The app as doctor reads it: its files, their Python syntax trees, git's view, its dependencies."""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# What gets deployed is buildpack/source.py's business; doctor asks it rather than guess again.
from ..buildpack.source import STATE_DIR, _find_repo, _uncommitted, _working_tree_files
from ..errors import DynosimError
from ..procfile import Procfile, load_procfile

# Folders outside git that hold no app code (a virtualenv, caches, dynosim's own state).
SKIP_DIRS = frozenset(
    {
        ".git",
        STATE_DIR,
        "__pycache__",
        ".venv",
        "venv",
        "node_modules",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        "site-packages",
    }
)
MAX_TEXT = 1 << 20  # larger files are data, not code to read
DEPENDENCY_FILES = ("requirements.txt", "Pipfile", "Pipfile.lock", "poetry.lock", "uv.lock", "pyproject.toml")
_TEST_PATH = re.compile(r"(^|/)(tests?/|test_[^/]*\.py$|[^/]*_tests?\.py$|conftest\.py$)")


@dataclass(frozen=True)
class GitState:
    head: str | None  # None before the first commit
    changes: dict[str, str]  # path relative to the app → "untracked", "modified", "added"…


@dataclass
class AppSource:
    root: Path
    files: tuple[str, ...]  # relative posix paths: the working tree minus what git ignores
    git: GitState | None  # None when the folder is not in a git repository
    procfile: Procfile | None
    procfile_error: str | None  # why there is no usable Procfile
    _texts: dict[str, str | None] = field(default_factory=dict, repr=False)
    _trees: dict[str, ast.Module | None] = field(default_factory=dict, repr=False)
    _branches: dict[str, tuple[dict[ast.AST, ast.AST], dict[str, bool]]] = field(default_factory=dict, repr=False)

    def text(self, rel: str) -> str | None:
        if rel not in self._texts:
            path = self.root / rel
            try:
                self._texts[rel] = path.read_text(errors="replace") if path.stat().st_size <= MAX_TEXT else None
            except OSError:
                self._texts[rel] = None
        return self._texts[rel]

    def tree(self, rel: str) -> ast.Module | None:
        if rel not in self._trees:
            text = self.text(rel)
            try:
                self._trees[rel] = ast.parse(text, rel) if text is not None else None
            except (SyntaxError, ValueError):
                self._trees[rel] = None
        return self._trees[rel]

    @property
    def python_files(self) -> list[str]:
        return [rel for rel in self.files if rel.endswith(".py")]

    @property
    def app_python_files(self) -> list[str]:
        """Python files that run on Heroku: tests left out (they may use SQLite on purpose)."""
        return [rel for rel in self.python_files if not _TEST_PATH.search(rel)]

    def exists(self, rel: str) -> bool:
        return (self.root / rel).exists()

    def depends_on(self, name: str) -> bool:
        """Whether a dependency file names the package `name` (- and _ alike, any case)."""
        pattern = re.compile(r"(?<![\w.-])" + re.escape(name).replace(r"\-", "[-_]") + r"(?![\w-])", re.I)
        for rel in DEPENDENCY_FILES:
            text = self.text(rel) if self.exists(rel) else None
            if text and pattern.search(text):
                return True
        return False

    def strings(self, rel: str) -> Iterator[tuple[str, int]]:
        """Every string literal of a Python file, with its line."""
        for node in self.string_nodes(rel):
            yield str(node.value), node.lineno

    def string_nodes(self, rel: str) -> Iterator[ast.Constant]:
        tree = self.tree(rel)
        if tree is None:
            return
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                yield node

    def off_heroku(self, rel: str, node: ast.AST) -> bool:
        """Whether `node` lies in a branch that no Heroku dyno takes: the local side of `if IS_HEROKU_APP:`
        (python-getting-started's settings), of `"DYNO" in os.environ`, of `if not ON_HEROKU:`…"""
        tree = self.tree(rel)
        if tree is None:
            return False
        if rel not in self._branches:  # each node's parent, and the names that say "on Heroku"
            parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
            self._branches[rel] = (parents, _heroku_markers(tree))
        parents, markers = self._branches[rel]
        child, parent = node, parents.get(node)
        while parent is not None:
            if isinstance(parent, (ast.If, ast.IfExp)) and child is not parent.test:
                on_heroku = _on_heroku(parent.test, markers)
                in_body = child is parent.body or (isinstance(parent.body, list) and child in parent.body)
                if on_heroku is not None and in_body != on_heroku:
                    return True
            child, parent = parent, parents.get(parent)
        return False

    def grep(self, rel: str, pattern: str) -> int | None:
        """The first line of a file matching the regex `pattern`."""
        regex = re.compile(pattern)
        for number, line in enumerate((self.text(rel) or "").splitlines(), 1):
            if regex.search(line):
                return number
        return None


# Set on every dyno (and by Heroku CI, which python-getting-started tells apart with CI), or, with
# HEROKU in the name, set by the app's own config (ON_HEROKU=1) or the dyno metadata (HEROKU_APP_NAME).
# DATABASE_URL is no sign: an app with no add-on attached runs on Heroku without it.
_HEROKU_VAR = re.compile(r"^DYNO$|HEROKU", re.I)


def _heroku_markers(tree: ast.Module) -> dict[str, bool]:
    """Module-level names that say whether the code runs on Heroku: IS_HEROKU_APP = "DYNO" in os.environ…"""
    markers: dict[str, bool] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = _on_heroku(node.value, markers)
            if value is not None:
                markers[node.targets[0].id] = value
    return markers


def _on_heroku(test: ast.expr, markers: dict[str, bool]) -> bool | None:
    """What `test` is on a Heroku dyno: True, False, or None when it does not say."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        inner = _on_heroku(test.operand, markers)
        return None if inner is None else not inner
    if isinstance(test, ast.BoolOp):
        values = [_on_heroku(value, markers) for value in test.values]
        if isinstance(test.op, ast.And):
            if False in values:
                return False
            # IS_HEROKU_APP = "DYNO" in os.environ and "CI" not in os.environ: the parts that do not say are taken to hold
            return True if True in values else None
        if True in values:
            return True
        return False if all(value is False for value in values) else None
    if isinstance(test, ast.Name):
        return markers.get(test.id, True if "heroku" in test.id.lower() else None)
    if isinstance(test, ast.Attribute):  # settings.IS_HEROKU_APP
        return True if "heroku" in test.attr.lower() else None
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        op, right = test.ops[0], test.comparators[0]
        if isinstance(op, (ast.In, ast.NotIn)) and _is_environ(right):
            name = _constant(test.left)
            if name is not None and _HEROKU_VAR.search(name):
                return isinstance(op, ast.In)
        return None
    if (
        isinstance(test, ast.Call)
        and isinstance(test.func, ast.Name)
        and test.func.id == "bool"
        and len(test.args) == 1
    ):
        return _on_heroku(test.args[0], markers)
    name = _env_read(test)
    return True if name is not None and _HEROKU_VAR.search(name) else None


def _is_environ(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def _env_read(node: ast.expr) -> str | None:
    """The variable of os.environ["X"], os.environ.get("X"), os.getenv("X"); else None."""
    if isinstance(node, ast.Subscript) and _is_environ(node.value):
        return _constant(node.slice)
    if (
        isinstance(node, ast.Call)
        and node.args
        and isinstance(node.func, ast.Attribute)
        and ((node.func.attr == "get" and _is_environ(node.func.value)) or node.func.attr == "getenv")
    ):
        return _constant(node.args[0])
    return None


def _constant(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def read_app(root: Path) -> AppSource:
    root = root.resolve()
    if not root.is_dir():
        raise DynosimError(f"{root}: no such app folder; run dynosim doctor in your app's folder or pass -C")
    repo = _find_repo(root)
    git: GitState | None = None
    if repo is None:
        files = _walk(root)
    else:
        git = GitState(repo.head, _uncommitted(root, repo))
        files = [rel for rel in _working_tree_files(root) if (root / rel).is_file()]
    try:
        procfile, error = load_procfile(root), None
    except DynosimError as exc:
        procfile, error = None, str(exc)
    return AppSource(root, tuple(files), git, procfile, error)


def _walk(root: Path) -> list[str]:
    found: list[str] = []
    for current, dirs, names in os.walk(root):
        here = Path(current)
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not (here / d / "pyvenv.cfg").exists())
        found.extend((here / name).relative_to(root).as_posix() for name in sorted(names))
    return found
