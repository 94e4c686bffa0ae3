"""The log stream (Heroku's logplex): one ordered stream of every line, in Heroku's format.

Dynos and the platform publish lines; the terminal printer, the retained buffer and any
subscriber read the same stream. Publishing never blocks; producers that can flood (dyno
output) await `room()` so that a slow terminal slows the dyno instead of growing a queue.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import select
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from .colour import enabled as colour_enabled

RETAINED_LINES = 1500  # logplex keeps the last 1,500 lines
MAX_LINE_BYTES = 10000  # Heroku splits longer lines into chunks of this size
PENDING_LIMIT = 1 << 20  # bytes a subscriber may hold before producers wait
DIRECT_WRITE = select.PIPE_BUF  # a batch this small is written from the event loop when there is room

_COLOURS = (36, 33, 32, 35, 34, 31, 96, 93, 92, 95, 94, 91)


@dataclass(frozen=True, slots=True)
class LogLine:
    time: float
    source: str  # "app", "heroku", or "dynosim" for the emulator's own hints
    dyno: str  # "web.1", "router", "api", "release.4711"
    text: str

    def format(self) -> str:
        return f"{timestamp(self.time)} {self.source}[{self.dyno}]: {self.text}"


def timestamp(when: float) -> str:
    """RFC 5424 timestamp with microseconds, as `heroku logs` prints it; what datetime's isoformat
    gives, with the date and time of day made once a second (datetime's conversion was the largest
    single cost of a line in a profile of an access log's one line per request)."""
    fraction, whole = math.modf(when)
    second, micro = int(whole), round(fraction * 1e6)
    if micro >= 1_000_000:
        second, micro = second + 1, micro - 1_000_000
    return f"{_second(second)}.{micro:06d}+00:00"


@functools.lru_cache(maxsize=4)
def _second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")


Subscriber = Callable[[Sequence[LogLine]], None]


class LogStream:
    def __init__(self, retained: int = RETAINED_LINES) -> None:
        self.recent: deque[LogLine] = deque(maxlen=retained)
        self._subscribers: list[Subscriber] = []
        self._printers: list[TerminalPrinter] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)
        if isinstance(subscriber, TerminalPrinter):
            self._printers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.remove(subscriber)
        if subscriber in self._printers:
            self._printers.remove(subscriber)

    def publish(self, lines: Sequence[LogLine]) -> None:
        self.recent.extend(lines)
        for subscriber in tuple(self._subscribers):
            subscriber(lines)

    def heroku(self, dyno: str, text: str) -> None:
        self.publish((LogLine(time.time(), "heroku", dyno, text),))

    def api(self, text: str) -> None:
        self.publish((LogLine(time.time(), "app", "api", text),))

    def hint(self, dyno: str, text: str) -> None:
        self.publish((LogLine(time.time(), "dynosim", dyno, text),))

    def app_output(self, dyno: str, texts: Iterable[str]) -> None:
        now = time.time()
        self.publish([LogLine(now, "app", dyno, text) for text in texts])

    async def room(self) -> None:
        """Wait until every printer has drained below its limit."""
        for printer in self._printers:
            await printer.room()


class LineSplitter:
    """Turns a dyno's output chunks into whole lines, never splitting mid-line."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, chunk: bytes) -> list[str]:
        pieces = (self._partial + chunk).split(b"\n")
        self._partial = pieces.pop()
        return [text for piece in pieces for text in _decode(piece)]

    def close(self) -> list[str]:
        rest, self._partial = self._partial, b""
        return _decode(rest) if rest else []


def _decode(raw: bytes) -> list[str]:
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if len(raw) <= MAX_LINE_BYTES:
        return [raw.decode("utf-8", "replace")]
    return [raw[i : i + MAX_LINE_BYTES].decode("utf-8", "replace") for i in range(0, len(raw), MAX_LINE_BYTES)]


class TerminalPrinter:
    """Writes the stream to a terminal or pipe in batches: a few lines to a reader with room for them
    at once, anything more from a thread, so that a slow terminal never stalls the event loop."""

    def __init__(self, out: TextIO, colour: bool | None = None) -> None:
        self._fd = out.fileno()
        self._room = select.poll()  # whether the reader has room now, without blocking to find out
        self._room.register(self._fd, select.POLLOUT)
        self._colour = colour_enabled(out) if colour is None else colour  # NO_COLOR, --no-color
        self._prefixes: dict[tuple[str, str], str] = {}
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._writer: asyncio.Task[None] | None = None
        self._in_thread = False
        self._closing = False

    def __call__(self, lines: Sequence[LogLine]) -> None:
        stamp_cache: dict[float, str] = {}
        out = []
        for line in lines:
            stamp = stamp_cache.get(line.time)
            if stamp is None:
                stamp = stamp_cache[line.time] = timestamp(line.time)
            out.append(f"{stamp} {self._prefix(line.source, line.dyno)} {line.text}\n")
        text = "".join(out)
        self._pending.append(text)
        self._pending_bytes += len(text)
        if self._pending_bytes > PENDING_LIMIT:
            self._drained.clear()
        if self._writer is None:
            self.flush()
        elif not self._in_thread and self._pending_bytes <= DIRECT_WRITE and self._room.poll(0):
            # a pipe or terminal that polls writable takes PIPE_BUF bytes without blocking; handing
            # a line to the writer task cost a wake-up of the loop per line (access logs: per request)
            _write_all(self._fd, self._take())
        else:
            self._wake.set()

    def _prefix(self, source: str, dyno: str) -> str:
        key = (source, dyno)
        prefix = self._prefixes.get(key)
        if prefix is None:
            prefix = f"{source}[{dyno}]:"
            if self._colour:
                colour = _COLOURS[len(self._prefixes) % len(_COLOURS)]
                prefix = f"\x1b[{colour}m{prefix}\x1b[0m"
            self._prefixes[key] = prefix
        return prefix

    def start(self) -> None:
        """Write from a background task of the running loop from now on."""
        self._writer = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        # never cancel the writer: a write queued for its thread would be dropped
        if self._writer is not None:
            self._closing = True
            self._wake.set()
            await self._writer
            self._writer = None
        self.flush()

    async def room(self) -> None:
        await self._drained.wait()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            data = self._take()
            if data:
                if len(data) <= DIRECT_WRITE and self._room.poll(0):
                    _write_all(self._fd, data)  # the thread's round trip costs 100 µs of CPU
                else:
                    self._in_thread = True  # until it is written, later lines queue behind it
                    try:
                        await asyncio.to_thread(_write_all, self._fd, data)
                    finally:
                        self._in_thread = False
            if not self._pending:
                self._drained.set()
                if self._closing:
                    return

    def _take(self) -> bytes:
        data = "".join(self._pending).encode("utf-8", "replace")
        self._pending.clear()
        self._pending_bytes = 0
        return data

    def flush(self) -> None:
        _write_all(self._fd, self._take())
        self._drained.set()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        except BrokenPipeError:
            return
        view = view[written:]
