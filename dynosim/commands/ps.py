"""`dynosim ps`, `ps:scale`, `ps:resize`, `ps:restart` (also `restart`), `ps:stop`: the dynos and the formation.
`ps`, `ps:scale` and `restart` take `--on swarm` for the app `deploy --to swarm` put on the Docker engine's swarm."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..clikit import app_dir_option, app_state, assignments, json_option, operate, print_json

on_option = click.option(
    "--on",
    "on",
    type=click.Choice(["swarm"]),
    default=None,
    help="The app deploy --to swarm put on the Docker engine's swarm, not the local run.",
)


@click.command("ps")
@app_dir_option
@on_option
@json_option
@operate
def ps(app_dir: Path, on: str | None, as_json: bool) -> None:
    """The dynos of the running app (or on the swarm), as `heroku ps` shows them."""
    from .. import api
    from ..formation import size_title

    app_state(app_dir)
    if on == "swarm":
        from ..swarm import ps_swarm

        rows = ps_swarm(app_dir)
    else:
        rows = api.ps(app_dir, addons=not as_json)  # --json stays the dynos; `addons --json` has the servers
    if as_json:
        print_json(rows)
        return
    by_type: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_type.setdefault(str(row["type"]), []).append(row)
    servers = by_type.pop("addon", [])
    now = time.time()
    for kind, dynos in by_type.items():
        click.echo(f"=== {kind} ({size_title(str(dynos[0]['size']))}): {dynos[0]['command']} ({len(dynos)})")
        for row in dynos:
            since = row["since"]
            age = f" {_since(float(since), now)}" if isinstance(since, (int, float)) else ""
            memory = f" {row['memory_mb']:.0f} MB" if row.get("memory_mb") else ""
            click.echo(f"{row['name']}: {row['state']}{age}{memory}")
        click.echo()
    if servers:  # not Heroku's: its add-ons are managed elsewhere; here their servers are the run's to restart
        click.echo(f"=== add-on servers ({len(servers)})")
        for row in servers:
            click.echo(f"{row['name']} ({row['addon']}): {row['describe']}")
        click.echo()


def _since(when: float, now: float) -> str:
    """Heroku's `2026/12/04 21:00:00 +0000 (~ 1m ago)`."""
    elapsed = max(0.0, now - when)
    ago = next(
        (
            f"{int(elapsed // unit)}{name}"
            for unit, name, limit in ((1, "s", 60), (60, "m", 3600), (3600, "h", 90000))
            if elapsed < limit
        ),
        f"{int(elapsed // 86400)}d",
    )
    return f"{time.strftime('%Y/%m/%d %H:%M:%S %z', time.localtime(when))} (~ {ago} ago)"


@click.command("ps:scale")
@app_dir_option
@on_option
@click.argument("counts", nargs=-1, required=True)
@operate
def ps_scale(app_dir: Path, on: str | None, counts: tuple[str, ...]) -> None:
    """Scale process types: `dynosim ps:scale web=2 worker=0` (kept for the next runs, and deploys, too)."""
    from .. import api
    from ..formation import parse_formation

    wanted = parse_formation(" ".join(counts), "ps:scale")
    app_state(app_dir)
    if on == "swarm":
        from ..swarm import scale_swarm

        scaled = scale_swarm(app_dir, wanted)
        click.echo(
            "Scaling dynos on the swarm... done, now running " + ", ".join(f"{k} at {v}" for k, v in scaled.items())
        )
        return
    applied = api.scale(app_dir, wanted)
    if not applied.live:
        click.echo(
            "Scaling dynos... done, "
            + ", ".join(f"{k} at {v}" for k, v in applied.value.items())
            + " (no run is active: the next `dynosim run` starts this formation)"
        )
        return
    click.echo("Scaling dynos... done, now running " + ", ".join(f"{k} at {v}" for k, v in applied.value.items()))


@click.command("ps:resize")
@app_dir_option
@click.argument("sizes", nargs=-1, required=True)
@operate
def ps_resize(app_dir: Path, sizes: tuple[str, ...]) -> None:
    """Change dyno sizes: `dynosim ps:resize web=standard-2x` (memory quota, WEB_CONCURRENCY; kept for the
    next runs too)."""
    from .. import api

    wanted = assignments(sizes, "ps:resize", "TYPE=SIZE, e.g. web=standard-2x", empty_values=False)
    app_state(app_dir)
    applied = api.resize(app_dir, wanted)
    if not applied.live:
        click.echo(
            "Resizing dynos... done: "
            + ", ".join(f"{k} {v}" for k, v in applied.value.items())
            + " (no run is active: the next `dynosim run` uses these sizes)"
        )
        return
    click.echo(
        "Resizing and restarting the specified dynos... done: "
        + ", ".join(f"{k} {v}" for k, v in applied.value.items())
    )


@click.command("ps:restart")
@app_dir_option
@on_option
@click.argument("target", required=False)
@operate
def ps_restart(app_dir: Path, on: str | None, target: str | None) -> None:
    """Restart all dynos, a process type (web) or one dyno (web.1); on the swarm, a type's restart is a rolling one."""
    from .. import api

    app_state(app_dir)
    if on == "swarm":
        from ..swarm import restart_swarm

        names = restart_swarm(app_dir, target)
        click.echo(f"Restarting {', '.join(names) or 'no'} dynos on the swarm... done")
        return
    names = api.restart(app_dir, target)
    click.echo(f"Restarting {', '.join(names) or 'no'} dynos... done")


@click.command("ps:stop")
@app_dir_option
@click.argument("target")
@operate
def ps_stop(app_dir: Path, target: str) -> None:
    """Stop one dyno (web.1) or a process type's dynos (web). The formation is unchanged, so the dyno
    manager starts them again, as on Heroku; `dynosim ps:scale web=0` stops them for good."""
    from .. import api
    from ..app import load_app

    app_state(app_dir)
    names = api.stop_dynos(app_dir, target)
    what = f"{target} dyno" if names == [target] else f"{target} dynos"
    click.echo(f"Stopping {what} on ⬢ {load_app(app_dir.resolve()).name}... done")
    click.echo(
        f"The formation still asks for {', '.join(names)}: the dyno manager starts "
        f"{'it' if len(names) == 1 else 'them'} again (ps:scale TYPE=0 stops a type for good)"
    )
