"""Views of a run's log stream: `heroku logs`' selection of lines, and the searchable, waitable view tests use."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Sequence

from .logs import LogLine, LogStream


def select(lines: Iterable[LogLine], dyno: str | None = None, source: str | None = None) -> list[LogLine]:
    """`heroku logs --dyno/-d web.1|web|router|api --source app|heroku`."""
    return [
        line
        for line in lines
        if (not source or line.source == source) and (not dyno or line.dyno == dyno or line.dyno.split(".")[0] == dyno)
    ]


class LogView:
    """The run's log stream, for tests: every line so far, searchable, and waitable."""

    def __init__(self, stream: LogStream) -> None:
        self._lines: list[LogLine] = []
        self._changed = threading.Condition()
        stream.subscribe(self._receive)

    def _receive(self, lines: Sequence[LogLine]) -> None:
        with self._changed:
            self._lines.extend(lines)
            self._changed.notify_all()

    def lines(self, dyno: str | None = None, source: str | None = None) -> list[LogLine]:
        with self._changed:
            return [line for line in self._lines if dyno in (None, line.dyno) and source in (None, line.source)]

    def text(self) -> str:
        return "\n".join(line.format() for line in self.lines())

    def search(self, pattern: str) -> list[LogLine]:
        regex = re.compile(pattern)
        return [line for line in self.lines() if regex.search(line.format())]

    def wait_for(self, pattern: str, timeout: float = 30.0, *, after: int = 0) -> LogLine:
        """The first line (from index `after`) whose Heroku-format text matches `pattern`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self._lines[after:]:
                    if regex.search(line.format()):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    tail = "\n".join(line.format() for line in self._lines[-40:])
                    raise TimeoutError(f"no log line matching {pattern!r} within {timeout}s; last lines:\n{tail}")
                self._changed.wait(remaining)

    def __len__(self) -> int:
        with self._changed:
            return len(self._lines)
