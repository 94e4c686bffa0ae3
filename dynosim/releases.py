"""Releases: a slug plus a snapshot of config vars, numbered v1, v2… and kept in .dynosim/.

A release whose slug has a release phase is `pending` until its release command exits; it then
`succeeded` and becomes the current release, or `failed` and the previous one stays current
(Heroku's release statuses).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .buildpack import Slug
from .config import ConfigStore
from .errors import ConfigError
from .labs import Labs, release_metadata
from .manifest import load_manifest
from .privatefile import write_private

PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"


@dataclass(frozen=True)
class Release:
    version: int
    slug: Slug
    config_vars: Mapping[str, str]
    description: str  # "Deploy 58d1fdd", "Set FOO config vars": Heroku's wording
    created_at: float
    # runtime-dyno-metadata's vars when the feature was on as the release was made (HEROKU_DYNO_ID aside)
    dyno_metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"v{self.version}"


@dataclass(frozen=True)
class RollbackTarget:
    """What `releases:rollback` copies: a succeeded release's slug and config vars."""

    version: int
    slug: Slug
    config_vars: Mapping[str, str]  # as its dynos saw them, add-on vars included
    config_set: Mapping[str, str]  # the config:set vars of then, which become config.json's again
    migrated_since: tuple[int, ...]  # later releases whose release phase ran: the schema may be theirs
    replaces: str  # the current release's slug id, which HEAD builds until the next commit

    @property
    def description(self) -> str:
        return f"Rollback to v{self.version}"


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
    data = json.dumps([slug.id, sorted(config_vars.items())]).encode()
    return hashlib.sha256(data).hexdigest()


