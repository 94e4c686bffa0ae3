"""The ephemeral ledger: every file a dyno wrote since it booted, and what its restart loses.

A watchdog observer on the directories that receive a dyno's writes (its overlay's upper
dirs and its /tmp in namespaces mode, its copy of the slug in copy mode) records each write
as it happens. When the dyno stops, before its filesystem is wiped, the ledger works out what
is about to be lost, names the kind of state (recognised by content where it can be), and
gives the fix Heroku users need.
"""

from __future__ import annotations

import functools
import os
import re
import stat
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from .logs import LogStream
from .runtime.sandbox import DynoFilesystem, Layer
from .sizes import byte_size

if TYPE_CHECKING:
    import pathspec
    from watchdog.events import FileSystemEvent
    from watchdog.observers.api import BaseObserver, ObservedWatch

# Written by every Python app, or by a shell or REPL in a one-off (`heroku run bash`, `python`), and never
# state: left out unless the user asks otherwise. A cache is rebuilt by whatever made it.
DEFAULT_IGNORE = (
    "__pycache__/",
    "*.pyc",
    "*.pyo",
    ".gunicorn/",
    ".cache/",
    ".pytest_cache/",
    ".bash_history",
    ".python_history",
    ".psql_history",
    ".sqlite_history",
    ".rediscli_history",
    ".ipython/",
    ".lesshst",
    ".viminfo",
    ".wget-hsts",
)

SQLITE_HEADER = b"SQLite format 3\x00"
_LOG_NAME = re.compile(r"\.log(\.\d+)?$|\.out$")
_UPLOAD_DIRS = {"upload", "uploads", "media", "user_uploads", "user-uploads", "attachments"}
_COMPILED_SUFFIXES = {".mo", ".css", ".js", ".map"}
_COMPILED_DIRS = {"staticfiles", "static", "assets", "dist", ".webassets-cache"}

KINDS: dict[str, tuple[str, str]] = {
    "sqlite": (
        "SQLite database",
        "keep data in Postgres: add the heroku-postgresql add-on and connect with DATABASE_URL",
    ),
    "log": ("log file", "log to stdout/stderr: Heroku collects a dyno's output, never its files"),
    "upload": (
        "uploaded file",
        "store uploads in object storage (S3 with boto3 or django-storages), not on the dyno's disk",
    ),
    "compiled": (
        "compiled file",
        "build it into the slug in bin/post_compile (e.g. manage.py compilemessages, collectstatic); "
        "the release phase runs in a dyno of its own, so what it writes never reaches the others",
    ),
    "other": ("file", "anything that must outlive a restart belongs in an add-on (Postgres, Redis) or object storage"),
    "deleted": (
        "deleted slug file",
        "deleting a file of the slug lasts only until the restart: the slug brings it back",
    ),
    # not a loss: Heroku's dynos have /tmp for files needed only while they run (a SQLite database there is one)
    "scratch": ("scratch file", "fine for files needed only while the dyno runs"),
}


@dataclass(frozen=True)
class Write:
    dyno: str
    path: str  # as the dyno sees it
    action: str  # created, modified, deleted, moved
    time: float


@dataclass(frozen=True)
class Loss:
    dyno: str
    path: str
    kind: str
    size: int
    time: float

    @property
    def label(self) -> str:
        return KINDS[self.kind][0]

    @property
    def fix(self) -> str:
        return KINDS[self.kind][1]

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "label": self.label, "fix": self.fix}


def classify(seen_as: PurePosixPath, host: Path) -> str:
    try:
        info = host.lstat()
    except OSError:
        return "other"
    if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
        return "deleted"  # an overlayfs whiteout: the dyno deleted a file of the slug
    name = seen_as.name.lower()
    parts = {part.lower() for part in seen_as.parts[:-1]}
    if _is_sqlite(host) or (
        name.endswith(("-journal", "-wal", "-shm")) and _is_sqlite(host.with_name(host.name.rsplit("-", 1)[0]))
    ):
        return "sqlite"
    if _LOG_NAME.search(name) or parts & {"log", "logs"}:
        return "log"
    if parts & _UPLOAD_DIRS:
        return "upload"
    if seen_as.suffix.lower() in _COMPILED_SUFFIXES or parts & _COMPILED_DIRS:
        return "compiled"
    return "other"


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


