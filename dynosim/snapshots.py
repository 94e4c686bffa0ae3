"""Snapshots of an app's state (`snapshot:save NAME`, `snapshot:load NAME`, `snapshots`,
`snapshot:delete NAME`), LocalStack's Cloud Pods for a Heroku app: every add-on's data (each service's
`save`/`load` in addons/data/), the config vars set with `config:set`, and the release history, saved
and loaded together.

A snapshot is a folder `.dynosim/snapshots/NAME/` holding `snapshot.json` (what it holds, which add-ons,
each one's metadata) and the add-ons' files. It is written under a temporary name and renamed when
whole, so a save that fails (a full disk) leaves no snapshot and the earlier one of that name, if any,
is kept. A load checks the snapshot against the app first (the same add-ons, readable files, each
service's own checks), then loads each add-on into new data swapped in; the config vars and releases
are the supervisor's to apply (a new release when they change what the dynos run).
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .addons.data import KINDS, Context
from .errors import DynosimError
from .privatefile import private_folder, write_private
from .sizes import disk_usage

FOLDER = "snapshots"
MANIFEST = "snapshot.json"
FORMAT = 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


class SnapshotError(DynosimError):
    pass


@dataclass(frozen=True)
class Snapshot:
    name: str
    created_at: float
    addons: tuple[Mapping[str, Any], ...]  # name, service, plan, meta
    config: Mapping[str, str]  # config:set's vars
    releases: tuple[Mapping[str, Any], ...]  # releases.json's entries
    size: int  # bytes on disk

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "created_at": self.created_at,
            "addons": [{"name": a["name"], "service": a["service"], "plan": a["plan"]} for a in self.addons],
            "config_vars": sorted(self.config),
            "releases": len(self.releases),
            "size": self.size,
        }


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise SnapshotError(
            f"{name!r} is not a snapshot name: letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    return name


def folder(state_dir: Path, name: str) -> Path:
    return Path(state_dir) / FOLDER / check_name(name)


def listing(state_dir: Path) -> list[Snapshot]:
    """Every snapshot, oldest first; an unreadable one is left out of the list (load names it)."""
    root = Path(state_dir) / FOLDER
    found = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.is_dir() and _NAME.fullmatch(path.name):
            with contextlib.suppress(SnapshotError):
                found.append(read(state_dir, path.name))
    return sorted(found, key=lambda s: s.created_at)


def read(state_dir: Path, name: str) -> Snapshot:
    where = folder(state_dir, name)
    if not where.is_dir():
        known = ", ".join(p.name for p in sorted((Path(state_dir) / FOLDER).glob("*")) if _NAME.fullmatch(p.name))
        raise SnapshotError(
            f"no snapshot {name!r} (snapshots: {known or 'none'}); `dynosim snapshot:save {name}` makes it"
        )
    try:
        raw = json.loads((where / MANIFEST).read_text())
        if raw.get("format") != FORMAT:
            raise SnapshotError(
                f"{where / MANIFEST}: made by another version of dynosim (format {raw.get('format')}); make a new snapshot"
            )
        return Snapshot(
            name=name,
            created_at=float(raw["created_at"]),
            addons=tuple(dict(a) for a in raw["addons"]),
            config={str(k): str(v) for k, v in dict(raw["config"]).items()},
            releases=tuple(dict(r) for r in raw["releases"]),
            size=disk_usage(where),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise SnapshotError(
            f"{where / MANIFEST}: missing or corrupt; delete the snapshot (`dynosim snapshot:delete {name}`)"
        ) from None


def save(
    state_dir: Path,
    name: str,
    contexts: Sequence[Context],
    config: Mapping[str, str],
    releases: Sequence[Mapping[str, Any]],
) -> Snapshot:
    """Every add-on's data, the config vars and releases into snapshot NAME (which must not exist yet)."""
    final = folder(state_dir, name)
    if final.exists():
        raise SnapshotError(
            f"snapshot {name!r} exists; delete it first (`dynosim snapshot:delete {name}`) or choose another name"
        )
    for ctx in contexts:
        if KINDS[ctx.attachment.service].save is None:
            raise SnapshotError(
                f"{ctx.name}: snapshots of {ctx.attachment.service} add-ons are not supported; nothing was saved"
            )
    scratch = final.with_name(f".{name}.{secrets.token_hex(4)}.tmp")
    private_folder(final.parent, levels=1)  # .dynosim/snapshots/: the add-ons' data, config vars
    scratch.mkdir(mode=0o700)
    saved: list[tuple[Context, dict[str, Any]]] = []
    try:
        for ctx in contexts:
            save_one = KINDS[ctx.attachment.service].save
            assert save_one is not None
            saved.append((ctx, save_one(ctx, scratch)))
        manifest = {
            "format": FORMAT,
            "created_at": time.time(),
            "addons": [
                {"name": ctx.name, "service": ctx.attachment.service, "plan": ctx.attachment.plan, "meta": meta}
                for ctx, meta in saved
            ],
            "config": dict(config),
            "releases": list(releases),
        }
        write_private(scratch / MANIFEST, json.dumps(manifest, indent=1))
        scratch.rename(final)
    except BaseException as error:
        _discard(saved)
        shutil.rmtree(scratch, ignore_errors=True)
        if isinstance(error, OSError):
            raise SnapshotError(
                f"saving snapshot {name!r} failed ({error.strerror or error}); nothing was saved"
            ) from None
        raise
    return read(state_dir, name)


