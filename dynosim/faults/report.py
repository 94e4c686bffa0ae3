"""The resilience report: what the app did around each fault of a run, read from the log stream, and a
verdict with the fix where it did not recover. Printed when the run ends and written under `faults` in
`--report-json`.

What it reads (a `Witness` subscribes at the run's first fault, so a run without faults pays nothing):
- requests: the router's lines; a request failed if its status is 500 or more or it has an error H-code
  (at=error: H12, H13, H10…; H27's client that went away is not the app's failure). It
  began `connect` + `service` ms before its line. "During" a fault: it overlapped the fault; "after":
  it began after the fault ended and before the next fault began (or the run stopped).
- time to recover: from the fault's end to the end of the first request after it that succeeded.
- crashes: `State changed from … to crashed`; a dyno-crash's or memory-pressure's own are expected.
- errors the app logged: its dynos' lines (one-offs' too) with an `…Error`/`…Exception` word, `ERROR`
  or `error:` (a traceback's heading is not counted apart from its exception's line).
- jobs lost: a worker's job that began and had not finished, failed or been put back when its dyno's
  process exited (its SIGTERM ignored until the SIGKILL, R12, or an exit that left it). A job is seen in
  the words RQ, Celery and the fixture apps log: RQ's `queue: func(…) (ID)` … `queue: Job OK (ID)`
  or `[Job ID]: exception raised…` (but `job ID failed (Work-horse terminated unexpectedly…`, RQ's
  default Worker on SIGTERM, is a job lost), Celery's `Task name[ID] received` … `Task name[ID]
  succeeded|failed|raised|retry`, and `job ID started` … `job ID done|failed|re-queued`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from dynosim.faults.board import Span
from dynosim.logs import LogLine, LogStream

ROUTER_TIMEOUT_MS = 30000
SAMPLES = 3  # errors quoted per fault
EXPECTED_CRASHES = ("dyno-crash", "memory-pressure")  # the fault itself crashes the dyno
EXPECTED_TIMEOUTS = ("router-timeout", "dyno-hang")  # the fault itself holds requests past 30 s
# the router's own answers while no dyno can take a request: the platform's, not the app's
PLATFORM_CODES = frozenset({"H10", "H19", "H20", "H21", "H24", "H80", "H99"})

_DYNO = re.compile(r"[a-z][\w-]*\.\d+")
_ROUTER = re.compile(r"\bat=(\w+)(?: code=(H\d+))?.* connect=(\d*)m?s? service=(\d*)m?s? status=(\d*)")
_CRASHED = re.compile(r"State changed from \w+ to crashed")
_EXITED = re.compile(r"Process exited with status")
_R12 = "Error R12"
_ERROR = re.compile(r"Traceback \(most recent call last\)|\w*(?:Error|Exception)\b|\b(?:ERROR|[Ee]rror:)")
_STOPPING = "stopping all dynos"  # the supervisor's line when the run is asked to stop
_UUID = r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}"
_JOB_STARTS = (
    re.compile(rf"(?:^|\s)[\w.-]+: (?!Job OK)\S.*\((?P<id>{_UUID})\)$"),  # RQ, after its "12:00:01 "
    re.compile(r"Task \S+\[(?P<id>[\w-]+)\] received"),  # Celery
    re.compile(r"\bjob (?P<id>\S+) started\b"),
)
# RQ's default Worker leaves its work horse to the SIGTERM Heroku sends every process, and marks the job
# failed: a job the SIGTERM lost, not one its code failed
_RQ_HORSE_KILLED = re.compile(rf"\bjob (?P<id>{_UUID}) failed \(Work-horse terminated unexpectedly")
_JOB_ENDS = (
    re.compile(rf"(?:^|\s)[\w.-]+: Job OK \((?P<id>{_UUID})\)"),
    re.compile(rf"\[Job (?P<id>{_UUID})\]: exception raised"),
    re.compile(r"Task \S+\[(?P<id>[\w-]+)\] (?:succeeded|failed|raised|retry)"),
    re.compile(r"\bjob (?P<id>\S+) (?:done|failed|re-?queued)\b"),
)
_REDIS = re.compile(r"redis|Redis|OOM command not allowed|maxmemory")
_CREDENTIALS = re.compile(r"password authentication failed|role \S+ does not exist")
_POSTGRES = re.compile(r"psycopg|sqlalchemy|server closed the connection|terminating connection|PG::")


@dataclass(frozen=True)
class Request:
    began: float
    done: float
    failed: bool
    code: str  # the H-code, "" for none
    slow: bool  # took the router's 30 s or more

    @property
    def by_app(self) -> bool:
        return self.failed and self.code not in PLATFORM_CODES


@dataclass(frozen=True)
class LostJob:
    time: float
    dyno: str
    job: str
    how: str  # "SIGKILL after SIGTERM (R12)" | "exited without finishing it" | "its work horse killed by SIGTERM"


class Witness:
    """Keeps the lines the report reads, from `watch()` until the run is asked to stop."""

    def __init__(self, logs: LogStream) -> None:
        self.logs = logs
        self.requests: list[Request] = []
        self.lines: list[LogLine] = []  # dynos' state changes and the app's errors
        self.lost: list[LostJob] = []
        self.stopped: float | None = None
        self.since = time.time()  # the report's offsets count from here: the formation's start
        self._jobs: dict[str, list[str]] = {}  # dyno -> jobs it is working on
        self._killed: set[str] = set()  # dynos past R12
        self._watching = False

    def formation_started(self) -> None:
        self.since = time.time()

    def watch(self) -> None:
        if not self._watching:
            self._watching = True
            self.logs.subscribe(self._receive)

    def _receive(self, lines: Sequence[LogLine]) -> None:
        for line in lines:
            # by the line's own time: the router's lines come in batches, some after the stop's
            if self.stopped is None or line.time <= self.stopped:
                self._read(line)

    def _read(self, line: LogLine) -> None:
        if line.dyno == "router":
            if line.source == "heroku" and (match := _ROUTER.search(line.text)) is not None:
                at, code, connect, service, status = match.groups()
                took = int(connect or 0) + int(service or 0)
                # a warning (H27: the client went away, H28) is the client's doing, not a failure
                failed = at == "error" or (status.isdigit() and int(status) >= 500)
                slow = code == "H12" or took >= ROUTER_TIMEOUT_MS
                self.requests.append(Request(line.time - took / 1000, line.time, failed, code or "", slow))
        elif line.source == "dynosim" and line.dyno == "supervisor" and line.text.startswith(_STOPPING):
            self.stopped = line.time
        elif line.source == "heroku" and _DYNO.fullmatch(line.dyno):
            self._platform(line)
        elif line.source == "app" and _DYNO.fullmatch(line.dyno):
            self._app(line)

    def _platform(self, line: LogLine) -> None:
        if _CRASHED.search(line.text):
            self.lines.append(line)
        elif line.text.startswith(_R12):
            self._killed.add(line.dyno)
        elif _EXITED.search(line.text):
            how = "SIGKILL after SIGTERM (R12)" if line.dyno in self._killed else "exited without finishing it"
            self.lost += [LostJob(line.time, line.dyno, job, how) for job in self._jobs.pop(line.dyno, [])]
            self._killed.discard(line.dyno)

    def _app(self, line: LogLine) -> None:
        if (match := _RQ_HORSE_KILLED.search(line.text)) is not None:
            jobs = self._jobs.get(line.dyno, [])
            if match["id"] in jobs:
                jobs.remove(match["id"])
                self.lost.append(LostJob(line.time, line.dyno, match["id"], "its work horse killed by SIGTERM"))
            return
        for pattern in _JOB_ENDS:
            if (match := pattern.search(line.text)) is not None:
                jobs = self._jobs.get(line.dyno, [])
                if match["id"] in jobs:
                    jobs.remove(match["id"])
                return
        for pattern in _JOB_STARTS:
            if (match := pattern.search(line.text)) is not None:
                self._jobs.setdefault(line.dyno, []).append(match["id"])
                return
        if _ERROR.search(line.text):
            self.lines.append(line)


@dataclass(frozen=True)
class Outcome:
    """What the app did around one fault, and the verdict."""

    fault: str  # as the log stream named it: "f1 addon-restart on heroku-postgresql"
    kind: str
    target: str | None
    started: float
    ended: float | None
    failed_during: int
    failed_after: int
    requests_after: int
    recovered_after: float | None  # seconds from its end to the first request that succeeded after it
    crashes: int
    errors: int
    error_samples: tuple[str, ...]
    jobs_lost: int
    jobs_lost_how: tuple[str, ...]
    survived: bool
    bug: str | None  # "reconnect to Postgres", … as the report names it
    fix: str | None

    def as_json(self) -> dict[str, object]:
        return asdict(self)

    def describe(self, since: float) -> list[str]:
        verdict = "survived" if self.survived else f"did not survive: {self.bug}"
        took = f", {self.ended - self.started:.1f}s" if self.ended is not None else ""
        lines = [f"{self.fault} (at +{self.started - since:.1f}s{took}): {verdict}"]
        recovery = ""
        if self.failed_during or self.failed_after:
            recovery = (
                f"; recovered {self.recovered_after:.1f}s after it ended"
                if self.recovered_after is not None
                else "; no request succeeded after it"
            )
        lines.append(f"  requests failed: {self.failed_during} during, {self.failed_after} after{recovery}")
        lines.append(f"  crashes: {self.crashes}; errors logged: {self.errors}; jobs lost: {self.jobs_lost}")
        lines += [f"    {sample}" for sample in (*self.jobs_lost_how, *self.error_samples)]
        if self.fix is not None:
            lines.append(f"  fix: {self.fix}")
        return lines


FIXES = {
    "handle SIGTERM in workers": (
        "trap SIGTERM in the worker and put the job back on its queue before exiting (RQ and Celery's warm "
        "shutdown, Celery's acks_late), within the 30 s Heroku gives before SIGKILL"
    ),
    "retry on Redis errors": (
        "retry the command on ConnectionError and TimeoutError, e.g. redis.Redis.from_url(url, "
        "retry=Retry(ExponentialBackoff(cap=2), 30), retry_on_error=[ConnectionError, TimeoutError]), "
        "and catch what is left instead of letting the process die"
    ),
    "do not cache DATABASE_URL": (
        "read DATABASE_URL from the environment when the process starts, never from a file or a copy "
        "made elsewhere: a failover or credential rotation restarts the dynos with the new one (not a "
        "long-running one-off: start it again)"
    ),
    "reconnect to Postgres": (
        "create the engine with pool_pre_ping=True (SQLAlchemy; Django: CONN_HEALTH_CHECKS = True) so a "
        "connection the server dropped is replaced before a request gets it"
    ),
    "keep requests under 30 s": (
        "the router gives up after 30 s (H12): move slow work to a worker, and bound the slow calls "
        "(statement_timeout, client timeouts) well under it"
    ),
    "do not crash on an add-on's error": (
        "catch the client's connection errors and retry or answer 503: the dyno crashed, and Heroku "
        "waits longer before each restart after the first"
    ),
    "requests kept failing after it": "see the errors the app logged after the fault ended",
}


def outcomes(spans: Iterable[Span], witness: Witness, run_ended: float) -> list[Outcome]:
    spans = sorted(spans, key=lambda s: s.fault.started)
    stop = witness.stopped if witness.stopped is not None else run_ended
    result = []
    for index, span in enumerate(spans):
        start = span.fault.started
        window_end = spans[index + 1].fault.started if index + 1 < len(spans) else stop
        end = min(span.ended if span.ended is not None else stop, stop)
        result.append(_outcome(span, witness, start, end, max(window_end, end)))
    return result


def _outcome(span: Span, witness: Witness, start: float, end: float, window_end: float) -> Outcome:
    fault = span.fault
    during = [r for r in witness.requests if r.began <= end and r.done >= start]
    after = [r for r in witness.requests if end < r.began <= window_end]
    first_ok = next((r for r in sorted(after, key=lambda r: r.done) if not r.failed), None)
    seen = [line for line in witness.lines if start <= line.time <= window_end]
    crashes = [line for line in seen if line.source == "heroku"]
    errors = [line for line in seen if line.source == "app"]
    lost = [job for job in witness.lost if start <= job.time <= window_end]
    later_errors = " ".join(line.text for line in errors if line.time > end)
    all_errors = " ".join(line.text for line in errors)
    unexpected_crash = bool(crashes) and fault.kind not in EXPECTED_CRASHES
    app_failed_after = [r for r in after if r.by_app]
    bug = _bug(
        fault.kind,
        fault.request.target,
        lost,
        unexpected_crash,
        app_failed_after,
        after,
        during,
        later_errors,
        all_errors,
    )
    # the exceptions themselves, not the tracebacks' headings
    quoted = [line for line in errors if not line.text.lstrip().startswith("Traceback")]
    samples = list(dict.fromkeys(f"{line.dyno}: {line.text.strip()}" for line in quoted))
    return Outcome(
        fault=fault.describe(),
        kind=fault.kind,
        target=fault.request.target,
        started=start,
        ended=end,
        failed_during=sum(r.failed for r in during),
        failed_after=sum(r.failed for r in after),
        requests_after=len(after),
        recovered_after=None if first_ok is None else max(0.0, first_ok.done - end),
        crashes=len(crashes),
        errors=len(quoted) or len(errors),
        error_samples=tuple(samples[-SAMPLES:]),
        jobs_lost=len(lost),
        jobs_lost_how=tuple(f"{job.dyno}: job {job.job} lost ({job.how})" for job in lost),
        survived=bug is None,
        bug=bug,
        fix=None if bug is None else FIXES[bug],
    )


def _bug(
    kind: str,
    target: str | None,
    lost: Sequence[LostJob],
    unexpected_crash: bool,
    app_failed_after: Sequence[Request],
    after: Sequence[Request],
    during: Sequence[Request],
    later_errors: str,
    all_errors: str,
) -> str | None:
    """The fix the evidence points at first, or None when the app came through."""
    on_redis = kind == "redis-oom" or "redis" in (target or "").lower() or bool(_REDIS.search(all_errors))
    if lost:
        return "handle SIGTERM in workers"
    if (unexpected_crash or app_failed_after) and on_redis and _REDIS.search(all_errors):
        return "retry on Redis errors"
    # a failover restarts the dynos onto the new URL: what still fails after it kept the old one
    if (app_failed_after or later_errors) and (kind == "addon-failover" or _CREDENTIALS.search(later_errors)):
        return "do not cache DATABASE_URL"
    if any(r.slow for r in after) or (kind not in EXPECTED_TIMEOUTS and any(r.slow for r in during)):
        return "keep requests under 30 s"
    if app_failed_after and not on_redis and (_POSTGRES.search(later_errors) or kind.startswith("addon-")):
        return "reconnect to Postgres"
    if unexpected_crash:
        return "do not crash on an add-on's error"
    if app_failed_after:
        return "requests kept failing after it"
    return None


def describe(found: Sequence[Outcome], since: float) -> list[str]:
    """The report's lines: a heading, each fault's, and a total."""
    survived = sum(o.survived for o in found)
    lines = [f"=== dynosim resilience report: {len(found)} fault(s), {survived} survived ==="]
    for outcome in found:
        lines += outcome.describe(since)
    return lines
