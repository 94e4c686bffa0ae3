"""`dynosim snapshots`, `snapshot:save NAME`, `snapshot:load NAME`, `snapshot:delete NAME`: the running
app's whole state (add-ons' data, config vars, releases) saved and loaded together."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..clikit import app_dir_option, app_state, json_option, operate, print_json, print_table
from ..sizes import byte_size


@click.command("snapshots")
@app_dir_option
@json_option
@operate
def snapshots(app_dir: Path, as_json: bool) -> None:
    """The app's snapshots: name, when, add-ons, size."""
    from .. import api

    app_state(app_dir)
    rows = api.snapshots(app_dir)
    if as_json:
        print_json(rows)
    elif not rows:
        click.echo("No snapshots. Save one with `dynosim snapshot:save NAME` while the app runs.")
    else:
        print_table(
            ("Name", "Created", "Add-ons", "Releases", "Size"),
            [
                (
                    row["name"],
                    time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(row["created_at"])),
                    ", ".join(a["name"] for a in row["addons"]) or "-",
                    str(row["releases"]),
                    byte_size(row["size"]),
                )
                for row in rows
            ],
        )


@click.command("snapshot:save")
@app_dir_option
@click.argument("name")
@operate
def snapshot_save(app_dir: Path, name: str) -> None:
    """Save the running app's add-ons' data, config vars and releases as snapshot NAME."""
    from .. import api

    app_state(app_dir)
    click.echo(f"Saving snapshot {name}... ", nl=False)
    saved = api.snapshot_save(app_dir, name)
    click.echo(f"done, {byte_size(saved['size'])}")


@click.command("snapshot:load")
@app_dir_option
@click.argument("name")
@operate
def snapshot_load(app_dir: Path, name: str) -> None:
    """Load snapshot NAME into the running app (its add-ons' data, config vars and releases)."""
    from .. import api

    app_state(app_dir)
    click.echo(f"Loading snapshot {name}...")
    for what, done in api.snapshot_load(app_dir, name).items():
        click.echo(f"  {what}: {done}")


@click.command("snapshot:delete")
@app_dir_option
@click.argument("name")
@operate
def snapshot_delete(app_dir: Path, name: str) -> None:
    """Delete snapshot NAME (its files, and what it keeps on the add-ons' servers)."""
    from .. import api

    app_state(app_dir)
    api.snapshot_delete(app_dir, name)
    click.echo(f"Deleted snapshot {name}")
