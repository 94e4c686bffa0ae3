"""`pg:pull` and `pg:push`, with Heroku's arguments, flags and output (commands/pg/pull, push): parse,
find the add-on and have it running (the run's, or started for this session), call addons/transfer, print."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from dynosim.clikit import app_dir_option, app_state, operate

if TYPE_CHECKING:
    from dynosim.addons.manage import Declared
    from dynosim.app import AppDir

backend_option = click.option(
    "--addons", "addons_backend", type=click.Choice(["auto", "docker", "native"]), default="auto", show_default=True,
    help="Where the add-on runs for this copy when no `dynosim run` is active.",
)  # fmt: skip
exclude_option = click.option(
    "--exclude-table-data", metavar="TABLES", default=None,
    help="Tables for which data should be excluded (use ';' to split multiple names).",
)  # fmt: skip


@click.command("pg:pull")
@app_dir_option
@backend_option
@exclude_option
@click.argument("source")
@click.argument("target")
@operate
def pg_pull(app_dir: Path, addons_backend: str, exclude_table_data: str | None, source: str, target: str) -> None:
    """Pull the app's Postgres add-on into a local or remote database.

    \b
    SOURCE is the add-on: DATABASE, its colour (HEROKU_POSTGRESQL_JADE) or its name.
    TARGET must be one of:
    * a database name (on your own Postgres: PGHOST, PGPORT, PGUSER)  => it must not exist and is created
    * a URL to a Postgres on localhost                                  => it must not exist and is created
    * a URL to any other Postgres                                       => it must exist and be empty

    \b
    To delete a local database run `dropdb TARGET`. A pull that fails leaves no TARGET behind
    (one it created is dropped, an empty one stays empty).
    Example: dynosim pg:pull DATABASE mylocaldb
    """
    from dynosim.addons.transfer import Database, exclusions, transfer

    excluded = exclusions(exclude_table_data)
    app, state, declared = _find(app_dir, source)
    into = Database.named(target)  # a malformed URL fails before anything starts
    with _running(app, state, declared, addons_backend) as record:
        source_db = Database.addon(record)
        click.echo(f"Pulling {source_db.label} to {into.label}")
        not_empty = "Please create a new database (createdb) or empty this one"
        transfer(source_db, into, excluded, not_empty, _err, _warn)
        click.echo("Pulling complete.")


@click.command("pg:push")
@app_dir_option
@backend_option
@exclude_option
@click.argument("source")
@click.argument("target")
@operate
def pg_push(app_dir: Path, addons_backend: str, exclude_table_data: str | None, source: str, target: str) -> None:
    """Push a local or remote database into the app's Postgres add-on, which must be empty.

    \b
    SOURCE is a database on your own Postgres (PGHOST, PGPORT, PGUSER) or a postgres:// URL
    (a real remote database too: pull production into dynosim). TARGET is the add-on: DATABASE,
    its colour (HEROKU_POSTGRESQL_JADE) or its name. The tables become the app's role's.
    To empty the add-on first run `dynosim pg:reset`. A push that fails leaves it empty.
    Example: dynosim pg:push mylocaldb DATABASE
    """
    from dynosim.addons.transfer import Database, exclusions, transfer

    excluded = exclusions(exclude_table_data)
    app, state, declared = _find(app_dir, target)
    from_db = Database.named(source)
    from_db.query("SELECT 1")  # a source that does not answer fails before the add-on starts
    with _running(app, state, declared, addons_backend) as record:
        into = Database.addon(record)
        click.echo(f"Pushing {from_db.label} to {into.label}")
        reset = f"Please create a new database or use dynosim pg:reset {declared.entry.as_name} --confirm {app.name}"
        transfer(from_db, into, excluded, reset, _err, _warn)
        click.echo("Pushing complete.")


def _find(app_dir: Path, wanted: str) -> tuple[AppDir, Path, Declared]:
    """The app, its state folder and its Postgres add-on named `wanted` (DATABASE, a colour, a name)."""
    from dynosim.addons import manifest_requests
    from dynosim.addons.manage import pick
    from dynosim.app import load_app

    state = app_state(app_dir)
    app = load_app(app_dir)
    return app, state, pick(state, manifest_requests(app.manifest.addons), "postgres", wanted, "heroku-postgresql")


@contextmanager
def _running(app: AppDir, state: Path, declared: Declared, backend: str) -> Iterator[dict[str, Any]]:
    """The add-on's record, the add-on running for the block: the run's, or started for it."""
    from dynosim.addons.manage import Session
    from dynosim.runlock import RunLock

    active = RunLock(app).active()
    run_vars = active.get("config_vars") if active else None
    with Session(state, declared, dict(run_vars) if isinstance(run_vars, dict) else None, backend,
                 _err) as session:  # fmt: skip
        yield session.record()


def _err(line: str) -> None:
    click.echo(line, err=True)


def _warn(line: str) -> None:
    click.echo(f" ▸    {line}", err=True)
