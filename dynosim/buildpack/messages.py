"""How Heroku's Python buildpack prints: its steps, a tool's indented output, its warning and error
blocks. The blocks' first lines are the buildpack's own words, for users comparing with Heroku's log."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from dynosim.errors import BuildError

STEP = "-----> "
INDENT = "       "
WARN = " !     "

Say = Callable[[str], None]


def warning(say: Say, title: str, lines: Iterable[str] = ()) -> None:
    """The buildpack's `output::warning`: "Warning: <title>", then its explanation."""
    _block(say, f"Warning: {title}", lines)


def failure(say: Say, title: str, lines: Iterable[str], summary: str) -> BuildError:
    """The buildpack's `output::error` block, printed; the one-line error to raise with it.
    `summary` says why and what to do, for the CLI's single `dynosim: error:` line."""
    _block(say, f"Error: {title}", lines)
    return BuildError(summary)


def _block(say: Say, first: str, lines: Iterable[str]) -> None:
    say(f"{WARN}{first}")
    for line in lines:
        say(f"{WARN}{line}")