class _Watch:
    def __init__(self, dyno: str, fs: DynoFilesystem) -> None:
        self.dyno = dyno
        self.fs = fs
        self.touched: set[Path] = set()  # host paths
        self.watches: list[ObservedWatch] = []


class Ledger:
    def __init__(self, logs: LogStream, ignore: Sequence[str] = DEFAULT_IGNORE) -> None:
        self.logs = logs
        self._ignore_patterns = tuple(ignore)
        self.writes: list[Write] = []
        self.losses: list[Loss] = []  # what a restart loses: --strict fails on these
        self.scratch: list[Loss] = []  # what it discards from /tmp, as Heroku's does
        self._watches: dict[str, _Watch] = {}
        self._lock = threading.Lock()
        self._observer: BaseObserver | None = None  # started on first use: watchdog is not imported otherwise

    @functools.cached_property
    def ignore(self) -> pathspec.GitIgnoreSpec:
        # made at first use, not at start: pathspec's import is 10-40 ms on `dynosim run`'s way to a dyno
        import pathspec

        return pathspec.GitIgnoreSpec.from_lines(self._ignore_patterns)

    def watch(self, key: str, dyno: str, fs: DynoFilesystem) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watch = _Watch(dyno, fs)
        ledger = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write", "closed") or event.is_directory:
                    return
                ledger._record(watch, event.event_type, os.fsdecode(event.src_path))
                if event.event_type == "moved":
                    ledger._record(watch, "created", os.fsdecode(event.dest_path))

        if self._observer is None:
            # watchdog 7 adds a watch for a directory made with its parents at once (mkdir -p) twice, the same
            # callback both times, and warns of it in a 1,000-character line a dyno's write would put in the run
            warnings.filterwarnings(
                "ignore", r"Callback with id .* already exists for watch", RuntimeWarning, r"watchdog\."
            )
            self._observer = _iterative_observer() or Observer()
            self._observer.daemon = True
            self._observer.start()
        for layer in fs.layers:
            try:
                watch.watches.append(self._observer.schedule(Handler(), str(layer.host), recursive=True))
            except (OSError, RecursionError) as error:  # watchdog's, over a tree it cannot walk (10,000 deep)
                self.logs.hint(
                    dyno, f"the ephemeral report cannot watch {layer.seen_as} ({error}); writes there may be missing"
                )
        with self._lock:
            self._watches[key] = watch

    def _record(self, watch: _Watch, action: str, host_path: str) -> None:
        path = Path(host_path)
        seen = _seen_as(watch.fs.layers, path)
        if seen is None or self._ignored(watch.fs, seen):
            return
        with self._lock:
            watch.touched.add(path)
            self.writes.append(Write(watch.dyno, str(seen), action, time.time()))

    def _ignored(self, fs: DynoFilesystem, seen: PurePosixPath) -> bool:
        relative = _relative(fs, seen)
        return self.ignore.match_file(relative)

    def unwatch(self, key: str) -> list[Loss]:
        """Stop watching a dyno that has stopped, and return what its wipe is about to lose."""
        with self._lock:
            watch = self._watches.pop(key, None)
        if watch is None:
            return []
        if self._observer is not None:
            for handle in watch.watches:
                try:
                    self._observer.unschedule(handle)
                except (KeyError, OSError):
                    pass
        losses = self._losses(watch)
        with self._lock:
            self.losses.extend(loss for loss in losses if loss.kind != "scratch")
            self.scratch.extend(loss for loss in losses if loss.kind == "scratch")
        return losses

    def pending(self) -> list[Loss]:
        """What a restart of each dyno watched now would lose, as `unwatch` would report it (the
        dashboard's "a restart would lose"); nothing is unwatched or recorded."""
        with self._lock:
            watches = list(self._watches.values())
        return [loss for watch in watches for loss in self._losses(watch)]

    def _losses(self, watch: _Watch) -> list[Loss]:
        with self._lock:
            candidates = set(watch.touched)
        for layer in watch.fs.layers:
            if layer.exact:  # it holds only what the dyno wrote: every file in it is a loss
                candidates.update(_files(layer.host))
        losses = []
        now = time.time()
        for host in sorted(candidates):
            seen = _seen_as(watch.fs.layers, host)
            try:
                if seen is None or self._ignored(watch.fs, seen) or not os.path.lexists(host) or host.is_dir():
                    continue
                kind = classify(seen, host)
                if kind != "sqlite" and _in_tmp(watch.fs, seen):
                    kind = "scratch"
                size = 0 if kind == "deleted" else host.lstat().st_size
            except FileNotFoundError:  # removed by the running dyno between the listing and the look
                continue
            losses.append(Loss(watch.dyno, _display(watch.fs, seen), kind, size, now))
        return losses

    def report(self, dyno: str, losses: Sequence[Loss], why: str) -> None:
        lost = [loss for loss in losses if loss.kind != "scratch"]
        if lost:
            self.logs.hint(
                dyno, f"{why} discards {len(lost)} file(s) {dyno} wrote since it booted; on Heroku they are gone too:"
            )
        for kind in KINDS:
            group = [loss for loss in lost if loss.kind == kind]
            if group:
                self.logs.hint(dyno, f"  {KINDS[kind][0]}: {_listed(group)} -> {KINDS[kind][1]}")
        scratch = [loss for loss in losses if loss.kind == "scratch"]
        if scratch:  # one line, no fix: nothing is wrong
            where = "$TMPDIR" if scratch[0].path.startswith("$TMPDIR/") else "/tmp"
            self.logs.hint(
                dyno,
                f"{why} discards {len(scratch)} scratch file(s) {dyno} wrote to {where}, as Heroku does "
                f"(fine for files needed only while the dyno runs): {_listed(scratch)}",
            )

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
            self._observer = None

    def as_json(self) -> dict[str, object]:
        with self._lock:
            return {
                "losses": [loss.as_dict() for loss in self.losses],
                "scratch": [loss.as_dict() for loss in self.scratch],
                "writes": [asdict(w) for w in self.writes],
            }


