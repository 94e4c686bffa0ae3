"""`pg:info`, `pg:ps`, `pg:killall`, `pg:credentials`, `pg:credentials:url`, `pg:credentials:rotate`:
Heroku's Postgres verbs on the app's own server (addons/pg_admin.py does the work), printed as the
Heroku CLI prints them. With no `dynosim run` active, each starts the add-on for the command, as
pg:psql does; with one, it works on the running server, and a rotation is a new release of the app.
"""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..addons.commands import backend_option
from ..clikit import app_dir_option, app_state, confirm_destructive, json_option, operate, print_json, print_table
from ..errors import AddonError

if TYPE_CHECKING:
    from ..addons.pg_admin import DatabaseInfo

confirm_option = click.option(
    "-c", "--confirm", metavar="APP", default=None, help="The app's name: skips the question."
)
database_argument = click.argument("database", required=False)
ROTATED_BY = "heroku-postgresql@addons.heroku.com"  # who Heroku names as the rotation release's author


@click.command("pg:info")
@app_dir_option
@backend_option
@json_option
@database_argument
@operate
def pg_info(app_dir: Path, addons_backend: str, as_json: bool, database: str | None) -> None:
    """Each Postgres database's plan, status, connections, version, size and tables (or DATABASE's)."""
    from ..addons.catalogue import var_names
    from ..addons.manage import Session, declarations, psql_binary
    from ..addons.pg_admin import info

    app, state = _app(app_dir)
    if database is not None:
        chosen = [_database(app, state, database)]
    else:
        found = [d for d in declarations(state, _manifest(app)) if d.entry.offering.service == "postgres"]
        chosen = list({d.key: d for d in reversed(found)}.values())[::-1]  # the first of a key wins, as in a run
        chosen.sort(key=lambda d: d.entry.as_name != d.entry.offering.default_as)  # DATABASE_URL first
    if not chosen:
        click.echo(f"{app.name} has no heroku-postgresql databases.")
        return
    psql = psql_binary()
    shown = []
    for declared in chosen:
        with Session(state, declared, _run_vars(app), addons_backend, _say) as session:
            record = session.record()
            names = tuple(var_names(declared.entry, record.get("color")))
            shown.append(info(record, names, psql))
    if as_json:
        print_json([_info_json(one) for one in shown])
        return
    for one in shown:
        click.echo(f"=== {', '.join(one.config_vars)}")
        print_table(None, [(f"{key}:", value) for key, value in _info_fields(one)], gap=1)
        click.echo()


@click.command("pg:ps")
@app_dir_option
@backend_option
@click.option("-v", "--verbose", is_flag=True, help="Idle connections too.")
@database_argument
@operate
def pg_ps(app_dir: Path, addons_backend: str, verbose: bool, database: str | None) -> None:
    """The database's active queries with their execution time, as the app's credential sees them."""
    from ..addons.manage import Session, psql_binary
    from ..addons.pg_admin import activity

    app, state = _app(app_dir)
    declared = _database(app, state, database)
    psql = psql_binary()
    with Session(state, declared, _run_vars(app), addons_backend, _say) as session:
        click.echo(activity(session.record(), psql, verbose), nl=False)


@click.command("pg:killall")
@app_dir_option
@backend_option
@confirm_option
@database_argument
@operate
def pg_killall(app_dir: Path, addons_backend: str, confirm: str | None, database: str | None) -> None:
    """End every connection to the database (the app's dynos reconnect, or fail, as on Heroku)."""
    from ..addons.manage import Session, psql_binary
    from ..addons.pg_admin import terminate_all

    app, state = _app(app_dir)
    declared = _database(app, state, database)
    psql = psql_binary()
    confirm_destructive(app.name, confirm, f"This command will end every connection to {declared.entry.as_name} "
                                           f"of app {app.name}")  # fmt: skip
    with Session(state, declared, _run_vars(app), addons_backend, _say) as session:
        record = session.record()
        click.echo("Terminating connections for all credentials... ", nl=False)
        terminate_all(record, psql)
        click.echo("done")


@click.command("pg:credentials")
@app_dir_option
@database_argument
@operate
def pg_credentials(app_dir: Path, database: str | None) -> None:
    """The database's credentials (Essential plans have one, default) and the attachments using them."""
    from ..addons.catalogue import var_names
    from ..addons.pg_admin import record_of

    app, state = _app(app_dir)
    declared = _database(app, state, database)
    record = record_of(state, declared)
    attachments = [name.removesuffix("_URL") for name in var_names(declared.entry, record.get("color"))]
    rows = [("default", "active")]
    rows += [(f" {'└─' if i == len(attachments) - 1 else '├─'} as {name}", "") for i, name in enumerate(attachments)]
    print_table(("Credential", "State"), rows)


@click.command("pg:credentials:url")
@app_dir_option
@database_argument
@operate
def pg_credentials_url(app_dir: Path, database: str | None) -> None:
    """The default credential's connection string and URL."""
    from ..addons import provisioned_vars
    from ..addons.catalogue import var_names

    app, state = _app(app_dir)
    declared = _database(app, state, database)
    url = provisioned_vars(state, [declared.request])[var_names(declared.entry)[0]]
    parts = urllib.parse.urlsplit(url)
    user, password = urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password or "")
    click.echo("Connection information for default credential.")
    click.echo("Connection info string:")
    click.echo(f'  "dbname={parts.path.lstrip("/")} host={parts.hostname} port={parts.port} user={user} '
               f'password={password} sslmode=require"')  # fmt: skip
    click.echo("Connection URL:")
    click.echo(f"  {url}")


