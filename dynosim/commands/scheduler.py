"""`dynosim scheduler`, `scheduler:add`, `scheduler:remove`, `scheduler:run`: Heroku Scheduler's jobs."""

from __future__ import annotations

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
    rows = [(job.id, job.command, job.frequency, f"{job.next_run(now):%Y-%m-%d %H:%M} UTC") for job in jobs]
    if as_json:
        print_json([dict(zip(("id", "command", "frequency", "next_run"), row, strict=True)) for row in rows])
    elif not rows:
        click.echo('No Scheduler jobs. Add one: dynosim scheduler:add "python task.py" --every 1h')
    else:
        print_table(["ID", "Command", "Frequency", "Next run"], rows)


@click.command("scheduler:add")
@click.argument("command")
@click.option("--every", required=True, metavar="10m|1h|1d", help="How often: Heroku Scheduler's three frequencies.")
@click.option("--at", "at", help="Hourly: the minute, like :30 (in tens). Daily: the UTC time, like 09:30.")
@app_dir_option
@operate
def scheduler_add(command: str, every: str, at: str | None, app_dir: Path) -> None:
    """Add a job that runs COMMAND in a one-off scheduler dyno every 10m, 1h or 1d."""
    from ..scheduler import SchedulerJobs

    job = SchedulerJobs(app_state(app_dir)).add(command, every, at)
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
    """Run the job ID now, in a scheduler.NNNN dyno of the running app (its output is in `dynosim logs`)."""
    from ..api import scheduler_run as run_job

    app_state(app_dir)  # a folder that is not an app says so, rather than "no run is active"
    name = run_job(app_dir, job_id)
    if name is None:
        click.echo(f"Job {job_id} is still running; its concurrency_policy (forbid) skips this run")
    else:
        click.echo(f"Running job {job_id} on {name}")
