"""Heroku Scheduler: the app's jobs, their schedules and their next runs.

Two sources, one kind of job. `scheduler:add` makes Heroku Scheduler's own jobs (every 10 minutes,
every hour at :00, :10 ... :50, every day at a UTC time on the hour or half hour), kept in the app's
state as Heroku's API keeps them (`every` 10, 60 or 1440 minutes and `at`); app.json's `cron` list
(Dokku's format) adds jobs with any cron schedule. Both become a cron expression here, so the next
run, and how long a run may last (Heroku stops a Scheduler dyno that outlives its interval; app.json's
cron jobs have no limit and a concurrency policy instead, as in Dokku), come from one place. Times
are UTC, as Heroku's and Dokku's are.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .errors import DynosimError
from .formation import dyno_size
from .manifest import ConcurrencyPolicy, Manifest
from .privatefile import write_private
from .procfile import command_problem

# Heroku Scheduler's three frequencies, in its API's minutes, by the --every words
EVERY = {"10m": 10, "1h": 60, "1d": 1440}


class SchedulerError(DynosimError):
    pass


@dataclass(frozen=True)
class Job:
    id: str  # "1", "2"… for scheduler:add; "cron.1"… for app.json's cron entries, by position
    command: str
    schedule: str  # a cron expression, UTC
    frequency: str  # how Heroku's dashboard would say it, or the app.json schedule
    concurrency_policy: ConcurrencyPolicy
    stopped_at_next_run: bool  # Heroku Scheduler's rule for its own jobs
    size: str | None = None  # scheduler:add --size; None: the formation's default size, as for app.json's cron

    def next_run(self, after: datetime) -> datetime:
        """The first run strictly after `after` (an aware UTC datetime)."""
        from croniter import croniter  # only once there is a job: its import runs `file -b` (5-12 ms)

        when: datetime = croniter(self.schedule, after).get_next(datetime)
        return when

    def time_limit(self, at: datetime) -> timedelta | None:
        """How long the run starting at `at` may last: until the job's next run, for Heroku's jobs."""
        return self.next_run(at) - at if self.stopped_at_next_run else None


def scheduler_job(job_id: str, command: str, every: int, at: int, size: str | None = None) -> Job:
    """A Heroku Scheduler job from its stored `every` (10, 60, 1440), `at` (minutes) and dyno size."""
    if every == 10:
        return Job(job_id, command, "*/10 * * * *", "every 10 minutes", "allow", True, size)
    if every == 60:
        return Job(job_id, command, f"{at} * * * *", f"every hour at :{at:02d}", "allow", True, size)
    hour, minute = divmod(at, 60)
    daily = f"every day at {hour:02d}:{minute:02d} UTC"
    return Job(job_id, command, f"{minute} {hour} * * *", daily, "allow", True, size)


def parse_at(every: str, at: str | None) -> int:
    """--at as Heroku's `at`: the minute of the hour (hourly, :00 to :50 in tens) or minutes since
    00:00 UTC (daily, on the hour or half hour)."""
    if every not in EVERY:
        raise SchedulerError(f"--every {every!r}: Heroku Scheduler runs jobs every 10m, 1h or 1d; pick one")
    if at is None:
        return 0
    if every == "10m":
        raise SchedulerError("--at: a 10-minute job runs at :00, :10 ... :50; drop --at or use --every 1h or 1d")
    match = re.fullmatch(r"([0-9]{1,2})?:([0-9]{2})", at.strip())
    if every == "1h":
        if match is None or match[1] is not None or int(match[2]) % 10 or int(match[2]) > 50:
            raise SchedulerError(f"--at {at!r}: an hourly job runs at a minute :00, :10 ... :50; write it like :30")
        return int(match[2])
    if match is None or match[1] is None or int(match[1]) > 23 or match[2] not in ("00", "30"):
        raise SchedulerError(
            f"--at {at!r}: a daily job runs at a UTC time on the hour or half hour; write it like 09:30"
        )
    return int(match[1]) * 60 + int(match[2])


class SchedulerJobs:
    """The jobs in `<app>/.dynosim/scheduler.json`, plus app.json's cron entries (read-only here)."""

    def __init__(self, state: Path) -> None:
        self.path = state / "scheduler.json"

    def _load(self) -> dict[str, object]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return {"next_id": 1, "jobs": []}
        except (OSError, ValueError) as error:
            raise SchedulerError(f"{self.path}: cannot read it ({error}); remove it to start with no jobs") from None
        if not isinstance(data, dict):
            raise SchedulerError(f"{self.path}: not a job list; remove it to start with no jobs")
        return data

    def _stored(self) -> list[dict[str, object]]:
        jobs = self._load().get("jobs", [])
        return [job for job in jobs if isinstance(job, dict)] if isinstance(jobs, list) else []

    def jobs(self, manifest: Manifest) -> list[Job]:
        added = [
            scheduler_job(
                str(raw["id"]),
                str(raw["command"]),
                int(str(raw["every"])),
                int(str(raw["at"])),
                str(raw["size"]) if raw.get("size") else None,
            )
            for raw in self._stored()
        ]
        from_json = [
            Job(f"cron.{index}", spec.command, spec.schedule, spec.schedule, spec.concurrency_policy, False)
            for index, spec in enumerate(manifest.cron, start=1)
        ]
        return added + from_json

    def get(self, manifest: Manifest, job_id: str) -> Job:
        for job in self.jobs(manifest):
            if job.id == job_id:
                return job
        raise SchedulerError(f"no Scheduler job {job_id!r}; `dynosim scheduler` lists their IDs")

    def add(self, command: str, every: str, at: str | None, size: str | None = None) -> Job:
        if not command.strip():
            raise SchedulerError('the job\'s command is empty; give the command to run, like "python task.py"')
        problem = command_problem(command)
        if problem:
            raise SchedulerError(f"the job's command {problem}")
        minutes = parse_at(every, at)
        size = dyno_size(size, "--size").name if size is not None else None
        data = self._load()
        next_id = data.get("next_id", 1)
        job_id = next_id if isinstance(next_id, int) else 1
        stored = [
            *self._stored(),
            {"id": job_id, "command": command, "every": EVERY[every], "at": minutes, "size": size},
        ]
        self._save({"next_id": job_id + 1, "jobs": stored})
        return scheduler_job(str(job_id), command, EVERY[every], minutes, size)

    def remove(self, job_id: str) -> None:
        if job_id.startswith("cron."):
            raise SchedulerError(f"job {job_id} comes from app.json's cron list; remove it there")
        stored = self._stored()
        kept = [job for job in stored if str(job["id"]) != job_id]
        if len(kept) == len(stored):
            raise SchedulerError(f"no Scheduler job {job_id!r}; `dynosim scheduler` lists their IDs")
        data = self._load()
        self._save({"next_id": data.get("next_id", 1), "jobs": kept})

    def _save(self, data: dict[str, object]) -> None:
        write_private(self.path, json.dumps(data, indent=2) + "\n")


class SchedulerClock:
    """The time jobs are scheduled by: the wall clock, or one `speed` times as fast from now on
    (`run --clock-speed 3600`: an hour a second), so hourly and daily jobs can be watched firing."""

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = speed
        self._start = datetime.now(UTC)
        self._started = time.monotonic()
        # look for due jobs often enough to fire each within a few simulated seconds, at most once a second
        self.poll = max(0.05, min(1.0, 30 / speed))

    def now(self) -> datetime:
        return self._start + timedelta(seconds=(time.monotonic() - self._started) * self.speed)

    def real_seconds(self, span: timedelta | None) -> float | None:
        return None if span is None else span.total_seconds() / self.speed


def due(jobs: Sequence[Job], since: datetime, until: datetime) -> list[tuple[Job, datetime]]:
    """Each job's last run time in (since, until], once: runs missed before `since` are not replayed,
    and a clock that jumped over several runs fires a job once, as Heroku's best effort does."""
    fired = []
    for job in jobs:
        when = job.next_run(since)
        if when <= until:
            while (later := job.next_run(when)) <= until:
                when = later
            fired.append((job, when))
    return fired
