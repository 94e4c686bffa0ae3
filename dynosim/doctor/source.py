"""The app as doctor reads it: its files, their Python syntax trees, git's view, its dependencies."""
from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# What gets deployed is build/source.py's business; doctor asks it rather than guess again.
from ..build.source import STATE_DIR, _find_repo, _uncommitted, _working_tree_files
from ..errors import DynosimError
from ..procfile import Procfile, load_procfile

# Folders outside git that hold no app code (a virtualenv, caches, dynosim's own state).
SKIP_DIRS = frozenset({".git", STATE_DIR, "__pycache__", ".venv", "venv", "node_modules", ".tox", ".nox",
                       ".mypy_cache", ".pytest_cache", ".ruff_cache", "site-packages"})
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
        tree = self.tree(rel)
        if tree is None:
            return
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                yield node.value, node.lineno

    def grep(self, rel: str, pattern: str) -> int | None:
        """The first line of a file matching the regex `pattern`."""
        regex = re.compile(pattern)
        for number, line in enumerate((self.text(rel) or "").splitlines(), 1):
            if regex.search(line):
                return number
        return None


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
    found = []
    for current, dirs, names in os.walk(root):
        here = Path(current)
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not (here / d / "pyvenv.cfg").exists())
        found.extend((here / name).relative_to(root).as_posix() for name in sorted(names))
    return found
