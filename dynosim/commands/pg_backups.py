"""`dynosim pg:backups` and its verbs (capture, info, restore, download, url, delete, schedule,
schedules, unschedule), with Heroku's names, arguments and output. Parse, call addons/backups.py, print.

Capture and restore need the server: the running app's, or, with no `dynosim run` active, the add-on
started for this command only (`manage.Session`, as pg:psql does). The others read the app's list.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from dynosim.addons.commands import backend_option
from dynosim.clikit import app_dir_option, app_state, confirm_destructive, operate, print_table

confirm_option = click.option(
    "-c", "--confirm", metavar="APP", default=None, help="The app's name: skips the question."
)


@click.command("pg:backups")
@app_dir_option
@operate
def backups_list(app_dir: Path) -> None:
    """The app's backups, restores and copies, newest first."""
    from dynosim.addons import backups

    _, state = _app(app_dir)
    every = backups.transfers(state)
    made = [t for t in every if t.is_backup]
    restores = [t for t in every if not t.is_backup][:10]
    _header("Backups")
    if not made:
        click.echo(f"No backups. {backups.CAPTURE_HINT}")
    else:
        rows = [(t.id, backups.stamp(t.created_at), backups.status(t), backups.filesize(t.processed_bytes),
                 t.from_name or "UNKNOWN") for t in made]  # fmt: skip
        print_table(["ID", "Created at", "Status", "Size", "Database"], rows)
    click.echo()
    _header("Restores")
    if not restores:
        click.echo("No restores found. Use dynosim pg:backups:restore to restore a backup")
    else:
        rows = [(t.id, backups.stamp(t.created_at), backups.status(t), backups.filesize(t.processed_bytes),
                 t.to_name or "UNKNOWN") for t in restores]  # fmt: skip
        print_table(["ID", "Started at", "Status", "Size", "Database"], rows)
    click.echo()
    _header("Copies")
    click.echo("No copies found. Use heroku pg:copy to copy a database to another (dynosim has no pg:copy)")
    click.echo()


@click.command("pg:backups:capture")
@app_dir_option
@backend_option
@click.argument("database", required=False)
@operate
def backups_capture(app_dir: Path, addons_backend: str, database: str | None) -> None:
    """Capture a new backup of DATABASE (default: DATABASE_URL's) with pg_dump -Fc."""
    from dynosim.addons import backups
    from dynosim.addons.manage import Session

    app, state = _app(app_dir)
    declared = _pick(app, state, database)
    with Session(state, declared, _run_vars(app), addons_backend, _say) as session:
        record = session.record()
        with _action(f"Starting backup of {record['name']}"):
            transfer = backups.start(state, record, declared.entry.as_name)
        click.echo()
        click.echo("Use dynosim pg:backups:info to check progress.")
        click.echo()
        with _action(f"Backing up {transfer.from_name} to {transfer.id}"):
            backups.capture(state, record, transfer)


@click.command("pg:backups:info")
@app_dir_option
@click.argument("backup_id", metavar="[ID]", required=False)
@operate
def backups_info(app_dir: Path, backup_id: str | None) -> None:
    """A backup's database, times, status, type and sizes (default: the latest backup)."""
    from dynosim.addons import backups

    app, state = _app(app_dir)
    if backup_id is None:
        made = [t for t in backups.transfers(state) if t.is_backup]
        if not made:
            raise _error(f"No backups. {backups.CAPTURE_HINT}")
        transfer = made[0]
    else:
        transfer = backups.find(state, app.name, backup_id)
    state_word = "Completed" if transfer.succeeded else "Failed" if transfer.finished_at is not None else "Running"
    size = backups.filesize(transfer.processed_bytes)
    if transfer.finished_at is not None and transfer.is_backup:
        size += backups.compression(transfer.processed_bytes, transfer.source_bytes)
    _header(f"Backup {transfer.id}")
    fields = [
        ("Database", transfer.from_name),
        ("Started at", backups.stamp(transfer.created_at)),
        ("Finished at", backups.stamp(transfer.finished_at)),
        ("Status", state_word),
        ("Type", "Scheduled" if transfer.scheduled else "Manual"),
        ("Original DB Size", backups.filesize(transfer.source_bytes)),
        ("Backup Size", size),
    ]
    width = max(len(key) for key, _ in fields) + 1
    for key, value in fields:
        click.echo(f"{key + ':':<{width}} {value}".rstrip())
    click.echo()
    _header("Backup Logs")
    for when, message in transfer.logs:
        click.echo(f"{backups.stamp(when)} {message}")
    if transfer.error and not transfer.logs:
        click.echo(f"{backups.stamp(transfer.finished_at)} {transfer.error}")
    click.echo()


@click.command("pg:backups:restore")
@app_dir_option
@backend_option
@confirm_option
@click.argument("backup", metavar="[BACKUP|FILE|URL]", required=False)
@click.argument("database", required=False)
@operate
def backups_restore(app_dir: Path, addons_backend: str, confirm: str | None, backup: str | None,
                    database: str | None) -> None:  # fmt: skip
    """Restore a backup (default: the latest) to DATABASE (default: DATABASE_URL's), replacing its data.

    BACKUP is a backup id (b001, a002), an http(s):// URL of a dump, or, dynosim's addition, a dump FILE
    on this machine (a Heroku `latest.dump`). It is restored as Heroku's docs restore a Heroku dump
    (pg_restore --no-owner --no-acl, as the app's role) into a new database, which replaces the app's
    only once it is whole: a failed restore leaves the app's data as it was."""
    from dynosim.addons import backups
    from dynosim.addons.manage import Session

    app, state = _app(app_dir)
    declared = _pick(app, state, database)
    source = backups.source(state, app.name, backup)
    confirm_destructive(app.name, confirm)
    with Session(state, declared, _run_vars(app), addons_backend, _say) as session:
        record = session.record()
        click.echo(f"Starting restore of {source.label} to {record['name']}... done")
        click.echo()
        with _action("Restoring"):
            backups.restore(state, record, declared.entry.as_name, source)


