"""The one way dynosim writes a file that holds secrets or state: private to its user, and replaced whole.

Config vars, release records, the run lock, the formation and the add-ons' passwords all go through
`write_private`, so none is ever world-readable for an instant (umask or not), and a crash or a full
disk mid-write leaves the previous file, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_private(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """`path`'s new contents, `mode` (0600 by default) from its first byte; OSError if it cannot be written."""
    # mkstemp makes a file of our own (0600, O_EXCL) beside the target: two writers never share a scratch
    # file, and os.replace is atomic only within one filesystem
    fd, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            if mode != 0o600:
                os.fchmod(handle.fileno(), mode)
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            # without it, a power loss right after the rename can leave an empty file on some filesystems
            os.fsync(handle.fileno())
        os.replace(scratch, path)
    except BaseException:
        os.unlink(scratch)
        raise


def private_folder(folder: Path, levels: int = 2) -> Path:
    """`folder` made if need be, it and the `levels - 1` folders above it 0700 (an add-on's folder and
    `.dynosim/addons/` above it; the state folder itself is 0700 already): mkdir's mode reaches only the
    last folder it makes, and umask may take bits from it."""
    folder.mkdir(parents=True, exist_ok=True)
    for level in [folder, *folder.parents][:levels]:
        if level.stat().st_mode & 0o777 != 0o700:
            os.chmod(level, 0o700)
    return folder
