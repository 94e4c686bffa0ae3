"""Releases: a slug plus a snapshot of config vars, numbered v1, v2… and kept in .dynosim/.

A release whose slug has a release phase is `pending` until its release command exits; it then
`succeeded` and becomes the current release, or `failed` and the previous one stays current
(Heroku's release statuses).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .buildpack import Slug
from .errors import ConfigError
from .privatefile import write_private

PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"


@dataclass(frozen=True)
class Release:
    version: int
    slug: Slug
    config_vars: Mapping[str, str]
    description: str  # "Deploy 58d1fdd", "Set FOO config vars": Heroku's wording
    created_at: float

    @property
    def name(self) -> str:
        return f"v{self.version}"


def config_change_description(changes: Mapping[str, str | None]) -> str:
    """Heroku's description of a config:set (`Set A, B config vars`) or config:unset release."""
    set_names = [name for name, value in changes.items() if value is not None]
    removed = [name for name, value in changes.items() if value is None]
    parts = [f"Set {', '.join(set_names)}"] if set_names else []
    if removed:
        parts.append(f"{'remove' if parts else 'Remove'} {', '.join(removed)}")
    return f"{' and '.join(parts)} config vars"


def slug_record(slug: Slug) -> dict[str, object]:
    """A slug as JSON: how releases.json records it and `dynosim deploy` hands it to the running supervisor."""
    return {
        "id": slug.id,
        "path": str(slug.path),
        "venv": str(slug.venv) if slug.venv else None,
        "python_version": slug.python_version,
        "commit": slug.commit,
        "description": slug.description,
    }


def slug_from_record(recorded: Mapping[str, object]) -> Slug:
    commit = recorded.get("commit")
    return Slug(
        id=str(recorded["id"]),
        path=Path(str(recorded["path"])),
        venv=Path(str(recorded["venv"])) if recorded.get("venv") else None,
        python_version=str(recorded["python_version"]),
        commit=str(commit) if commit else None,
        description=str(recorded["description"]),
    )


def _fingerprint(slug: Slug, config_vars: Mapping[str, str]) -> str:
    # only a hash of the values is stored here: the values themselves live in config.json (0600)
    data = json.dumps([slug.id, sorted(config_vars.items())]).encode()
    return hashlib.sha256(data).hexdigest()


def _status(entry: Mapping[str, object]) -> str:
    return str(entry.get("status", SUCCEEDED))  # histories written before statuses were recorded


def _current(entries: list[dict[str, object]]) -> dict[str, object] | None:
    return next((entry for entry in reversed(entries) if _status(entry) == SUCCEEDED), None)


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

    def create(
        self, slug: Slug, config_vars: Mapping[str, str], user: str, description: str, *, release_phase: bool
    ) -> tuple[Release, bool]:
        """The release for this slug and config: the current one when neither changed, else a new
        version, `pending` until its release phase ends when it has one."""
        entries = self.entries()
        fingerprint = _fingerprint(slug, config_vars)
        current = _current(entries)
        if current is not None and current.get("fingerprint") == fingerprint and isinstance(current.get("slug"), dict):
            return Release(
                int(str(current["version"])),
                slug,
                dict(config_vars),
                str(current["description"]),
                float(str(current["created_at"])),
            ), False
        for entry in entries:
            if _status(entry) == PENDING:  # its run was killed during the release phase
                entry["status"] = FAILED
        version = int(entries[-1]["version"]) + 1 if entries else 1  # type: ignore[call-overload]
        release = Release(version, slug, dict(config_vars), description, time.time())
        entries.append(
            {
                "version": version,
                "description": description,
                "created_at": release.created_at,
                "user": user,
                "status": PENDING if release_phase else SUCCEEDED,
                "fingerprint": fingerprint,
                "slug": slug_record(slug),
            }
        )
        self._write(entries)
        return release, True

    def settle(self, release: Release, succeeded: bool) -> None:
        """The end of a release's release phase."""
        entries = self.entries()
        for entry in entries:
            if entry.get("version") == release.version:
                entry["status"] = SUCCEEDED if succeeded else FAILED
        self._write(entries)

    def current_version(self) -> int | None:
        current = _current(self.entries())
        return int(current["version"]) if current is not None else None  # type: ignore[call-overload]

    def slug(self, version: int) -> Slug:
        """The slug release `version` runs, as built then."""
        entry = next((e for e in self.entries() if e.get("version") == version), None)
        recorded = entry.get("slug") if entry is not None else None
        if not isinstance(recorded, dict):
            raise ConfigError(
                f"{self.path}: v{version} does not record its slug (an older dynosim wrote it); "
                f"start `dynosim run` to release the app again"
            )
        slug = slug_from_record(recorded)
        for needed in (slug.path, slug.venv):
            if needed is not None and not needed.is_dir():
                raise ConfigError(
                    f"v{version}'s slug is no longer in the build cache ({needed} is gone); "
                    f"start `dynosim run` to build and release it again"
                )
        return slug

    def listing(self) -> list[dict[str, object]]:
        """Newest first, with Heroku's `status` and `current`, as `heroku releases --json` shows them."""
        entries = self.entries()
        current = _current(entries)
        rows: list[dict[str, object]] = []
        for entry in reversed(entries):
            slug = entry.get("slug")
            rows.append(
                {
                    "version": entry["version"],
                    "description": entry["description"],
                    "status": _status(entry),
                    "current": entry is current,
                    "user": entry.get("user", ""),
                    "created_at": entry["created_at"],
                    "slug": {"id": slug["id"] if isinstance(slug, dict) else slug},
                    "commit": slug.get("commit") if isinstance(slug, dict) else entry.get("commit"),
                }
            )
        return rows

    def _write(self, entries: list[dict[str, object]]) -> None:
        write_private(self.path, json.dumps(entries, indent=1))
