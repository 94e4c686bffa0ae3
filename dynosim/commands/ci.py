"""`dynosim ci`: Heroku CI's test run on this machine (dynosim/ci.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..clikit import app_dir_option, operate


@click.command("ci")
@app_dir_option
@click.option(
    "--environment",
    type=click.Choice(["test", "review"]),
    default="test",
    help="Which of app.json's environments applies (Heroku CI's is test).",
)
@click.option("--parallel", type=click.IntRange(min=1), default=None, help="Test dynos (CI_NODE_TOTAL).")
@click.option(
    "--sandbox", type=click.Choice(["auto", "namespaces", "copy"]), default="auto", help="How the dynos are contained."
)
@click.option(
    "--addons",
    "addons_backend",
    type=click.Choice(["native", "docker", "auto"]),
    default="native",
    help="Where the run's throwaway add-ons run.",
)
@operate
def ci(app_dir: Path, environment: str, parallel: int | None, sandbox: str, addons_backend: str) -> None:
    """Run app.json's scripts.test as Heroku CI does: fresh add-ons, CI's variables, its exit status.

    scripts.test-setup runs first; the test dynos' output is streamed; nothing of the run is kept."""
    from ..ci import CiOptions, run_ci

    options = CiOptions(environment=environment, parallel=parallel, sandbox=sandbox, addons_backend=addons_backend)
    sys.exit(run_ci(app_dir, options))
