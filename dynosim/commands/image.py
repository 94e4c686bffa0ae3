"""`dynosim image`: the app's current release as an OCI image on this machine's Docker engine."""

from __future__ import annotations

from pathlib import Path

import click

from ..clikit import app_dir_option, app_state, json_option, operate, print_json


@click.command("image")
@app_dir_option
@click.option(
    "--base",
    metavar="IMAGE",
    default=None,
    help="The Python image to build on (default: $DYNOSIM_IMAGE_BASE, else python:<slug's major.minor>-slim).",
)
@json_option
@operate
def image(app_dir: Path, base: str | None, as_json: bool) -> None:
    """Build the current release (HEAD's slug before any release) into an image tagged
    dynosim/<app>:v<release>; an unchanged release builds nothing."""
    from ..image import build_image

    app_state(app_dir)
    built = build_image(app_dir, base=base, say=click.echo if not as_json else lambda line: click.echo(line, err=True))
    if as_json:
        print_json({"id": built.id, "tag": built.tag, "slug": built.slug_id, "built": built.built})
        return
    click.echo(f"       {built.tag} {built.id}")