def check(snapshot: Snapshot, contexts: Sequence[Context]) -> None:
    """That the snapshot holds the app's add-ons, no more and no fewer, before anything is loaded."""
    made = sorted((a["name"], a["service"]) for a in snapshot.addons)
    here = sorted((ctx.name, ctx.attachment.service) for ctx in contexts)
    if made != here:
        names = ", ".join(n for n, _ in made) or "no add-ons"
        raise SnapshotError(
            f"snapshot {snapshot.name!r} holds {names}; this app has {', '.join(n for n, _ in here) or 'no add-ons'}: "
            "load it into the app it was made of, or make a new one"
        )


def load_addons(state_dir: Path, snapshot: Snapshot, contexts: Sequence[Context]) -> dict[str, str]:
    """Each add-on's data from the snapshot (checked first): what was done, by add-on."""
    check(snapshot, contexts)
    metas = {a["name"]: a.get("meta", {}) for a in snapshot.addons}
    where = folder(state_dir, snapshot.name)
    for ctx in contexts:
        verify = KINDS[ctx.attachment.service].verify
        if verify is not None:
            verify(ctx, where, metas[ctx.name])
    done: dict[str, str] = {}
    for ctx in contexts:
        load_one = KINDS[ctx.attachment.service].load
        if load_one is None:
            raise SnapshotError(f"{ctx.name}: snapshots of {ctx.attachment.service} add-ons are not supported")
        done[ctx.name] = load_one(ctx, where, metas[ctx.name])
    return done


def delete(state_dir: Path, name: str, contexts: Sequence[Context]) -> Snapshot:
    """The snapshot's files, and what it keeps on the add-ons' servers (Postgres's template database)."""
    snapshot = read(state_dir, name)
    by_name = {ctx.name: ctx for ctx in contexts}
    _discard([(by_name[a["name"]], dict(a.get("meta", {}))) for a in snapshot.addons if a["name"] in by_name])
    shutil.rmtree(folder(state_dir, name))
    return snapshot


def _discard(saved: Sequence[tuple[Context, Mapping[str, Any]]]) -> None:
    for ctx, meta in saved:
        discard = KINDS[ctx.attachment.service].discard
        if discard is not None:
            with contextlib.suppress(DynosimError):  # a server gone: nothing of it to drop
                discard(ctx, meta)
