"""The `dynosim doctor` command: parse, diagnose, print. No logic here."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..clikit import app_dir_option, json_option, operate, print_json
from . import DEFAULT_BOOT_TIMEOUT, ERROR, diagnose, render


@click.command()
@app_dir_option
@json_option
@click.option("--no-run", is_flag=True, help="Only read the files; do not run web.1 to see where it listens.")
@click.option(
    "--boot-timeout",
    type=click.FloatRange(min=0.5),
    default=DEFAULT_BOOT_TIMEOUT,
    show_default=True,
    help="Seconds web.1 gets to bind $PORT in the trial run.",
)
@operate
def doctor(app_dir: Path, as_json: bool, no_run: bool, boot_timeout: float) -> None:
    """Check the app before you push it: what would break on Heroku, and the fix for each."""
    findings = diagnose(app_dir, run=not no_run, boot_timeout=boot_timeout, say=lambda line: click.echo(line, err=True))
    if as_json:
        print_json([finding.as_json() for finding in findings])
    else:
        click.echo(render(findings))
    sys.exit(1 if any(finding.severity == ERROR for finding in findings) else 0)
