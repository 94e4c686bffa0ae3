"""The source a build starts from: what `git push heroku main` would deploy, minus .slugignore."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dynosim.errors import BuildError

if TYPE_CHECKING:  # tarfile is imported where a commit is extracted: a plain folder's start goes without it
    import tarfile

WARN = " !     "
SHOWN_CHANGES = 5  # uncommitted files named in the warning; the rest are counted
STATE_DIR = ".dynosim"  # dynosim's own state, never part of a slug
# What a folder outside git usually holds that no deploy would carry.
NON_GIT_SKIP = frozenset({".git", STATE_DIR, "__pycache__", ".venv", "venv"})
STATUS_WORDS = {
    "M": "modified",
    "A": "added",
    "D": "deleted",
    "R": "renamed",
    "C": "copied",
    "T": "type changed",
    "U": "unmerged",
    "?": "untracked",
}


@dataclass(frozen=True)
class Source:
    commit: str | None  # 40-hex HEAD sha when the exported files are exactly HEAD's
    description: str  # the release description Heroku would show


@dataclass(frozen=True)
class _Repo:
    top: Path
    prefix: str  # the app dir inside the work tree, "" or ending in "/"
    head: str | None  # None before the first commit


def export_source(app_dir: Path, dest: Path, *, dirty: bool, say: Callable[[str], None]) -> Source:
    """Write the app's deployable files into the empty directory `dest`."""
    repo = _find_repo(app_dir)
    if repo is None:
        say(
            f"{WARN}{app_dir} is not a git repository: building from the files on disk; "
            "Heroku deploys only committed files"
        )
        _copy_folder(app_dir, dest)
        return Source(commit=None, description="Deploy (no git)")
    changes = _uncommitted(app_dir, repo)
    if dirty:
        _copy_paths(app_dir, _working_tree_files(app_dir), dest)
        if repo.head is not None and not changes:
            return _committed(repo.head)
        say(
            f"{WARN}Building from the working tree (--dirty): {_count(changes)} not committed "
            f"({_list(changes)}); Heroku would not see them"
        )
        return Source(commit=None, description="Deploy dirty working tree")
    if repo.head is None:
        raise BuildError(
            f"{app_dir}: the git repository has no commits; "
            "commit your app (git add -A && git commit) or run with --dirty"
        )
    if changes:
        say(f"{WARN}{_count(changes)} not committed and will not be deployed (as on Heroku): {_list(changes)}")
        say(f"{WARN}Commit them, or use --dirty to include them")
    _extract_head(app_dir, repo, dest)
    return _committed(repo.head)


def apply_slugignore(root: Path, say: Callable[[str], None]) -> int:
    """Delete what .slugignore matches, as Heroku does before the buildpack runs; return the count."""
    ignore_file = root / ".slugignore"
    if not ignore_file.is_file() or ignore_file.is_symlink():
        return 0
    patterns = []
    for number, line in enumerate(ignore_file.read_text(errors="replace").splitlines(), 1):
        if line.startswith("!"):
            say(f"{WARN}.slugignore:{number}: '{line.strip()}' is ignored: Heroku's .slugignore has no ! negation")
        else:
            patterns.append(line)
    import pathspec  # only an app with a .slugignore needs it

    spec = pathspec.GitIgnoreSpec.from_lines(patterns)
    removed = 0
    for current, dirs, files in os.walk(root):
        rel_dir = Path(current).relative_to(root)
        # os.walk lists a symlink to a directory among dirs; like git, treat it as a file.
        links = [name for name in dirs if (Path(current) / name).is_symlink()]
        dirs[:] = [name for name in dirs if name not in links]
        for name in list(dirs):
            if spec.match_file(f"{(rel_dir / name).as_posix()}/"):
                shutil.rmtree(Path(current) / name)
                dirs.remove(name)  # gone: do not walk into it
                removed += 1
        for name in files + links:
            if spec.match_file((rel_dir / name).as_posix()):
                (Path(current) / name).unlink()
                removed += 1
    return removed


def _committed(head: str) -> Source:
    return Source(commit=head, description=f"Deploy {head[:7]}")


def _find_repo(app_dir: Path) -> _Repo | None:
    if not _may_be_in_repo(app_dir):
        return None
    try:
        top, prefix = _git(app_dir, "rev-parse", "--show-toplevel", "--show-prefix").split("\n")[:2]
    except _NotARepo:
        return None
    head = subprocess.run(
        ["git", "rev-parse", "--verify", "-q", "HEAD^{commit}"],
        cwd=app_dir,
        capture_output=True,
        text=True,
        env=_git_env(),
        check=False,
    ).stdout.strip()
    return _Repo(top=Path(top), prefix=prefix, head=head or None)


def _may_be_in_repo(app_dir: Path) -> bool:
    """False only where git would say "not a git repository": no GIT_DIR, and neither a .git nor a bare
    repository (HEAD beside objects/) in the folder or above it. A start from a plain folder is spared
    git's 3-5 ms; any doubt (a .git across a mount, a ceiling git would stop at) is left to git."""
    if "GIT_DIR" in os.environ:
        return True
    for folder in (app_dir.absolute(), *app_dir.absolute().parents):
        if os.path.lexists(folder / ".git") or (os.path.isfile(folder / "HEAD") and os.path.isdir(folder / "objects")):
            return True
    return False