@click.command("pg:backups:download")
@app_dir_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Location to download to. Defaults to latest.dump (then latest.dump.1…).")  # fmt: skip
@click.argument("backup_id", metavar="[ID]", required=False)
@operate
def backups_download(app_dir: Path, output: Path | None, backup_id: str | None) -> None:
    """Download a backup (default: the latest) as a pg_dump custom-format file."""
    from dynosim.addons import backups

    app, state = _app(app_dir)
    target = output or backups.default_output()
    with _action(f"Getting backup from {app.name}", done=False):
        transfer, dump = backups.completed(state, app.name, backup_id)
        click.echo(f"done, #{transfer.num}")
    backups.download(dump, target)


@click.command("pg:backups:url")
@app_dir_option
@click.argument("backup_id", metavar="[ID]", required=False)
@operate
def backups_url(app_dir: Path, backup_id: str | None) -> None:
    """A URL of a backup's file (default: the latest): file:// on this machine."""
    from dynosim.addons import backups

    app, state = _app(app_dir)
    _, dump = backups.completed(state, app.name, backup_id)
    click.echo(dump.resolve().as_uri())


@click.command("pg:backups:delete")
@app_dir_option
@confirm_option
@click.argument("backup_id", metavar="ID")
@operate
def backups_delete(app_dir: Path, confirm: str | None, backup_id: str) -> None:
    """Delete a backup and its file."""
    from dynosim.addons import backups

    app, state = _app(app_dir)
    transfer = backups.find(state, app.name, backup_id)
    confirm_destructive(app.name, confirm)
    with _action(f"Deleting backup {transfer.id} on {app.name}"):
        backups.delete(state, app.name, transfer.id)


@click.command("pg:backups:schedule")
@app_dir_option
@click.option("--at", required=True, metavar="'HH:00 [TZ]'",
              help="At a specific (24h) hour in the given timezone. Defaults to UTC. --at '[HOUR]:00 [TIMEZONE]'")  # fmt: skip
@click.argument("database", required=False)
@operate
def backups_schedule(app_dir: Path, at: str, database: str | None) -> None:
    """Schedule daily backups of DATABASE; a running `dynosim run` takes them at that hour on its clock."""
    from dynosim.addons import app_requests, backups, provision
    from dynosim.addons.manage import find

    app, state = _app(app_dir)
    hour, zone = backups.parse_at(at)
    declared = _pick(app, state, database)
    provision(state, app_requests(app.manifest.addons, state))  # app.json's too: the schedule names it
    row = find(state, _manifest(app), declared.entry.as_name, "postgres")
    with _action(f"Scheduling automatic daily backups of {row.name} at {hour}:00 {zone}"):
        backups.schedule(state, declared.entry.as_name, row.name, hour, zone)


@click.command("pg:backups:schedules")
@app_dir_option
@operate
def backups_schedules(app_dir: Path) -> None:
    """The app's backup schedules."""
    from dynosim.addons import backups

    app, state = _app(app_dir)
    found = backups.schedules(state)
    if not found:
        click.echo(f" ▸    No backup schedules found on {app.name}", err=True)
        click.echo(" ▸    Use dynosim pg:backups:schedule to set one up", err=True)
        return
    _header("Backup Schedules")
    for schedule in found:
        click.echo(f"{schedule.name}: daily at {schedule.hour}:00 {schedule.timezone}")


@click.command("pg:backups:unschedule")
@app_dir_option
@click.argument("database", required=False)
@operate
def backups_unschedule(app_dir: Path, database: str | None) -> None:
    """Stop daily backups of DATABASE (the only schedule when not given)."""
    from dynosim.addons import backups

    app, state = _app(app_dir)
    chosen = backups.schedule_named(state, app.name, database)
    with _action(f"Unscheduling {chosen.name} daily backups"):
        backups.unschedule(state, chosen)


# --- helpers ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _action(text: str, *, done: bool = True) -> Iterator[None]:
    """Heroku's `Doing it... done` line: `!` instead of done when it fails (the error follows)."""
    click.echo(f"{text}... ", nl=False)
    sys.stdout.flush()
    try:
        yield
    except BaseException:
        click.echo("!")
        raise
    if done:
        click.echo("done")


def _header(title: str) -> None:
    click.echo(f"=== {title}")
    click.echo()


def _error(message: str) -> Exception:
    from dynosim.errors import AddonError

    return AddonError(message)


def _app(app_dir: Path) -> tuple[Any, Path]:
    from dynosim.app import load_app

    return load_app(app_dir), app_state(app_dir)


def _manifest(app: Any) -> list[Any]:
    from dynosim.addons import manifest_requests

    return manifest_requests(app.manifest.addons)


def _pick(app: Any, state: Path, database: str | None) -> Any:
    from dynosim.addons.manage import pick

    return pick(state, _manifest(app), "postgres", database, "heroku-postgresql")


def _run_vars(app: Any) -> dict[str, str] | None:
    """The running release's config vars, when a run is active."""
    from dynosim.runlock import RunLock

    active: dict[str, Any] | None = RunLock(app).active()
    if active is not None and isinstance(active.get("config_vars"), dict):
        return dict(active["config_vars"])
    return None


def _say(line: str) -> None:
    click.echo(line, err=True)
