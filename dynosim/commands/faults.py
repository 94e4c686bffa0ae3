"""`dynosim faults`, `faults:add`, `faults:remove`, `faults:clear`: Heroku's failure modes on demand,
in the running app (as LocalStack's Chaos API switches faults on and off at run time)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from ..clikit import app_dir_option, app_state, json_option, operate, print_json, print_table


def _kinds_help() -> str:
    from ..faults.kinds import KINDS

    return "\n\n".join(f"{name}: {kind.summary}" for name, kind in KINDS.items())


@click.command("faults")
@app_dir_option
@json_option
@operate
def faults(app_dir: Path, as_json: bool) -> None:
    """The faults on now in the running app."""
    from ..faults.client import faults as active

    app_state(app_dir)
    rows = active(app_dir)
    if as_json:
        print_json(rows)
    elif not rows:
        click.echo("No faults are on. Add one: dynosim faults:add dyno-crash --target web.1")
    else:
        print_table(["ID", "Kind", "Target", "Details", "Ends"], [_row(fault) for fault in rows])


@click.command("faults:add", epilog=_kinds_help())
@click.argument("kind")
@click.option("--target", metavar="T", help="web.2, web, heroku-postgresql… (the router's kinds take none).")
@click.option("--probability", metavar="P", default="1", show_default=True, help="The share it acts on, 0..1.")
@click.option("--for", "duration", metavar="10s", help="How long it stays on (default: until faults:remove).")
@click.option("--latency", metavar="200ms", help="Time added (router-latency, addon-latency).")
@click.option("--status", type=int, metavar="503", help="The HTTP status router-error answers with.")
@click.option("--code", metavar="H13", help="The H-code router-error logs.")
@click.option("--seed", type=int, metavar="N", help="Makes its random choices repeatable.")
@app_dir_option
@operate
def faults_add(
    kind: str,
    target: str | None,
    probability: str,
    duration: str | None,
    latency: str | None,
    status: int | None,
    code: str | None,
    seed: int | None,
    app_dir: Path,
) -> None:
    """Switch a fault on in the running app, now."""
    from ..faults import FaultRequest, parse_duration, parse_probability
    from ..faults.client import add_fault
    from ..faults.kinds import kind_of

    app_state(app_dir)
    kind_of(kind)  # an unknown kind is refused before the run is asked
    request = FaultRequest(
        kind,
        target,
        probability=parse_probability(probability, "--probability"),
        duration=None if duration is None else parse_duration(duration, "--for"),
        latency=None if latency is None else parse_duration(latency, "--latency"),
        status=status,
        code=code,
        seed=seed,
    )
    fault = add_fault(app_dir, request)
    click.echo(f"Adding {kind}{f' on {target}' if target else ''}... done, {fault['id']} (seed {fault['seed']})")


@click.command("faults:remove")
@click.argument("fault_id", metavar="ID")
@app_dir_option
@operate
def faults_remove(fault_id: str, app_dir: Path) -> None:
    """Switch a fault off (ID as `dynosim faults` shows it)."""
    from ..faults.client import remove_fault

    app_state(app_dir)
    fault = remove_fault(app_dir, fault_id)
    click.echo(f"Removing {fault['id']} {fault['kind']}... done")


@click.command("faults:clear")
@app_dir_option
@operate
def faults_clear(app_dir: Path) -> None:
    """Switch every fault off."""
    from ..faults.client import clear_faults

    app_state(app_dir)
    removed = clear_faults(app_dir)
    click.echo(f"Removing {len(removed)} fault{'s' if len(removed) != 1 else ''}... done")


def _row(fault: dict[str, Any]) -> tuple[str, str, str, str, str]:
    details = [f"p={fault['probability']:g}"] if fault["probability"] < 1 else []
    if fault.get("latency") is not None:
        details.append(f"+{fault['latency'] * 1000:.0f}ms")
    details += [str(fault[key]) for key in ("status", "code") if fault.get(key) is not None]
    details.append(f"seed {fault['seed']}")
    ends = "when removed" if fault["ends"] is None else f"in {max(0.0, fault['ends'] - time.time()):.0f}s"
    return fault["id"], fault["kind"], fault.get("target") or "-", ", ".join(details), ends