@click.command("pg:credentials:rotate")
@app_dir_option
@backend_option
@confirm_option
@database_argument
@operate
def pg_credentials_rotate(app_dir: Path, addons_backend: str, confirm: str | None, database: str | None) -> None:
    """A new password for the default credential: DATABASE_URL changes, connections are reset, and a
    running app gets a new release and restarts; the old password stops working."""
    from .. import api
    from ..addons.manage import Session, psql_binary
    from ..addons.pg_admin import rotate

    app, state = _app(app_dir)
    declared = _database(app, state, database)
    psql = psql_binary()
    confirm_destructive(
        app.name, confirm, "The password for the default credential will rotate.",
        "Connections will be reset and applications will be restarted.", f"This command will affect the app {app.name}.",
    )  # fmt: skip
    running = _run_vars(app)
    with Session(state, declared, running, addons_backend, _say) as session:
        record = session.record()
        click.echo(f"Rotating default on {record['name']}... ", nl=False)
        rotate(state, record, psql)
        click.echo("done")
    if running is not None:  # its dynos restart onto the new URL, in a release by the add-on
        description = f"Update {declared.entry.as_name} by {declared.entry.offering.addon}"
        api.addon_changed(app_dir, str(record["name"]), description, ROTATED_BY)


# --- helpers ----------------------------------------------------------------------------------------


def _app(app_dir: Path) -> tuple[Any, Path]:
    from ..app import load_app

    state = app_state(app_dir)
    return load_app(app_dir), state


def _manifest(app: Any) -> list[Any]:
    from ..addons import manifest_requests

    return manifest_requests(app.manifest.addons)


def _run_vars(app: Any) -> dict[str, str] | None:
    """The running release's config vars, when a run is active."""
    from ..runlock import RunLock

    active = RunLock(app).active()
    found = active.get("config_vars") if active is not None else None
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else None


def _database(app: Any, state: Path, wanted: str | None) -> Any:
    """The Postgres add-on DATABASE names (or the app's DATABASE_URL one); naming another kind is refused."""
    from ..addons.manage import find, pick

    manifest = _manifest(app)
    if wanted is not None:
        row = find(state, manifest, wanted)
        if row.service != "postgres":
            raise AddonError(
                f"{wanted} is {row.addon} ({row.name or row.attached_as}), not a Postgres database; name one of "
                "the app's heroku-postgresql add-ons (see `dynosim addons`)"
            )
    return pick(state, manifest, "postgres", wanted, "heroku-postgresql")


def _say(line: str) -> None:
    click.echo(line, err=True)


# --- pg:info, as Heroku prints it -------------------------------------------------------------------

_ROLLBACK_DAYS = {"standard": 4, "premium": 7, "private": 7, "shield": 7}  # Heroku's rollback windows


def _info_fields(db: DatabaseInfo) -> list[tuple[str, str]]:
    """Heroku's keys, in its order (the Getting Started guide's essential-0 example)."""
    essential = db.plan.name.startswith("essential")
    size = _size(db.data_size)
    if essential:  # Essential plans have a storage limit the data size is shown against
        size += f"/{_size(db.plan.storage)} ({100 * db.data_size / db.plan.storage:.2f}%)"
        if db.data_size <= db.plan.storage:
            size += " (In compliance)"
    return [
        ("Plan", db.plan.title),
        ("Status", db.status),
        ("Connections", f"{db.connections}/{db.plan.connections}"),
        ("PG Version", db.version),
        ("Created", _utc(db.created)),
        ("Data Size", size),
        ("Tables", str(db.tables)),
        ("Fork/Follow", "Unsupported" if essential else "Available"),
        ("Rollback", "Unsupported" if essential else f"earliest from {_utc(_rollback_from(db))}"),
        ("Continuous Protection", "Off" if essential else "On"),
        ("Add-on", db.addon),
    ]


def _info_json(db: DatabaseInfo) -> dict[str, Any]:
    fields = dict(_info_fields(db))
    return {
        "addon": db.addon,
        "config_vars": list(db.config_vars),
        "plan": db.plan.name,
        "status": db.status,
        "connections": {"used": db.connections, "limit": db.plan.connections},
        "pg_version": db.version,
        "created_at": datetime.fromtimestamp(db.created, UTC).isoformat(),
        "data_size": db.data_size,
        "storage_limit": db.plan.storage,
        "tables": db.tables,
        "fork_follow": fields["Fork/Follow"],
        "rollback": fields["Rollback"],
        "continuous_protection": fields["Continuous Protection"],
    }


def _rollback_from(db: DatabaseInfo) -> float:
    days = _ROLLBACK_DAYS[db.plan.name.split("-")[0]]
    return max(db.created, (datetime.now(UTC) - timedelta(days=days)).timestamp())


def _utc(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _size(size: int) -> str:
    """As pg:info prints sizes: `8.6 MB`, `1.80 GB`."""
    if size >= 1024**3:
        return f"{size / 1024**3:.2f} GB"
    if size >= 1024**2:
        return f"{size / 1024**2:.1f} MB"
    return f"{size / 1024:.1f} kB"
