"""The `dynosim` command: parse arguments, call the API, print. No logic here."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from . import __version__
from .errors import DynosimError


def _fail(exc: DynosimError) -> None:
    click.echo(f"dynosim: error: {exc}", err=True)
    sys.exit(exc.exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dynosim")
def main() -> None:
    """Run a Procfile app on this machine the way Heroku runs it."""


@main.command()
@click.option("-C", "--app-dir", type=click.Path(file_okay=False, path_type=Path), default=".", help="The app's folder (default: here).")
@click.option("-f", "--formation", default="", metavar="TYPE=N,…", help="Dynos per process type, e.g. web=2,worker=1 (default: one of each).")
@click.option("-p", "--port", type=click.IntRange(1, 65535), default=None, help="Public port (default: $PORT, else 5000).")
@click.option("--size", default=None, help="Dyno size for every type (standard-1x, standard-2x, performance-m…).")
@click.option("--dirty", is_flag=True, help="Deploy the working tree, uncommitted files included.")
@click.option("--sandbox", type=click.Choice(["auto", "namespaces", "copy"]), default="auto", help="How dynos are contained.")
@click.option("--boot-timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True, help="Seconds a web dyno has to bind $PORT (R10).")
@click.option("--stop-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True, help="Seconds between SIGTERM and SIGKILL (R12).")
@click.option("--crash-backoff-scale", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Multiply Heroku's crash restart delays (10 min, 20, 40…) by this.")
def run(app_dir: Path, formation: str, port: int | None, size: str | None, dirty: bool, sandbox: str,
        boot_timeout: float, stop_timeout: float, crash_backoff_scale: float) -> None:
    """Build the app and run its Procfile as Heroku dynos."""
    from .api import DEFAULT_PORT, Run, RunOptions
    from .formation import parse_formation
    from .runtime.dyno import Timeouts
    from .runtime.manager import CrashPolicy

    try:
        if port is None:
            port = _env_port() or DEFAULT_PORT
        options = RunOptions(
            formation=parse_formation(formation),
            port=port,
            size=size,
            dirty=dirty,
            sandbox=sandbox,
            timeouts=Timeouts(boot=boot_timeout, stop=stop_timeout),
            crash_policy=CrashPolicy().scaled(crash_backoff_scale),
        )
        sys.exit(Run(app_dir, options).run())
    except DynosimError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        click.echo("dynosim: interrupted", err=True)
        sys.exit(130)


def _env_port() -> int | None:
    value = os.environ.get("PORT", "")
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise DynosimError(f"PORT={value!r} in the environment is not a port number; unset it or pass --port")
    return int(value)