def _seen_as(layers: Iterable[Layer], host: Path) -> PurePosixPath | None:
    for layer in layers:
        try:
            return PurePosixPath(layer.seen_as) / host.relative_to(layer.host)
        except ValueError:
            continue
    return None


def _relative(fs: DynoFilesystem, seen: PurePosixPath) -> str:
    for root in (fs.home, fs.venv):
        if root is not None:
            try:
                return str(seen.relative_to(root))
            except ValueError:
                pass
    return str(seen)


def _in_tmp(fs: DynoFilesystem, seen: PurePosixPath) -> bool:
    """Whether the dyno wrote it to its own /tmp (or, in copy mode, its own TMPDIR); the app's files may lie
    under the host's /tmp themselves (a copy of the slug in a run folder there)."""
    if seen.is_relative_to(fs.home) or (fs.venv is not None and seen.is_relative_to(fs.venv)):
        return False
    return seen.is_relative_to("/tmp") or (fs.tmpdir is not None and seen.is_relative_to(fs.tmpdir))


def _display(fs: DynoFilesystem, seen: PurePosixPath) -> str:
    """Paths in the app as Heroku users write them (relative to /app), a TMPDIR of its own as $TMPDIR; others in full."""
    if seen.is_relative_to(fs.home):
        return str(seen.relative_to(fs.home))
    if fs.tmpdir is not None and seen.is_relative_to(fs.tmpdir):
        return f"$TMPDIR/{seen.relative_to(fs.tmpdir)}"
    return str(seen)


