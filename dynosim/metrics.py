"""The run's metrics, as Heroku Metrics plots them: 1-second points in a ring buffer of an hour (memory
per dyno, router response time p50/p95/p99, requests by status class, and events as markers: H-codes,
R14/R15, crashes, restarts, cycles, deploys, releases, rollbacks, config changes, scaling, faults).

Everything but memory is read from the log stream, the way Heroku's own metrics come from its router
and dyno lines: `heroku[router]` lines carry service= and status= (and code=H.. for errors),
`heroku[web.N]` lines the state changes and R-codes, `app[api]` the deploys and releases,
`dynosim[faults]` the faults. A line costs a few `str.find`s: the router publishes one per request.

Memory is read once a second with the memory monitor's own halves of a sample (`memory.processes`,
`memory.usage`): the monitor's loop runs at Heroku's 20-second interval and its R14 lines follow that
interval, so it cannot give 1-second points.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .logs import LogLine
from .runtime import memory

if TYPE_CHECKING:  # psutil is imported where it is used, as the memory monitor does
    import psutil

RING_SECONDS = 3600  # an hour of 1-second points
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
TREE_EVERY = 10.0  # seconds between listings of a dyno's processes; their memory is read every second
_CLASS_INDEX = {"2": 0, "3": 1, "4": 2, "5": 3}


@dataclass(frozen=True, slots=True)
class Memory:
    rss_mb: float
    swap_mb: float
    quota_mb: float


@dataclass(frozen=True, slots=True)
class Event:
    dyno: str
    kind: str  # H12, R14, R15, crash, restart, cycle, deploy, release, rollback, config, scale, fault
    text: str


@dataclass(frozen=True, slots=True)
class Point:
    """One second of the run."""

    second: int
    requests: tuple[int, int, int, int]  # by STATUS_CLASSES
    response_ms: tuple[float, float, float] | None  # p50, p95, p99 of the second's requests; None: none
    memory: tuple[tuple[str, Memory], ...]
    events: tuple[Event, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "time": self.second,
            "requests": dict(zip(STATUS_CLASSES, self.requests, strict=True)),
            "response_ms": dict(zip(("p50", "p95", "p99"), self.response_ms, strict=True))
            if self.response_ms
            else None,
            "memory": {
                name: {"rss_mb": round(m.rss_mb, 2), "swap_mb": round(m.swap_mb, 2), "quota_mb": round(m.quota_mb, 2)}
                for name, m in self.memory
            },
            "events": [{"dyno": e.dyno, "kind": e.kind, "text": e.text} for e in self.events],
        }


@dataclass(slots=True)
class _Open:
    """A second still taking lines."""

    requests: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    service: list[int] = field(default_factory=list)
    memory: dict[str, Memory] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)


def percentile(ordered: Sequence[int], share: float) -> float:
    """The nearest-rank percentile of sorted values."""
    return float(ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))])


class _Trees:
    """Each dyno's processes, listed again every TREE_EVERY seconds or when its process changed:
    listing them scans /proc (in copy mode every process's environment too), which once a second for
    10 dynos cost the router's requests 10 % more CPU (bench/metrics.py); reading their memory is a
    file or two each."""

    def __init__(self) -> None:
        self._listed: dict[str, tuple[object, float, list[psutil.Process]]] = {}

    def sample(self, dynos: Sequence[memory.Dyno], now: float) -> list[tuple[float, float] | None]:
        import psutil

        samples: list[tuple[float, float] | None] = []
        for dyno in dynos:
            listed = self._listed.get(dyno.name)
            try:
                if listed is None or listed[0] is not dyno.process or now - listed[1] >= TREE_EVERY:
                    listed = self._listed[dyno.name] = (dyno.process, now, memory.processes(dyno))
                samples.append(memory.usage(listed[2]))
            except (psutil.Error, OSError, AssertionError):  # a dyno gone between the listing and the sample
                samples.append(None)
        for name in set(self._listed) - {dyno.name for dyno in dynos}:
            del self._listed[name]
        return samples


Sampled = Callable[[], Iterable[memory.Dyno]]  # the dynos up now, whose memory is sampled


class Metrics:
    """A LogStream subscriber and a once-a-second memory sampler, filling the ring buffer."""

    def __init__(self, dynos: Sampled, seconds: int = RING_SECONDS) -> None:
        self._dynos = dynos
        self.points: deque[Point] = deque(maxlen=seconds)
        self._open: dict[int, _Open] = {}
        self._closed = 0  # the last second in `points`
        self._task: asyncio.Task[None] | None = None
        self._trees = _Trees()

    # the log stream's lines
    def __call__(self, lines: Sequence[LogLine]) -> None:
        for line in lines:
            if line.dyno == "router":
                if line.source == "heroku":
                    self._router(line)
            elif line.source == "heroku":
                self._dyno(line)
            elif line.source == "app" and line.dyno == "api":
                self._api(line)
            elif line.source == "dynosim" and line.dyno == "faults":
                self._event(line, "fault")

    def _bucket(self, when: float) -> _Open:
        second = max(int(when), self._closed + 1)  # a line late for a closed second counts in the next
        bucket = self._open.get(second)
        if bucket is None:
            bucket = self._open[second] = _Open()
        return bucket

    def _router(self, line: LogLine) -> None:
        text = line.text
        bucket = self._bucket(line.time)
        start = text.find(" service=")
        if start >= 0:
            start += 9
            end = text.find("ms", start)
            if end > start:
                bucket.service.append(int(text[start:end]))
            start = text.find(" status=", start)
            if start >= 0:
                index = _CLASS_INDEX.get(text[start + 8 : start + 9])
                if index is not None:
                    bucket.requests[index] += 1
        if not text.startswith("at=info"):
            code = text.find("code=")
            if code >= 0:
                bucket.events.append(Event("router", text[code + 5 : text.find(" ", code)], text))

    def _dyno(self, line: LogLine) -> None:
        text = line.text
        if text.startswith("Error R1"):
            kind = text[6:9]
        elif text.startswith("State changed from") and text.endswith("to crashed"):
            kind = "crash"
        elif text == "Restarting":
            kind = "restart"
        elif text == "Cycling":
            kind = "cycle"
        else:
            return
        self._event(line, kind)

    def _api(self, line: LogLine) -> None:
        text = line.text
        if text.startswith("Deploy"):
            self._event(line, "deploy")
        elif text.startswith("Release ") and " created by " in text:
            self._event(line, "release")
        elif text.startswith("Rollback to v"):
            self._event(line, "rollback")
        elif " config vars by " in text:  # config:set and config:unset's releases
            self._event(line, "config")
        elif text.startswith("Scaled to "):
            self._event(line, "scale")

    def _event(self, line: LogLine, kind: str) -> None:
        self._bucket(line.time).events.append(Event(line.dyno, kind, line.text))

    # once a second
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1 - time.time() % 1)
            now = time.time()
            dynos = [d for d in self._dynos() if d.process is not None]
            samples = await asyncio.to_thread(self._trees.sample, dynos, now)
            for dyno, sample in zip(dynos, samples, strict=True):
                if sample is not None:
                    self.memory(now, dyno.name, Memory(sample[0], sample[1], dyno.quota.mb))
            self.close(int(now))

    def memory(self, when: float, dyno: str, sample: Memory) -> None:
        self._bucket(when).memory[dyno] = sample

    def close(self, before: int) -> None:
        """Seconds before `before` take no more lines: into the ring buffer with them."""
        for second in sorted(s for s in self._open if s < before):
            bucket = self._open.pop(second)
            service = sorted(bucket.service)
            response = (
                (percentile(service, 0.5), percentile(service, 0.95), percentile(service, 0.99)) if service else None
            )
            requests = (bucket.requests[0], bucket.requests[1], bucket.requests[2], bucket.requests[3])
            self.points.append(Point(second, requests, response, tuple(bucket.memory.items()), tuple(bucket.events)))
            self._closed = second

    def series(self, since: float | None = None, window: float | None = None) -> dict[str, Any]:
        """The points (seconds with anything in them) from `since`, or the last `window` seconds."""
        start = since if since is not None else (time.time() - window if window is not None else 0.0)
        return {
            "interval": 1,
            "ring_seconds": self.points.maxlen,
            "status_classes": list(STATUS_CLASSES),
            "points": [point.as_json() for point in self.points if point.second >= start],
        }


def to_csv(points: Sequence[dict[str, Any]]) -> str:
    """`series()`'s points as CSV, one row a second (`dynosim metrics --csv`, the dashboard's export)."""
    dynos = sorted({name for point in points for name in point["memory"]})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "time",
            *(f"requests_{c}" for c in STATUS_CLASSES),
            "p50_ms",
            "p95_ms",
            "p99_ms",
            *(f"{dyno}_{what}_mb" for dyno in dynos for what in ("rss", "swap", "quota")),
            "events",
        ]
    )
    for point in points:
        response = point["response_ms"] or {}
        memory = point["memory"]
        writer.writerow(
            [
                point["time"],
                *(point["requests"][c] for c in STATUS_CLASSES),
                *(response.get(p, "") for p in ("p50", "p95", "p99")),
                *(memory.get(dyno, {}).get(f"{what}_mb", "") for dyno in dynos for what in ("rss", "swap", "quota")),
                " ".join(f"{e['dyno']}:{e['kind']}" for e in point["events"]),
            ]
        )
    return out.getvalue()
