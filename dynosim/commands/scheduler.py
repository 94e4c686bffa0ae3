"""`dynosim scheduler`, `scheduler:add`, `scheduler:remove`, `scheduler:run`: Heroku Scheduler's jobs."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from ..clikit import app_dir_option, app_state, json_option, operate, print_json, print_table


@click.command("scheduler")
@app_dir_option
@json_option
@operate
def scheduler(app_dir: Path, as_json: bool) -> None:
    """The app's Scheduler jobs (scheduler:add and app.json's cron), with each one's next run (UTC)."""
    from ..control import NoRunError, request
    from ..manifest import load_manifest
    from ..scheduler import SchedulerJobs

    state = app_state(app_dir)
    jobs = SchedulerJobs(state).jobs(load_manifest(app_dir.resolve()))
    try:  # a run's clock may be sped up (--clock-speed): its next runs are by that clock
        now = datetime.fromisoformat(request(state, "scheduler:now"))
    except NoRunError:
        now = datetime.now(UTC)
    rows = [
        (job.id, job.command, job.frequency, f"{job.next_run(now):%Y-%m-%d %H:%M} UTC", job.size or "formation's")
        for job in jobs
    ]
    if as_json:
        keys = ("id", "command", "frequency", "next_run", "size")
        print_json([dict(zip(keys, row, strict=True)) for row in rows])
    elif not rows:
        click.echo('No Scheduler jobs. Add one: dynosim scheduler:add "python task.py" --every 1h')
    else:
        print_table(["ID", "Command", "Frequency", "Next run", "Dyno size"], rows)


@click.command("scheduler:add")
@click.argument("command")
@click.option("--every", required=True, metavar="10m|1h|1d", help="How often: Heroku Scheduler's three frequencies.")
@click.option("--at", "at", help="Hourly: the minute, like :30 (in tens). Daily: the UTC time, like 09:30.")
@click.option("--size", help="The job's dyno size, like standard-2x (default: the formation's).")
@app_dir_option
@operate
def scheduler_add(command: str, every: str, at: str | None, size: str | None, app_dir: Path) -> None:
    """Add a job that runs COMMAND in a one-off scheduler dyno every 10m, 1h or 1d."""
    from ..scheduler import SchedulerJobs

    job = SchedulerJobs(app_state(app_dir)).add(command, every, at, size)
    click.echo(f"Added job {job.id}: {job.command} ({job.frequency})")


@click.command("scheduler:remove")
@click.argument("job_id", metavar="ID")
@app_dir_option
@operate
def scheduler_remove(job_id: str, app_dir: Path) -> None:
    """Remove the job ID (as `dynosim scheduler` lists it)."""
    from ..scheduler import SchedulerJobs

    SchedulerJobs(app_state(app_dir)).remove(job_id)
    click.echo(f"Removed job {job_id}")


@click.command("scheduler:run")
@click.argument("job_id", metavar="ID")
@app_dir_option
@operate
def scheduler_run(job_id: str, app_dir: Path) -> None:
    """Run the job ID now, in a scheduler.NNNN dyno: the running app's (its output is in `dynosim logs`), or,
    with no run active, a one-off from the current release attached to this terminal, exiting with its status."""
    from ..api import scheduler_run as run_job
    from ..control import NoRunError
    from ..formation import DEFAULT_SIZE
    from ..manifest import load_manifest
    from ..oneoff import OneOffOptions, run_oneoff
    from ..scheduler import SchedulerJobs

    state = app_state(app_dir)  # a folder that is not an app says so
    try:
        name = run_job(app_dir, job_id)
    except NoRunError:  # Heroku runs a job whether or not dynos are up: as `dynosim exec` runs a one-off
        job = SchedulerJobs(state).get(load_manifest(app_dir.resolve()), job_id)
        options = OneOffOptions(size=job.size or DEFAULT_SIZE, process_type="scheduler")
        sys.exit(run_oneoff(app_dir, [job.command], options).status)
    if name is None:
        click.echo(f"Job {job_id} is still running; its concurrency_policy (forbid) skips this run")
    else:
        click.echo(f"Running job {job_id} on {name}")