def _listed(losses: Sequence[Loss]) -> str:
    shown = ", ".join(
        loss.path if loss.kind == "deleted" else f"{loss.path} ({byte_size(loss.size)})" for loss in losses[:8]
    )
    return shown + (f" and {len(losses) - 8} more" if len(losses) > 8 else "")


def _iterative_observer() -> BaseObserver | None:
    """watchdog's inotify observer, but adding the watches of a new folder's tree one folder at a time.

    watchdog walks a folder made in a watched tree with os.walk, on the reader thread all watches
    share, twice (to watch its folders, and to make up the creation events of what it holds already):
    a dyno's 10,000-deep tree was a RecursionError there (issue 22's wipe trial), a traceback in the
    run's output and the end of the ledger's watching for every dyno of the run. Here both walks are
    loops that stop at PATH_MAX, and the first does not go into a folder watched already (its tree was
    walked when it was added, and what is made in it since has events of its own). It reaches into
    watchdog's watch group; None where that is not the one this was written against (watchdog 7), and
    the plain observer is used."""
    try:
        from watchdog.observers import inotify
    except ImportError:  # not Linux
        return None
    group = getattr(inotify, "InotifyWatchGroup", None)
    needed = ("_add_callback", "_find_node_by_path", "_recursive_simulate")
    if group is None or not all(hasattr(group, name) for name in needed):
        return None
    if not all(hasattr(inotify, name) for name in ("_INVALID_WD", "InotifyEvent", "InotifyConstants", "Mask")):
        return None
    invalid = inotify._INVALID_WD
    path_max = os.pathconf("/", "PC_PATH_MAX")

    class Group(group):  # type: ignore[misc,valid-type]
        def _add_all_callbacks(self, path: bytes) -> None:
            self._add_callback(path)
            folders = [path] if self.is_recursive and os.path.isdir(path) else []
            while folders:
                try:
                    with os.scandir(folders.pop()) as entries:
                        found = [e.path for e in entries if e.is_dir(follow_symlinks=self.follow_symlink)]
                except OSError:  # gone meanwhile, or not ours to list
                    continue
                for inner in found:
                    known = self._find_node_by_path(inner)
                    if len(inner) >= path_max or (known is not None and known.wd != invalid):
                        continue
                    self._add_callback(inner)
                    folders.append(inner)

        def _recursive_simulate(self, src_path: bytes) -> list[inotify.InotifyEvent]:
            # the creation events of what a new folder holds already, each folder's under its watch
            events = []
            folders = [src_path]
            while folders:
                folder = folders.pop()
                try:
                    with os.scandir(folder) as entries:
                        listed = [(e.name, e.is_dir(), e.is_dir(follow_symlinks=self.follow_symlink)) for e in entries]
                except OSError:
                    continue
                node = self._find_node_by_path(folder)
                for name, is_dir, enter in listed:
                    if enter and len(folder) + len(name) < path_max:
                        folders.append(os.path.join(folder, name))
                    if node is not None:
                        mask = inotify.InotifyConstants.IN_CREATE | (inotify.InotifyConstants.IN_ISDIR if is_dir else 0)
                        events.append(inotify.InotifyEvent(node.wd, inotify.Mask(mask), 0, name))
            return events

    class Emitter(inotify.InotifyEmitter):
        def on_thread_start(self) -> None:
            self._inotify = Group(
                self._inotify_fd,
                os.fsencode(self.watch.path),
                is_recursive=self.watch.is_recursive,
                event_mask=self.get_event_mask_from_filter(),
                follow_symlink=self.watch.follow_symlink,
            )

    observer = inotify.InotifyObserver()
    observer._emitter_class = Emitter
    return observer


def _files(root: Path) -> list[Path]:
    """Every entry under `root` but its folders, one folder at a time: a dyno's 10,000-deep tree made
    os.walk's recursion a RecursionError, which lost the dyno's wipe. A folder past PATH_MAX cannot be
    listed by its path and is left out of the report."""
    found: list[Path] = []
    folders = [str(root)]
    while folders:
        try:
            with os.scandir(folders.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                    else:
                        found.append(Path(entry.path))
        except OSError:
            continue
    return found
