"""`dynosim maintenance`, `maintenance:on`, `maintenance:off`: the router's H80 page for every request."""

from __future__ import annotations

from pathlib import Path

import click

from ..clikit import app_dir_option, app_state, operate


@click.command("maintenance")
@app_dir_option
@operate
def maintenance(app_dir: Path) -> None:
    """Whether maintenance mode is on (the router answers H80)."""
    from ..control import request

    click.echo("on" if request(app_state(app_dir), "maintenance") else "off")


@click.command("maintenance:on")
@app_dir_option
@operate
def maintenance_on(app_dir: Path) -> None:
    """Serve Heroku's maintenance page (H80) to every request."""
    from ..control import request

    request(app_state(app_dir), "maintenance", on=True)
    click.echo("Enabling maintenance mode... done")


@click.command("maintenance:off")
@app_dir_option
@operate
def maintenance_off(app_dir: Path) -> None:
    """Route requests to the web dynos again."""
    from ..control import request

    request(app_state(app_dir), "maintenance", on=False)
    click.echo("Disabling maintenance mode... done")
