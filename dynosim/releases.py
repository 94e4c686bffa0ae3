"""Releases: a slug plus a snapshot of config vars, numbered v1, v2… and kept in .dynosim/."""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .build import Slug
from .errors import ConfigError


@dataclass(frozen=True)
class Release:
    version: int
    slug: Slug
    config_vars: Mapping[str, str]
    description: str
    created_at: float

    @property
    def name(self) -> str:
        return f"v{self.version}"


def _fingerprint(slug: Slug, config_vars: Mapping[str, str]) -> str:
    # only a hash of the values is stored here: the values themselves live in config.json (0600)
    data = json.dumps([slug.id, sorted(config_vars.items())]).encode()
    return hashlib.sha256(data).hexdigest()


class ReleaseHistory:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "releases.json"

    def entries(self) -> list[dict[str, object]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.path}: unreadable release history ({exc}); fix or delete the file") from None
        if not isinstance(data, list):
            raise ConfigError(f"{self.path}: not a release list; fix or delete the file")
        return data

    def create(self, slug: Slug, config_vars: Mapping[str, str], user: str) -> tuple[Release, bool]:
        """The release for this slug and config; a new version only when either changed."""
        entries = self.entries()
        fingerprint = _fingerprint(slug, config_vars)
        if entries and entries[-1].get("fingerprint") == fingerprint:
            last = entries[-1]
            return Release(int(last["version"]), slug, dict(config_vars), str(last["description"]), float(last["created_at"])), False  # type: ignore[arg-type]
        version = int(entries[-1]["version"]) + 1 if entries else 1  # type: ignore[call-overload]
        release = Release(version, slug, dict(config_vars), slug.description, time.time())
        entries.append({
            "version": version, "slug": slug.id, "commit": slug.commit, "description": release.description,
            "created_at": release.created_at, "user": user, "fingerprint": fingerprint,
        })
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(entries, handle, indent=1)
        os.replace(tmp, self.path)
        return release, True
