"""`dynosim dashboard`: the running app's dashboard in the browser, through a new one-time link (the
one `dynosim run` printed works once)."""

from __future__ import annotations

from pathlib import Path

import click

from ..clikit import app_dir_option, app_state, operate


@click.command("dashboard")
@app_dir_option
@click.option("--url", "url_only", is_flag=True, help="Print the link instead of opening a browser.")
@operate
def dashboard(app_dir: Path, url_only: bool) -> None:
    """Open the running app's dashboard: formation, metrics, logs, ephemeral ledger, releases."""
    import webbrowser

    from .. import api

    app_state(app_dir)
    url = api.dashboard_url(app_dir)
    if url_only or not webbrowser.open(url):  # no browser here (a server, CI): the link to open elsewhere
        click.echo(url)
    else:
        click.echo("Opening the dashboard in your browser...")
