"""What every `dynosim` command module shares: the -C and --json options, one-line errors, JSON and
table printing. Command modules import these; this module imports no command module (nor cli.py)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, ParamSpec, TypeVar

import click

from .errors import DynosimError

P = ParamSpec("P")
R = TypeVar("R")

app_dir_option = click.option(
    "-C",
    "--app-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    help="The app's folder (default: here).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def fail(exc: DynosimError) -> NoReturn:
    """The one line a user sees for a DynosimError, and its exit code."""
    click.echo(f"dynosim: error: {exc}", err=True)
    sys.exit(exc.exit_code)


def operate(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn DynosimError into one line on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except DynosimError as exc:
            fail(exc)

    return wrapper


def app_state(app_dir: Path) -> Path:
    """The app's state folder (.dynosim), once the folder is known to be an app."""
    from .config import state_dir

    if not (app_dir / "Procfile").exists() and not (app_dir / ".dynosim").exists():
        raise DynosimError(
            f"{app_dir.resolve()}: not a dynosim app (no Procfile); run this in your app's folder or pass -C"
        )
    return state_dir(app_dir.resolve())


def confirm_destructive(app_name: str, confirm: str | None, *warning: str) -> None:
    """Heroku's question before a command that destroys or disconnects (lib/confirmCommand): `--confirm
    APP` must name the app; without it, a terminal is asked to type the app's name, and no terminal
    is an error saying to pass it. A refusal changes nothing, and says so."""
    if confirm is not None:
        if confirm != app_name:
            raise DynosimError(f"Confirmation {confirm} did not match {app_name}. Aborted; nothing was changed")
        return
    if not sys.stdin.isatty():
        raise DynosimError(
            f"this is a destructive action: pass --confirm {app_name} to go ahead (no terminal to ask on)"
        )
    click.echo(" ▸    WARNING: Destructive Action", err=True)
    for line in warning or (f"This command will affect the app {app_name}",):
        click.echo(f" ▸    {line}", err=True)
    click.echo(err=True)
    answer = click.prompt(
        f"To proceed, type {app_name} or re-run this command with --confirm {app_name}",
        prompt_suffix="\n> ", default="", show_default=False, err=True,
    )  # fmt: skip
    if answer.strip() != app_name:
        raise DynosimError(f"Confirmation did not match {app_name}. Aborted; nothing was changed")


def print_json(value: object) -> None:
    click.echo(json.dumps(value, indent=1, sort_keys=True))


def print_table(headers: Sequence[str] | None, rows: Sequence[Sequence[str]], gap: int = 2) -> None:
    """Columns `gap` spaces apart, as Heroku's CLI prints them: the headers (when given) over a ─ rule,
    no frame, no padding at the edges, and no trailing blanks (a pipe reads each line as written)."""
    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from .colour import enabled

    colour = enabled(sys.stdout)
    table = Table(
        box=None,
        padding=(0, gap, 0, 0),
        pad_edge=False,
        show_header=headers is not None,
        header_style="bold" if colour else "",
    )
    columns = [str(h) for h in headers] if headers is not None else [""] * (len(rows[0]) if rows else 0)
    for header in columns:
        table.add_column(header, no_wrap=True, overflow="ignore")
    if headers is not None:
        widths = [max(cell_len(str(cell)) for cell in column) for column in zip(columns, *rows, strict=True)]
        table.add_row(*("─" * width for width in widths))
    for row in rows:
        table.add_row(*(Text(str(cell)) for cell in row))  # Text: a cell's [brackets] are not markup
    console = Console(no_color=not colour, highlight=False, soft_wrap=True, width=1 << 16)
    with console.capture() as captured:
        console.print(table)
    for line in captured.get().splitlines():
        click.echo(line.rstrip())


def assignments(
    items: Sequence[str], command: str, shape: str = "KEY=VALUE", *, empty_values: bool = True
) -> dict[str, str]:
    """`KEY=VALUE` arguments (config:set, exec -e, ps:resize) as a dict; one that is not (or, without
    `empty_values`, one with nothing after the =) is a one-line error naming it and the shape it must have."""
    found: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not (value or empty_values):
            raise DynosimError(f"{command} {item!r}: write {shape}")
        found[key] = value
    return found
