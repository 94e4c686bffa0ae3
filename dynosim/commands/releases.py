"""`dynosim releases` and `dynosim deploy`: the release history, and a new release of HEAD's slug."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..clikit import app_dir_option, app_state, json_option, operate, print_json, print_table

# Heroku's words for a release whose release phase has not succeeded
MARKS = {"pending": " release command executing", "failed": " release command failed"}


@click.command("releases")
@app_dir_option
@click.option("-n", "--num", type=click.IntRange(min=1), default=None, help="Only the newest NUM releases.")
@json_option
@operate
def releases(app_dir: Path, num: int | None, as_json: bool) -> None:
    """The release history, newest first, as `heroku releases` shows it."""
    from ..manifest import load_manifest
    from ..releases import ReleaseHistory

    rows = ReleaseHistory(app_state(app_dir)).listing()
    current = next((row for row in rows if row["current"]), None)
    rows = rows[:num]
    if as_json:
        print_json(rows)
        return
    name = load_manifest(app_dir.resolve()).name or app_dir.resolve().name
    if not rows:
        click.echo(f"{name} has no releases.")
        return
    click.echo(f"=== {name} Releases" + (f" - Current: v{current['version']}" if current else ""))
    print_table(
        None,
        [
            (
                f"v{row['version']}",
                f"{row['description']}{MARKS.get(str(row['status']), '')}",
                str(row["user"]),
                time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(float(row["created_at"]))),  # type: ignore[arg-type]
            )
            for row in rows
        ],
    )


@click.command("deploy")
@app_dir_option
@operate
def deploy(app_dir: Path) -> None:
    """Build HEAD and roll the running app onto it, as `git push heroku main` would."""
    from .. import api

    app_state(app_dir)
    version = api.deploy(app_dir, say=click.echo)
    click.echo(f"       Released v{version}")
