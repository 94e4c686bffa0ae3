"""The package's shape: its imports run downward (no module reaches, even through a deferred or
type-only import, a module that reaches it back: a loop makes the modules in it one knot that can
only be read whole), and ARCHITECTURE.md, the map newcomers read, matches it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dynosim"


def modules(package: Path) -> dict[str, tuple[Path, bool]]:
    """Every module of the package by dotted name, with whether it is a package's __init__."""
    found = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def imports(package: Path = PACKAGE) -> dict[str, set[str]]:
    """What each module imports of the package: every import statement, wherever it stands. `from P
    import M` of a submodule M is an edge to M only (P's __init__ runs, but M is what is used)."""
    known = modules(package)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, (path, is_package) in known.items():
        package = name if is_package else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
                targets = submodules + ([base] if len(submodules) < len(node.names) else [])
            else:
                continue
            graph[name].update(t for t in targets if t in known and t != name)
    return graph


def loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_loops() -> None:
    graph = imports()
    knots = loops(graph)
    described = ["; ".join(f"{m} -> {', '.join(sorted(graph[m] & set(group)))}" for m in group) for group in knots]
    assert knots == [], "import loops:\n" + "\n".join(described)


def test_the_check_sees_deferred_and_type_only_imports(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from . import low\n")
    (package / "sub" / "low.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\n")
    (package / "c.py").write_text("def f():\n    import pkg.a\n")
    graph = imports(package)
    assert graph["pkg.sub"] == {"pkg.sub.low"}
    assert loops(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_the_map_matches_the_code() -> None:
    """ARCHITECTURE.md names only modules that exist, and names every package and top-level module."""
    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text()
    named = set(re.findall(r"(?<![.\w])dynosim/[\w/]*\w(?:\.py|/)?", text))  # not .dynosim/, the state dir
    missing = sorted(path for path in named if not (PACKAGE.parent / path).exists())
    assert missing == [], f"ARCHITECTURE.md names what does not exist: {missing}"
    wanted = {f"dynosim/{p.relative_to(PACKAGE).parent}/" for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE}
    wanted |= {f"dynosim/{p.name}" for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    unnamed = sorted(path for path in wanted if path not in named and path.rstrip("/") not in named)
    assert unnamed == [], f"ARCHITECTURE.md does not say what these are: {unnamed}"