def _metadata(entry: Mapping[str, object]) -> dict[str, str]:
    recorded = entry.get("dyno_metadata")
    return {str(k): str(v) for k, v in recorded.items()} if isinstance(recorded, dict) else {}


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
        self,
        slug: Slug,
        config_vars: Mapping[str, str],
        user: str,
        description: str,
        *,
        release_phase: bool,
        addons: Sequence[str] | None = None,
        replaces: str | None = None,
    ) -> tuple[Release, bool]:
        """The release for this slug and config: the current one when neither changed, else a new
        version, `pending` until its release phase ends when it has one. A rollback made with no run
        active (`replaces`: the slug it rolled back from) stays current while HEAD still builds that
        slug, as a rollback on Heroku lasts until the next push; one still `pending` (its slug has a
        release phase) is handed back as new, so that the run runs its release phase and settles it."""
        entries = self.entries()
        fingerprint = _fingerprint(slug, config_vars)
        awaiting = entries[-1] if entries and _status(entries[-1]) == PENDING else None
        recorded = awaiting.get("slug") if awaiting is not None else None
        if awaiting is not None and isinstance(recorded, dict) and awaiting.get("replaces") == slug.id:
            return Release(
                int(str(awaiting["version"])),
                slug_from_record(recorded),
                dict(config_vars),
                str(awaiting["description"]),
                float(str(awaiting["created_at"])),
                _metadata(awaiting),
            ), True
        current = _current(entries)
        recorded = current.get("slug") if current is not None else None
        if current is not None and isinstance(recorded, dict):
            pinned = current.get("replaces") == slug.id
            if pinned or current.get("fingerprint") == fingerprint:
                return Release(
                    int(str(current["version"])),
                    slug_from_record(recorded) if pinned else slug,
                    dict(config_vars),
                    str(current["description"]),
                    float(str(current["created_at"])),
                    _metadata(current),
                ), False
        for entry in entries:
            if _status(entry) == PENDING:  # its run was killed during the release phase
                entry["status"] = FAILED
        version = int(entries[-1]["version"]) + 1 if entries else 1  # type: ignore[call-overload]
        created_at = time.time()
        app_dir = self.path.parent.parent
        metadata = release_metadata(
            Labs(self.path.parent),
            load_manifest(app_dir).name or app_dir.name,
            version,
            created_at,
            slug.commit,
            slug.description,
        )
        release = Release(version, slug, dict(config_vars), description, created_at, metadata)
        entries.append(
            {
                "version": version,
                "description": description,
                "created_at": release.created_at,
                "user": user,
                "status": PENDING if release_phase else SUCCEEDED,
                "fingerprint": fingerprint,
                "slug": slug_record(slug),
                "release_phase": release_phase,
                # releases.json is 0600 as config.json is: a rollback copies these
                "config_vars": dict(config_vars),
                "config_set": ConfigStore(self.path.parent).load(),
                **({"addons": list(addons)} if addons is not None else {}),  # the names `dynosim addons` shows
                **({"replaces": replaces} if replaces else {}),
                **({"dyno_metadata": metadata} if metadata else {}),
            }
        )
        self._write(entries)
        return release, True

    def rollback_target(self, version: int | None) -> RollbackTarget:
        """`releases:rollback [vN]`: release N (else the one before the current) as it can be rolled
        back to, or a one-line error saying why not."""
        entries = self.entries()
        current = _current(entries)
        if current is None:
            raise ConfigError("releases:rollback: the app has no release yet; start `dynosim run` first")
        if version is None:
            earlier = [e for e in entries if e is not current and _status(e) == SUCCEEDED]
            earlier = [e for e in earlier if int(str(e["version"])) < int(str(current["version"]))]
            if not earlier:
                raise ConfigError(
                    f"releases:rollback: v{current['version']} is the app's first release; nothing to roll back to"
                )
            version = int(str(earlier[-1]["version"]))
        entry = next((e for e in entries if e.get("version") == version), None)
        if entry is None:
            raise ConfigError(f"releases:rollback: there is no release v{version}; `dynosim releases` lists them")
        if _status(entry) != SUCCEEDED:
            raise ConfigError(
                f"releases:rollback: v{version} {_status(entry)}; only a succeeded release can be rolled back to"
            )
        config_vars, config_set = entry.get("config_vars"), entry.get("config_set")
        if not isinstance(config_vars, dict) or not isinstance(config_set, dict):
            raise ConfigError(
                f"releases:rollback: v{version} does not record its config vars (an older dynosim made it); "
                f"roll back to a later release"
            )
        migrated = tuple(
            int(str(e["version"]))
            for e in entries
            if int(str(e["version"])) > version and e.get("release_phase") and _status(e) != PENDING
        )
        recorded = current.get("slug")
        replaces = recorded["id"] if isinstance(recorded, dict) else ""
        return RollbackTarget(version, self.slug(version), dict(config_vars), dict(config_set), migrated, str(replaces))

    def settle(self, release: Release, succeeded: bool) -> None:
        """The end of a release's release phase."""
        entries = self.entries()
        for entry in entries:
            if entry.get("version") == release.version:
                entry["status"] = SUCCEEDED if succeeded else FAILED
        self._write(entries)

    def addons(self, version: int | None) -> list[str] | None:
        """The add-ons attached when release `version` was made; None when an older dynosim did not record them."""
        recorded = next((e.get("addons") for e in self.entries() if e.get("version") == version), None)
        return [str(name) for name in recorded] if isinstance(recorded, list) else None

    def status(self, version: int) -> str | None:
        return next((_status(e) for e in self.entries() if e.get("version") == version), None)

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

    def dyno_metadata(self, version: int) -> dict[str, str]:
        """Release `version`'s runtime-dyno-metadata vars, which its one-off dynos get too."""
        return next((_metadata(e) for e in self.entries() if e.get("version") == version), {})

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

    def info(self, version: int | None) -> dict[str, object]:
        """`releases:info [vN]`: release N's `listing` row (default: the current), its config vars and
        attached add-ons (each None when an older dynosim did not record them)."""
        rows = self.listing()
        if version is None:
            version = next((int(str(row["version"])) for row in rows if row["current"]), None)
            if version is None:
                raise ConfigError("releases:info: the app has no release yet; start `dynosim run` first")
        row = next((row for row in rows if row["version"] == version), None)
        if row is None:
            raise ConfigError(f"releases:info: there is no release v{version}; `dynosim releases` lists them")
        entry = next(e for e in self.entries() if e.get("version") == version)
        config_vars = entry.get("config_vars")
        return {
            **row,
            "config_vars": dict(config_vars) if isinstance(config_vars, dict) else None,
            "addons": self.addons(version),
        }

    def replace(self, entries: list[dict[str, object]]) -> None:
        """The whole history, as `snapshot:load` puts back a snapshot's."""
        self._write(entries)

    def _write(self, entries: list[dict[str, object]]) -> None:
        write_private(self.path, json.dumps(entries, indent=1))
