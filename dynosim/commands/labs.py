"""`dynosim labs`, `labs:enable`, `labs:disable`: the app's Heroku Labs features."""

from __future__ import annotations

from pathlib import Path

import click

from ..clikit import app_dir_option, app_state, json_option, operate, print_json


def _name(app_dir: Path) -> str:
    from ..manifest import load_manifest

    return load_manifest(app_dir.resolve()).name or app_dir.resolve().name


@click.command("labs")
@app_dir_option
@json_option
@operate
def labs(app_dir: Path, as_json: bool) -> None:
    """The app's Labs features, [+] when enabled, as `heroku labs` lists them."""
    from ..labs import FEATURES, Labs

    enabled = Labs(app_state(app_dir)).enabled()
    if as_json:
        print_json([{"name": n, "description": d, "enabled": n in enabled} for n, d in sorted(FEATURES.items())])
        return
    click.echo(f"=== App Features ⬢ {_name(app_dir)}")
    for name, description in sorted(FEATURES.items()):
        click.echo(f"[{'+' if name in enabled else ' '}] {name}  {description}")


@click.command("labs:enable")
@click.argument("feature")
@app_dir_option
@operate
def labs_enable(feature: str, app_dir: Path) -> None:
    """Enable FEATURE (runtime-dyno-metadata: from the next release, every dyno gets the HEROKU_* metadata vars)."""
    from ..labs import Labs

    Labs(app_state(app_dir)).enable(feature)
    click.echo(f"Enabling {feature} for ⬢ {_name(app_dir)}... done")
    click.echo("WARNING: This feature is experimental and may change or be removed without notice.")
    click.echo("It applies from the next release (a deploy, a config:set, or a `dynosim run` of a new commit).")


@click.command("labs:disable")
@click.argument("feature")
@app_dir_option
@operate
def labs_disable(feature: str, app_dir: Path) -> None:
    """Disable FEATURE, from the next release."""
    from ..labs import Labs

    Labs(app_state(app_dir)).disable(feature)
    click.echo(f"Disabling {feature} for ⬢ {_name(app_dir)}... done")
