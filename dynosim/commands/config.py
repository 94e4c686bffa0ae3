"""`dynosim config`, `config:get`, `config:set`, `config:unset`: the app's config vars."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from ..clikit import app_dir_option, app_state, operate, print_json, print_table
from ..clikit import assignments as parse_assignments
from ..errors import DynosimError


def _values(app_dir: Path) -> dict[str, str]:
    from .. import api

    app_state(app_dir)
    return api.config(app_dir)


@click.command("config")
@app_dir_option
@click.option("-s", "--shell", is_flag=True, help="KEY=value lines, for a shell or a .env file.")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@operate
def config(app_dir: Path, shell: bool, as_json: bool) -> None:
    """The config vars, the add-ons' among them (of the running release, or as stored when no run is active)."""
    values = _values(app_dir)
    if as_json:
        print_json(values)
    elif shell:
        for key, value in sorted(values.items()):
            click.echo(f"{key}={shlex.quote(value)}")
    else:
        from ..manifest import load_manifest

        click.echo(f"=== {load_manifest(app_dir.resolve()).name or app_dir.resolve().name} Config Vars")
        print_table(None, [(f"{key}:", value) for key, value in sorted(values.items())], gap=1)


@click.command("config:get")
@app_dir_option
@click.argument("name")
@operate
def config_get(app_dir: Path, name: str) -> None:
    """One config var's value."""
    values = _values(app_dir)
    if name not in values:
        raise DynosimError(f"config var {name} is not set")
    click.echo(values[name])


@click.command("config:set")
@app_dir_option
@click.argument("assignments", nargs=-1, required=True)
@operate
def config_set(app_dir: Path, assignments: tuple[str, ...]) -> None:
    """Set config vars (KEY=VALUE…): a new release that restarts every dyno."""
    _change(app_dir, dict(parse_assignments(assignments, "config:set")))


@click.command("config:unset")
@app_dir_option
@click.argument("names", nargs=-1, required=True)
@operate
def config_unset(app_dir: Path, names: tuple[str, ...]) -> None:
    """Unset config vars set with config:set: a new release that restarts every dyno."""
    _change(app_dir, {name: None for name in names})


def _change(app_dir: Path, changes: dict[str, str | None]) -> None:
    from .. import api

    app_state(app_dir)
    names = ", ".join(changes)
    verb = "Unsetting" if all(value is None for value in changes.values()) else "Setting"
    applied = api.change_config(app_dir, changes)
    if applied.live:
        click.echo(f"{verb} {names} and restarting... done, v{applied.value}")
    else:
        click.echo(f"{verb} {names}... done (no run is active: the next `dynosim run` uses it)")
