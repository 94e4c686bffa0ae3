"""`dynosim releases` and `dynosim deploy`: the release history, and a new release of HEAD's slug."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import click

from ..clikit import app_dir_option, app_state, json_option, operate, print_json, print_table

# Heroku's words for a release whose release phase has not succeeded
MARKS = {"pending": " release command executing", "failed": " release command failed"}


@click.command("releases")
@app_dir_option
@click.option("-n", "--num", type=click.IntRange(min=1), default=None, help="Only the newest NUM releases.")
@json_option
@operate
def releases(app_dir: Path, num: int | None, as_json: bool) -> None:
    """The release history, newest first, as `heroku releases` shows it."""
    from ..manifest import load_manifest
    from ..releases import ReleaseHistory

    rows = ReleaseHistory(app_state(app_dir)).listing()
    current = next((row for row in rows if row["current"]), None)
    rows = rows[:num]
    if as_json:
        print_json(rows)
        return
    name = load_manifest(app_dir.resolve()).name or app_dir.resolve().name
    if not rows:
        click.echo(f"{name} has no releases.")
        return
    click.echo(f"=== {name} Releases" + (f" - Current: v{current['version']}" if current else ""))
    print_table(
        None,
        [
            (
                f"v{row['version']}",
                f"{row['description']}{MARKS.get(str(row['status']), '')}",
                str(row["user"]),
                time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(float(row["created_at"]))),  # type: ignore[arg-type]
            )
            for row in rows
        ],
    )


@click.command("deploy")
@app_dir_option
@click.option("--to", "target", type=click.Choice(["swarm"]), help="Deploy on the Docker engine's Swarm mode instead.")
@click.option("--init", is_flag=True, help="With --to swarm: `docker swarm init` a single node when it is in no swarm.")
@click.option("--external-addons", is_flag=True, help="With --to swarm: no add-on services; set their vars yourself.")
@operate
def deploy(app_dir: Path, target: str | None, init: bool, external_addons: bool) -> None:
    """Build HEAD and roll the running app onto it, as `git push heroku main` would (or the swarm, with --to swarm)."""
    from .. import api

    app_state(app_dir)
    if target == "swarm":
        from ..swarm import deploy_swarm

        deployed = deploy_swarm(app_dir, init=init, external_addons=external_addons, say=click.echo)
        first = (
            f" (first answer {deployed.first_response:.1f}s after the deploy began)" if deployed.first_response else ""
        )
        click.echo(
            f"       Released v{deployed.version} on the swarm" + (f": {deployed.url}{first}" if deployed.url else "")
        )
        return
    if init or external_addons:
        raise click.UsageError("--init and --external-addons go with --to swarm")
    version = api.deploy(app_dir, say=click.echo)
    click.echo(f"       Released v{version}")


@click.command("destroy")
@app_dir_option
@click.option("--to", "target", type=click.Choice(["swarm"]), required=True, help="Where the app was deployed.")
@click.option("--confirm", metavar="APP", help="The app's name, to go ahead without being asked.")
@operate
def destroy(app_dir: Path, target: str, confirm: str | None) -> None:
    """Remove the app's every service, network, secret and volume (its add-ons' data) from the swarm."""
    from ..app import load_app
    from ..clikit import confirm_destructive
    from ..swarm import destroy_swarm

    app_state(app_dir)
    name = load_app(app_dir.resolve()).name
    confirm_destructive(name, confirm, f"This removes {name} from the swarm, with its add-ons' volumes and their data.")
    destroy_swarm(name, say=click.echo)


def _version(value: str | None) -> int | None:
    """`v12` or `12`, as the Heroku CLI takes a release."""
    if value is None:
        return None
    digits = value[1:] if value[:1] in ("v", "V") else value
    if not digits.isdigit():
        raise click.BadParameter(f"{value!r} is not a release; write it as v12 (`dynosim releases` lists them)")
    return int(digits)


@click.command("releases:rollback")
@click.argument("release", required=False)
@app_dir_option
@operate
def rollback(release: str | None, app_dir: Path) -> None:
    """Roll back to RELEASE (default: the one before the current): a new release of its slug and
    config vars, every dyno restarted; add-ons and their data stay as they are."""
    from .. import api
    from ..app import load_app
    from ..releases import ReleaseHistory

    app_state(app_dir)
    version = _version(release)
    name = load_app(app_dir.resolve()).name
    applied = api.rollback(app_dir, version)
    target, new_version = applied.value
    pending = not applied.live and ReleaseHistory(app_state(app_dir)).status(new_version) == "pending"
    runs = "runs its release phase and starts it" if pending else "starts it"
    later = "" if applied.live else f" (the next `dynosim run` {runs})"
    click.echo(f"Rolling back ⬢ {name} to v{target.version}... done, v{new_version}{later}")
    if target.migrated_since:
        phases = ", ".join(f"v{v}" for v in target.migrated_since)
        click.echo(
            f" !     v{target.version} is older than the release phase of {phases}: a migration there may have "
            f"changed the database, and a rollback restores code and config vars, not the schema",
            err=True,
        )
    click.echo(" ›   Warning: Rollback affects code and config vars; it doesn't add or remove addons.", err=True)
    click.echo(f" ›   Warning: To undo, run: dynosim releases:rollback v{new_version - 1}", err=True)


@click.command("releases:info")
@click.argument("release", required=False)
@app_dir_option
@click.option("-s", "--shell", is_flag=True, help="The config vars as KEY=value lines.")
@json_option
@operate
def info(release: str | None, app_dir: Path, shell: bool, as_json: bool) -> None:
    """One release (default: the current) and its config vars, as `heroku releases:info` shows it."""
    from ..releases import ReleaseHistory

    state = app_state(app_dir)
    row = ReleaseHistory(state).info(_version(release))
    if as_json:
        print_json(row)
        return
    config_vars = row["config_vars"]
    name = f"v{row['version']}"
    if not shell:
        addons = row["addons"]
        click.echo(f"=== Release {name}")
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(str(row["created_at"]))))
        fields = [
            ("Add-ons:", ", ".join(addons) if isinstance(addons, list) else "(not recorded)"),
            ("By:", str(row["user"])),
            ("Change:", f"{row['description']}{MARKS.get(str(row['status']), '')}"),
            ("When:", when),
        ]
        print_table(None, fields, gap=1)
        click.echo("")
        click.echo(f"=== {name} Config vars")
    if not isinstance(config_vars, dict):
        click.echo(f"{name} does not record its config vars (an older dynosim made it)")
    elif shell:
        for key, value in sorted(config_vars.items()):
            click.echo(f"{key}={shlex.quote(str(value))}")
    else:
        print_table(None, [(f"{key}:", str(value)) for key, value in sorted(config_vars.items())], gap=1)
