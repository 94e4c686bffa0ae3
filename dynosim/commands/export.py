"""`dynosim export FORMAT [PATH]`: the app's current release as files another engine runs (dynosim/export/)."""

from __future__ import annotations

from pathlib import Path

import click

from ..clikit import app_dir_option, operate


@click.command("export")
@click.argument("fmt", metavar="FORMAT")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@app_dir_option
@click.option("--image", default=None, metavar="TAG", help="The image to run (default: dynosim/<app>:v<release>).")
@click.option(
    "--external-addons",
    is_flag=True,
    help="Run no add-on: their config vars are left for you to set (the output lists them).",
)
@operate
def export(fmt: str, path: Path | None, app_dir: Path, image: str | None, external_addons: bool) -> None:
    """Write the app as FORMAT (compose, swarm, kubernetes, systemd, supervisord) to PATH: a folder for
    kubernetes and systemd, one file for the others (default: docker-compose.yml, stack.yml, k8s/, systemd/,
    supervisord.conf)."""
    from ..export import DEFAULT_PATHS, HOST_FORMATS, WRITERS
    from ..export.model import ExportError, app_model

    if fmt not in WRITERS:
        raise ExportError(f'export: unknown format "{fmt}"; formats: {", ".join(WRITERS)}')

    target = path if path is not None else Path(DEFAULT_PATHS[fmt])
    # nothing runs add-ons on a bare host: their vars are the user's to set, as external ones are
    model = app_model(app_dir, image=image, external_addons=external_addons or fmt in HOST_FORMATS)
    written = WRITERS[fmt](model, target)
    release = f"v{model.release_version}" if model.release_version is not None else "no release yet"
    click.echo(f"Exported {model.app} ({release}, image {model.image}) as {fmt}: {len(written)} file(s) in {target}")
    for written_path in written:
        click.echo(f"  {written_path}")
    if model.required_vars:
        click.echo(f"Set before it starts (the add-ons run elsewhere): {', '.join(model.required_vars)}")
