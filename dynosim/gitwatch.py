"""`dynosim run --watch`: the app's new commits, as they are made (each one a push to deploy)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from .buildpack.source import git_dir
from .errors import DynosimError

SETTLE = 0.3  # seconds: a commit moves several refs, and is one new commit for all of them


def head(path: Path) -> str:
    result = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return result.stdout.strip()


async def new_commits(path: Path) -> AsyncIterator[str]:
    """HEAD each time it moves to another commit (a commit, a checkout, a reset); DynosimError when
    `path` is in no git repository."""
    git = git_dir(path)
    if git is None:
        raise DynosimError(f"{path} is not in a git repository; nothing to watch")
    changed = asyncio.Event()
    loop = asyncio.get_running_loop()
    observer = _watch_refs(git, lambda: loop.call_soon_threadsafe(changed.set))
    seen = head(path)
    try:
        while True:
            await changed.wait()
            await asyncio.sleep(SETTLE)
            changed.clear()
            now = head(path)
            if now != seen:
                seen = now
                yield now
    finally:
        observer.stop()


def _watch_refs(git: Path, changed: Callable[[], object]) -> Any:
    """A watchdog observer on the repository's HEAD and refs: a commit or a checkout touches them."""
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: Any) -> None:
            # git writes refs as NAME.lock and renames it into place: the rename is what counts
            path = str(getattr(event, "dest_path", "") or event.src_path)
            if not path.endswith(".lock"):
                changed()

    observer = Observer()
    observer.daemon = True
    observer.schedule(Handler(), str(git), recursive=False)  # HEAD, packed-refs
    if (git / "refs" / "heads").is_dir():
        observer.schedule(Handler(), str(git / "refs" / "heads"), recursive=True)
    observer.start()
    return observer