def _uncommitted(app_dir: Path, repo: _Repo) -> dict[str, str]:
    """Relative path (to the app dir) → what differs from HEAD; ignored files are not listed."""
    out = _git(app_dir, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", ".")
    entries = iter(out.split("\0"))
    changes = {}
    for entry in entries:
        if not entry:
            continue
        code, path = entry[:2], entry[3:]
        if code[0] in "RC":
            next(entries)  # -z puts a rename's old path in the next field
        # Porcelain paths are relative to the work tree top, not to the app dir.
        rel = path.removeprefix(repo.prefix)
        if rel.split("/")[0] != STATE_DIR:
            letter = code[0] if code[0] != " " else code[1]  # "AM" is still an added file
            changes[rel] = STATUS_WORDS.get(letter, "changed")
    return changes


def _count(changes: dict[str, str]) -> str:
    return "1 file is" if len(changes) == 1 else f"{len(changes)} files are"


def _list(changes: dict[str, str]) -> str:
    shown = ", ".join(f"{path} ({word})" for path, word in sorted(changes.items())[:SHOWN_CHANGES])
    more = len(changes) - SHOWN_CHANGES
    return f"{shown} and {more} more" if more > 0 else shown


def _working_tree_files(app_dir: Path) -> list[str]:
    out = _git(app_dir, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", ".")
    return sorted({path for path in out.split("\0") if path and path.split("/")[0] != STATE_DIR})


def _extract_head(app_dir: Path, repo: _Repo, dest: Path) -> None:
    # `HEAD:<prefix>` is the app dir's tree in HEAD, so the archive's paths start at the app root.
    tree = f"HEAD:{repo.prefix}"
    if (
        subprocess.run(
            ["git", "cat-file", "-e", tree], cwd=app_dir, env=_git_env(), capture_output=True, check=False
        ).returncode
        != 0
    ):
        raise BuildError(
            f"{app_dir}: nothing under this folder is committed in {repo.top}; commit the app or run with --dirty"
        )
    # Run from the top: in a subdirectory, git archive would also limit the tree to that path.
    proc = subprocess.Popen(
        ["git", "archive", "--format=tar", tree],
        cwd=repo.top,
        env=_git_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    import tarfile

    with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
        # "tar" keeps symlinks as they are (even absolute ones) but refuses paths leaving dest.
        archive.extractall(dest, members=_skip_state_dir(archive), filter="tar")
    error = proc.stderr.read().decode(errors="replace").strip()
    if proc.wait() != 0:
        raise BuildError(f"{app_dir}: git archive failed: {_git_error(error)}")


def _skip_state_dir(archive: tarfile.TarFile) -> Iterable[tarfile.TarInfo]:
    for member in archive:
        if member.name.split("/")[0] != STATE_DIR:
            yield member


def _copy_folder(app_dir: Path, dest: Path) -> None:
    def skipped(folder: str, names: list[str]) -> list[str]:
        return [
            name
            for name in names
            if name in NON_GIT_SKIP
            or name.endswith(".pyc")
            or not _is_copyable(os.lstat(os.path.join(folder, name)).st_mode)
        ]

    shutil.copytree(app_dir, dest, symlinks=True, ignore=skipped, dirs_exist_ok=True)


def _copy_paths(app_dir: Path, paths: list[str], dest: Path) -> None:
    for rel in paths:
        src = app_dir / rel
        try:
            mode = src.lstat().st_mode
        except FileNotFoundError:
            continue  # tracked but deleted in the working tree
        if stat.S_ISDIR(mode) or not _is_copyable(mode):
            continue  # a submodule (listed as one path), or a socket or fifo
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), target)
        else:
            shutil.copy2(src, target)


def _is_copyable(mode: int) -> bool:
    return stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)


class _NotARepo(Exception):
    pass


def _git(cwd: Path, *args: str) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=_git_env(), check=False)
    except FileNotFoundError:
        raise _NotARepo() from None  # no git installed: treat the folder as plain files
    if proc.returncode != 0:
        if "not a git repository" in proc.stderr:
            raise _NotARepo()
        raise BuildError(f"{cwd}: git {args[0]} failed: {_git_error(proc.stderr)}")
    return proc.stdout


def _git_env() -> dict[str, str]:
    # Git's messages are parsed above, so they must not be translated.
    return {**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}


def _git_error(text: str) -> str:
    """Git's "fatal:" line says what failed; the hints after it (e.g. safe.directory) are longer."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
    return (fatal or lines or ["no output"])[0]


def git_dir(app_dir: Path) -> Path | None:
    """The repository folder holding HEAD and refs, for watching commits; None outside git."""
    try:
        return Path(_git(app_dir, "rev-parse", "--absolute-git-dir").strip())
    except _NotARepo:
        return None
