"""Heroku Labs: the app's feature flags (`labs:enable`), kept in .dynosim/labs.json, and the dyno
metadata that `runtime-dyno-metadata` gives every dyno of a release made while it is on."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from .errors import ConfigError
from .privatefile import write_private

RUNTIME_DYNO_METADATA = "runtime-dyno-metadata"
# the features dynosim emulates, with Heroku's descriptions
FEATURES = {RUNTIME_DYNO_METADATA: "Provide information about the app and environment on the dyno"}


class Labs:
    """The app's enabled features and its app id (a UUID made once, as Heroku's app id is the app's for life)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "labs.json"

    def enabled(self) -> set[str]:
        return self._read()[0]

    def app_id(self) -> str:
        features, app_id = self._read()
        if not app_id:
            app_id = str(uuid.uuid4())
            self._write(features, app_id)
        return app_id

    def enable(self, feature: str) -> None:
        self._set(feature, True)

    def disable(self, feature: str) -> None:
        self._set(feature, False)

    def _set(self, feature: str, on: bool) -> None:
        if feature not in FEATURES:
            raise ConfigError(f"{feature!r} is not a feature dynosim knows; known: {', '.join(sorted(FEATURES))}")
        features, app_id = self._read()
        self._write(features | {feature} if on else features - {feature}, app_id)

    def _read(self) -> tuple[set[str], str]:
        """The enabled features and the app id ("" until one is made)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return set(), ""
        except (OSError, ValueError) as error:
            raise ConfigError(f"{self.path}: unreadable ({error}); fix the file or delete it") from None
        features = data.get("features") if isinstance(data, dict) else None
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise ConfigError(f'{self.path}: "features" must be a list of names; fix the file or delete it')
        return set(features), str(data.get("app_id") or "")

    def _write(self, features: set[str], app_id: str) -> None:
        write_private(self.path, json.dumps({"features": sorted(features), "app_id": app_id}, indent=1))


def release_metadata(
    labs: Labs, app_name: str, version: int, created_at: float, commit: str | None, description: str
) -> dict[str, str]:
    """`runtime-dyno-metadata`'s vars of one release (HEROKU_DYNO_ID is each dyno's), or none when it is off."""
    if RUNTIME_DYNO_METADATA not in labs.enabled():
        return {}
    return {
        "HEROKU_APP_ID": labs.app_id(),
        "HEROKU_APP_NAME": app_name,
        "HEROKU_RELEASE_CREATED_AT": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created_at)),
        "HEROKU_RELEASE_VERSION": f"v{version}",
        "HEROKU_SLUG_COMMIT": commit or "",
        "HEROKU_SLUG_DESCRIPTION": description,
    }
