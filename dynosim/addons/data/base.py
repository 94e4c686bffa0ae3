"""The shape every service's data module has (`__init__.py` says what each part does): `Context`,
what each is handed, and `Kind`, the parts it gives."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynosim.addons.catalogue import Attachment
from dynosim.errors import AddonError


@dataclass(frozen=True)
class Context:
    state_dir: Path
    attachment: Attachment
    record: Mapping[str, Any]
    # the add-on's server stopped, `between` run, started again (on its port): for a load that
    # must replace what a server reads only at start
    restart: Callable[[Callable[[], None]], None]

    @property
    def name(self) -> str:
        return self.attachment.name

    def url(self) -> str:
        """The add-on's first config var: DATABASE_URL, REDIS_URL, SEARCHBOX_URL…"""
        return next(iter(self.attachment.config_vars.values()))


@dataclass(frozen=True)
class Kind:
    reset: Callable[[Context], str]
    save: Callable[[Context, Path], dict[str, Any]] | None = None  # None: no snapshots of it yet
    load: Callable[[Context, Path, Mapping[str, Any]], str] | None = None
    capture: Callable[[Context], None] | None = None
    # the snapshot's files checked against the add-on (whole, its server's version) before any add-on
    # loads: a snapshot that fails one add-on's check loads none
    verify: Callable[[Context, Path, Mapping[str, Any]], None] | None = None
    # what a deleted snapshot leaves on the server besides its files (Postgres's template database)
    discard: Callable[[Context, Mapping[str, Any]], None] | None = None


def check_format(meta: Mapping[str, Any], where: Path, what: str, expected: int) -> None:
    """A snapshot's entry of another format than this dynosim reads: refused before anything changes."""
    if meta.get("format") != expected:
        raise AddonError(
            f"{where}: a {what} snapshot of format {meta.get('format')!r}, this dynosim reads format {expected}; "
            "load it with the dynosim that saved it, or save it again"
        )


def read_snapshot(path: Path) -> bytes:
    """A snapshot file's bytes; AddonError naming it when it is missing or unreadable."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise AddonError(f"{path}: missing from the snapshot; save the snapshot again") from None
    except OSError as error:
        raise AddonError(f"{path}: unreadable ({error.strerror or error}); check its permissions") from None
