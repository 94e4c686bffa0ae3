"""`dynosim logs`: the running app's log stream, with `heroku logs`'s -n, -t, -d (or -p) and -s; `--on swarm`
reads the app `deploy --to swarm` put on the Docker engine's swarm."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from ..clikit import app_dir_option, app_state, json_option, operate, print_json

LINE = re.compile(r"^(\S+) (\w+)\[([^\]]+)\]: (.*)$", re.S)


@click.command("logs")
@app_dir_option
@click.option(
    "-n",
    "--num",
    default=100,
    show_default=True,
    type=click.IntRange(1, 1500),
    help="How many lines (logplex keeps 1,500).",
)
@click.option("-t", "--tail", is_flag=True, help="Keep streaming new lines.")
@click.option("-d", "--dyno", "-p", "--ps", default=None, help="Only this dyno (web.1), type (web), router or api.")
@click.option("-s", "--source", type=click.Choice(["app", "heroku", "dynosim"]), default=None, help="Only this source.")
@click.option(
    "--on",
    type=click.Choice(["swarm"]),
    default=None,
    help="The app deploy --to swarm put on the Docker engine's swarm (its dynos' own lines), not the local run.",
)
@json_option
@operate
def logs(
    *, app_dir: Path, num: int, tail: bool, dyno: str | None, source: str | None, on: str | None, as_json: bool
) -> None:
    """The running app's log stream, as `heroku logs`."""
    from ..control import request, stream

    folder = app_state(app_dir)
    if on == "swarm":
        from ..errors import DynosimError
        from ..swarm import logs_swarm

        if source not in (None, "app"):
            raise DynosimError(f"logs -s {source}: the swarm keeps only the dynos' own output (app); drop -s")
        lines = logs_swarm(app_dir, n=num, dyno=dyno, tail=tail)
        if as_json and not tail:
            print_json([_fields(line) for line in lines])
            return
        try:
            for line in lines:
                click.echo(json.dumps(_fields(line)) if as_json else line)
        except KeyboardInterrupt:
            pass
        return
    if tail:
        try:
            for line in stream(folder, "logs:tail", n=num, dyno=dyno, source=source):
                click.echo(json.dumps(_fields(line)) if as_json else line)
        except KeyboardInterrupt:
            pass
        return
    lines = request(folder, "logs", n=num, dyno=dyno, source=source)
    if as_json:
        print_json([_fields(line) for line in lines])
    else:
        for line in lines:
            click.echo(line)


def _fields(line: str) -> dict[str, str]:
    match = LINE.match(line)
    if not match:
        return {"line": line}
    return dict(zip(("time", "source", "dyno", "text"), match.groups(), strict=True))
