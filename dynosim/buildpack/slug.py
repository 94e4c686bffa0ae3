"""The slug: an app's deployable files plus its dependencies, built once per content and cached."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dynosim.buildpack.collectstatic import collectstatic
from dynosim.buildpack.messages import STEP
from dynosim.buildpack.python import (
    check_lockfile,
    check_source,
    env_key,
    exported_config,
    find_dependencies,
    find_python,
    install_dependencies,
    run_hook,
)
from dynosim.buildpack.source import apply_slugignore, export_source
from dynosim.errors import BuildError
from dynosim.sizes import byte_size, content_size, entries

ID_LENGTH = 32  # hex digits of a slug id
BUILD_PREFIX = ".build-"  # a build's folder beside the slugs, until it is renamed into place
ORPHAN_AGE = 5.0  # seconds a build folder must be old, unlocked, before a sweep takes it for a dead build's
CHUNK = 1 << 20


@dataclass(frozen=True)
class Slug:
    id: str  # content hash of the source tree and the dependency environment
    path: Path  # the slug's root; dynos use it as HOME and cwd
    venv: Path | None  # the shared virtualenv outside the slug (None in releases recorded before every build made one)
    python_version: str  # the interpreter the app gets, e.g. "3.11.7"
    commit: str | None  # 40-hex HEAD sha when the slug is exactly a commit
    description: str  # "Deploy 58d1fdd", "Deploy dirty working tree", "Deploy (no git)"


def default_cache_dir() -> Path:
    if os.environ.get("DYNOSIM_CACHE_DIR"):
        return Path(os.environ["DYNOSIM_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dynosim"


def build_slug(
    app_dir: Path,
    *,
    cache_dir: Path,
    dirty: bool = False,
    config_vars: Mapping[str, str] | None = None,
    say: Callable[[str], None] = print,
) -> Slug:
    """Build the app's slug the way Heroku's slug compiler and Python buildpack would, or reuse
    the cached one with the same content and config. `config_vars` are the app's (Heroku gives a
    build its config vars: the hooks and collectstatic see them); `say` gets each output line."""
    exported = exported_config(config_vars or {})
    app_dir = Path(app_dir).absolute()
    if not app_dir.is_dir():
        raise BuildError(f"{app_dir}: no such app folder; pass the folder that holds the Procfile")
    cache_dir = Path(cache_dir).absolute()  # pip and the hooks run with the slug as cwd
    slugs = cache_dir / "slugs"
    slugs.mkdir(parents=True, exist_ok=True)
    _sweep_dead_builds(slugs)
    # Built beside its final place, so that finishing it is one atomic rename.
    build_dir = Path(tempfile.mkdtemp(prefix=BUILD_PREFIX, dir=slugs))
    held = _hold(build_dir)
    try:
        notes: list[str] = []  # the source's warnings belong under the first line, which needs its result
        source = export_source(app_dir, build_dir, dirty=dirty, say=notes.append)
        say(f"{STEP}Building source ({source.description})")
        for note in notes:
            say(note)
        removed = apply_slugignore(build_dir, say)
        if removed:
            say(f"{STEP}Removed {removed} {'path' if removed == 1 else 'paths'} matching .slugignore")
        say(f"{STEP}Python app detected")
        check_source(build_dir, say)
        deps = find_dependencies(build_dir, say)
        python = find_python(build_dir, deps, say)
        check_lockfile(deps, build_dir, say)
        key = env_key(python, deps)
        venv = cache_dir / "venvs" / key
        # What the build saw decides what it made: the same source built with other config vars
        # (DISABLE_COLLECTSTATIC, a setting read by collectstatic or a hook) is another slug.
        slug_id = _tree_hash(build_dir, key + _config_hash(exported))
        final = slugs / slug_id
        if final.is_dir():
            # rebuilt here only if the venv was deleted
            install_dependencies(deps, python=python, slug_dir=build_dir, venv=venv, say=say)
            say(f"{STEP}Using cached slug {slug_id[:12]}")
        else:
            # Heroku gives buildpacks the commit being built; the hooks may use it.
            env = {**exported, **({"SOURCE_VERSION": source.commit} if source.commit else {})}
            run_hook("pre_compile", slug_dir=build_dir, venv=venv, env=env, say=say)
            install_dependencies(deps, python=python, slug_dir=build_dir, venv=venv, say=say)
            collectstatic(build_dir, venv, exported, say)
            run_hook("post_compile", slug_dir=build_dir, venv=venv, env=env, say=say)
            build_dir.chmod(0o755)  # mkdtemp made it private; a slug is read by its dynos
            _move_into_place(build_dir, final)
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)
        os.close(held)
    say(f"{STEP}Compiled slug size: {byte_size(_slug_size(final, venv), short=True)}")
    say(f"{STEP}Done: slug {slug_id[:12]}")
    return Slug(
        id=slug_id,
        path=final,
        venv=venv,
        python_version=python.version,
        commit=source.commit,
        description=source.description,
    )


def _hold(build_dir: Path) -> int:
    """A lock on the build's folder for as long as the build runs: the kernel lets it go when the
    process dies, however it dies."""
    fd = os.open(build_dir, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _sweep_dead_builds(slugs: Path) -> None:
    """Remove the build folders whose build died without its cleanup (a SIGKILL mid-build; issue 22's
    kill trial found them left in the cache for good): no lock held on them, and older than a new
    build's moment between making its folder and locking it."""
    for entry in os.scandir(slugs):
        if not entry.name.startswith(BUILD_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            if time.time() - entry.stat(follow_symlinks=False).st_mtime < ORPHAN_AGE:
                continue
            fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:  # gone meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a build running now
            continue
        finally:
            os.close(fd)
        shutil.rmtree(entry.path, ignore_errors=True)


def _move_into_place(build_dir: Path, final: Path) -> None:
    try:
        os.rename(build_dir, final)
    except OSError:
        if not final.is_dir():
            raise
        # Another build of the same content finished first; its slug is as good as ours.


def _config_hash(config_vars: Mapping[str, str]) -> str:
    """Empty without config vars, so an app without any keeps its slug id."""
    if not config_vars:
        return ""
    return hashlib.sha256("".join(f"{k}\0{v}\0" for k, v in sorted(config_vars.items())).encode()).hexdigest()


def _tree_hash(root: Path, env: str) -> str:
    digest = hashlib.sha256()
    for path in sorted(entries(root)):
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            content = os.readlink(path)
        elif stat.S_ISREG(mode):
            content = _file_hash(path)
        else:
            content = ""
        digest.update(f"{path.relative_to(root).as_posix()}\0{mode:o}\0{content}\n".encode())
    digest.update(env.encode())
    return digest.hexdigest()[:ID_LENGTH]


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _slug_size(slug: Path, venv: Path | None) -> int:
    """Measured once per slug (a big virtualenv takes a while to walk), then read back."""
    record = slug.parent.parent / "sizes" / slug.name  # <cache>/sizes/<slug id>
    try:
        return int(record.read_text())
    except (OSError, ValueError):
        size = content_size(slug) + (content_size(venv) if venv is not None else 0)
        try:
            record.parent.mkdir(exist_ok=True)
            record.write_text(str(size))
        except OSError:
            pass
        return size
