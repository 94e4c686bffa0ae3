"""The SMTP sink's data (Mailgun, SendGrid): the messages it captured; reset to none; snapshots of them.

Save: the add-on's `.eml` files copied into `<folder>/<add-on>.mail/`. Load: the snapshot's copied into
a new folder beside the add-on's `mail/`, then the two swapped by rename. The sink is not stopped: it
names each message's folder anew (`write_private` into `mail/`, a scratch file then a rename), so once
the folders are swapped it writes into the new one. A message it finished in the old folder while the
load ran is moved into the new one, not lost: the mailbox ends with the snapshot's messages and those
the sink accepted meanwhile. (One being written at the very swap fails its rename, and the sink then
answers its client with an error rather than "250 Ok": a client's send fails, no message vanishes.)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dynosim.addons.data.base import Context, Kind, check_format
from dynosim.addons.smtp import MAIL, mail_files, read_mail
from dynosim.errors import AddonError

FORMAT = 1


def reset(ctx: Context) -> str:
    messages = _messages(ctx)
    for path in messages:
        path.unlink(missing_ok=True)
    return f"{len(messages)} captured message(s) deleted"


def save(ctx: Context, folder: Path) -> dict[str, Any]:
    """The add-on's captured messages into `<folder>/<add-on>.mail/`."""
    target = folder / f"{ctx.name}.mail"
    target.mkdir(mode=0o700)
    messages = _messages(ctx)
    copied = 0
    for path in messages:
        try:
            shutil.copy2(path, target / path.name)
        except FileNotFoundError:  # deleted (a reset) since it was listed
            continue
        copied += 1
    return {"format": FORMAT, "folder": target.name, "messages": copied}


def verify(ctx: Context, folder: Path, meta: Mapping[str, Any]) -> None:
    """That the snapshot's folder is there and holds only messages the sink captured."""
    source = _source(folder, meta)
    check_format(meta, source, "mail", FORMAT)
    if not source.is_dir():
        raise AddonError(f"{source}: missing from the snapshot; save the snapshot again")
    for path in sorted(source.iterdir()):
        try:
            read_mail(path)
        except (AddonError, OSError, ValueError):
            raise AddonError(
                f"{path}: not a message dynosim captured; remove it from the snapshot, or save it again"
            ) from None


def _source(folder: Path, meta: Mapping[str, Any]) -> Path:
    name = meta.get("folder")
    if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
        raise AddonError(f"{folder}: its mail entry names no folder ({name!r}); save the snapshot again")
    return folder / name


def load(ctx: Context, folder: Path, meta: Mapping[str, Any]) -> str:
    """(After `verify`.) The add-on's messages replaced by the snapshot's, the sink kept running."""
    snapshot = sorted(_source(folder, meta).iterdir())
    mail = ctx.state_dir / "addons" / ctx.name / MAIL
    mail.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    before = {path.name for path in mail.glob("*.eml")}  # what the load replaces; any other is mail meanwhile
    fresh = Path(tempfile.mkdtemp(prefix=f".{MAIL}.load-", dir=mail.parent))  # 0700
    try:
        for path in snapshot:
            shutil.copy2(path, fresh / path.name)
    except OSError as error:
        shutil.rmtree(fresh, ignore_errors=True)
        raise AddonError(
            f"{fresh}: could not copy the snapshot's mail into it ({error.strerror or error}); "
            "check the disk's space, then try again"
        ) from None
    old = fresh.with_name(fresh.name.replace(".load-", ".old-"))
    if mail.exists():
        os.rename(mail, old)
    try:
        os.rename(fresh, mail)
    except OSError as error:
        if old.exists():
            os.rename(old, mail)
        shutil.rmtree(fresh, ignore_errors=True)
        raise AddonError(
            f"{mail}: could not be replaced ({error.strerror or error}); check its folder, then try again"
        ) from None
    kept = 0
    if old.exists():
        for path in old.glob("*.eml"):
            if path.name not in before:
                os.replace(path, mail / path.name)
                kept += 1
        shutil.rmtree(old, ignore_errors=True)
    meanwhile = f", {kept} captured during the load kept" if kept else ""
    return f"{len(snapshot)} message(s) loaded in place of the {len(before)} it held{meanwhile}"


def _messages(ctx: Context) -> list[Path]:
    return [path for path in mail_files(ctx.state_dir) if path.parent.parent.name == ctx.name]


KIND = Kind(reset=reset, save=save, load=load, verify=verify)
