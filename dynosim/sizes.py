"""Byte sizes: how much a folder holds, and how to say it (`dynosim addons`, the build's slug size, the
ephemeral filesystem's report)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path


def entries(root: Path) -> Iterator[Path]:
    """Every path under root, folders included, without following symlinks."""
    for current, dirs, files in os.walk(root):
        for name in dirs + files:
            yield Path(current) / name


def disk_usage(folder: Path) -> int:
    """Bytes the folder takes on disk, like `du -s` (allocated blocks, hard links once)."""
    total, seen = 0, set()
    for path in entries(folder):
        try:
            st = path.lstat()
        except OSError:  # gone while we looked
            continue
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def content_size(root: Path) -> int:
    """Bytes of the files under root (a symlink counts as itself): what an archive of them holds."""
    stats = (path.lstat() for path in entries(root))
    return sum(st.st_size for st in stats if not stat.S_ISDIR(st.st_mode))


def byte_size(size: float, *, short: bool = False) -> str:
    """A size as people read it, "512 B" or "1.5 MB"; `short` as Heroku's build output writes a slug's: "1.5M"."""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            break
        size /= 1024
    number = f"{size:.0f}" if unit == "B" else f"{size:.1f}"
    return f"{number}{unit[0]}" if short else f"{number} {unit}"
