"""An app folder as dynosim reads it: Procfile, app.json, config vars, its state dir."""

from __future__ import annotations

import functools
import getpass
import hashlib
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigStore, resolve_config_vars, state_dir
from .errors import DynosimError
from .manifest import Manifest, load_manifest
from .procfile import Procfile, load_procfile


@dataclass(frozen=True)
class AppDir:
    """The app's folder as loaded (the public API's `dynosim.App` is the app run from it)."""

    path: Path
    procfile: Procfile
    manifest: Manifest
    config_vars: Mapping[str, str]
    state_dir: Path
    env_file: Path | None = None  # `dynosim run -e`: read instead of the folder's .env

    @property
    def name(self) -> str:
        return self.manifest.name or self.path.name

    @property
    def runtime_dir(self) -> Path:
        """Where this app's dyno filesystems live: outside the app folder, private to the user."""
        key = hashlib.sha256(str(self.path).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"dynosim-{_uid()}" / key

    def user(self) -> str:
        """Who Heroku's `by user …` log lines name: the git identity, else the login."""
        return _user(self.path)


@functools.cache
def _user(path: Path) -> str:
    try:
        email = subprocess.run(
            ["git", "-C", str(path), "config", "user.email"], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        email = ""
    return email or getpass.getuser()


def _uid() -> int:
    import os

    return os.getuid()


def load_app(path: Path, procfile_file: Path | None = None, env_file: Path | None = None) -> AppDir:
    """The app in folder `path`; `dynosim run -f/-e` name another Procfile and env file."""
    path = path.resolve()
    if not path.is_dir():
        raise DynosimError(f"{path}: no such app folder; run dynosim in your app's folder or pass --app-dir")
    procfile = load_procfile(path, procfile_file)
    manifest = load_manifest(path)
    state = state_dir(path)
    config_vars = resolve_config_vars(path, manifest, ConfigStore(state), env_file)
    return AppDir(path, procfile, manifest, config_vars, state, env_file)
