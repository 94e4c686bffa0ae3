"""The add-on commands, with Heroku's names: `addons`, `addons:create`, `addons:destroy`, `pg:psql`,
`pg:reset`, `redis:cli`, and the SMTP sink's `mail` and `mail:show`. Parse, call `manage`/`smtp`, print.

cli.py loads them lazily by name (`LazyGroup.lazy`); the shared helpers come from clikit.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from dynosim.clikit import app_dir_option, app_state, confirm_destructive, json_option, operate, print_json, print_table
from dynosim.errors import DynosimError
from dynosim.sizes import byte_size

backend_option = click.option(
    "--addons", "addons_backend", type=click.Choice(["auto", "docker", "native"]), default="auto", show_default=True,
    help="Where the add-on runs for this session when no `dynosim run` is active.",
)  # fmt: skip
passthrough = {"ignore_unknown_options": True, "allow_interspersed_args": False}


# --- addons -----------------------------------------------------------------------------------------


@click.command("addons")
@app_dir_option
@json_option
@operate
def addons(app_dir: Path, as_json: bool) -> None:
    """The app's add-ons: name, plan, service, backend, endpoint, config vars, data size, and while a run
    is active, the state of each one's server (up, or crashed and restarted, and how often; --json: "server")."""
    from dataclasses import replace

    from dynosim.addons import app_requests, provision
    from dynosim.addons.manage import inventory

    app, state = _app(app_dir)
    provision(state, app_requests(app.manifest.addons, state))  # app.json's too, as Heroku has them from the start
    servers = _servers(state)
    rows = [replace(row, server=servers.get(row.name)) for row in inventory(state, _manifest(app))]
    if as_json:
        print_json([row.as_json() for row in rows])
        return
    if not rows:
        click.echo(f"No add-ons for app {app.name}. Add one with `dynosim addons:create heroku-postgresql`.")
        return
    # Heroku's `addons` has a State column; here, while a run is active, its server's (up, restarting…)
    state_column = ("State",) if servers else ()
    print_table(
        ("Add-on", "Plan", "Service", "Backend", "Endpoint", "Attached as", "Size", *state_column),
        [
            (
                f"{row.addon} ({row.name})" if row.name else row.addon,
                row.plan or "-",
                row.service,
                row.backend or "(next run)",
                row.endpoint or "-",
                _vars(row.attached_as, row.config_vars),
                _size(row.size),
                *((str(row.server["describe"]) if row.server is not None else "-",) if servers else ()),
            )
            for row in rows
        ],
    )


def _servers(state: Path) -> dict[str, dict[str, Any]]:
    """Each add-on's server in the active run, by add-on name; none when no run is active."""
    from dynosim.control import request

    try:
        return dict(request(state, "addons:servers"))
    except DynosimError:  # no run, or one stopping: the listing is the add-ons' records all the same
        return {}


@click.command("addons:create")
@app_dir_option
@click.argument("plan", metavar="NAME[:PLAN]")
@click.option(
    "--as", "as_name", metavar="NAME", default=None, help="The attachment name: its config vars are NAME_URL…"
)
@click.option(
    "--backend", type=click.Choice(["docker", "native"]), default=None,
    help="Where its first start creates it, and where it then always runs (default: the run's --addons).",
)  # fmt: skip
@operate
def addons_create(app_dir: Path, plan: str, as_name: str | None, backend: str | None) -> None:
    """Declare an add-on for the app: every later `dynosim run` starts it.

    PLAN is one of Heroku's: heroku-postgresql:essential-0 (the default), essential-1, essential-2,
    standard-0…10, premium-0…10, private-0…10, shield-0…10 (their connection and storage limits are
    enforced); heroku-redis:mini (the default), premium-0…14. Retired plans (hobby-dev, mini and basic
    for Postgres) are refused.
    """
    from dynosim.addons import AddonRequest
    from dynosim.addons.manage import declare

    app, state = _app(app_dir)
    name, names = declare(state, _manifest(app), AddonRequest(plan, as_name), backend)
    click.echo(f"Creating {plan} on ⬢ {app.name}... done")
    click.echo(f"Created {name} as {', '.join(names)}")
    if _active(app):
        click.echo("A run is active: the add-on starts with the next `dynosim run` (stop this one and start it again).")
    else:
        click.echo(
            "Its config vars are set (`dynosim config`); it starts with the next `dynosim run`. "
            "Use `dynosim addons` to list the app's add-ons."
        )


@click.command("addons:destroy")
@app_dir_option
@click.argument("name")
@click.option("-c", "--confirm", metavar="APP", default=None, help="The app's name: skips the question.")
@operate
def addons_destroy(app_dir: Path, name: str, confirm: str | None) -> None:
    """Remove an add-on and delete its data (NAME: its name, attachment or service)."""
    from dynosim.addons.manage import destroy, find

    app, state = _app(app_dir)
    manifest = _manifest(app)
    addon = find(state, manifest, name)
    if _active(app):
        raise DynosimError(
            "a `dynosim run` is active in this app; stop it first, then destroy the add-on (nothing was deleted)"
        )
    size = f", {_size(addon.size)}" if addon.size is not None else ""
    where = f", on {addon.backend}{size}" if addon.backend else ", not started yet"
    confirm_destructive(app.name, confirm, f"This command will destroy {addon.name or addon.addon} ({addon.addon} attached as "
                                           f"{addon.attached_as}{where}) and delete its data")  # fmt: skip
    done = destroy(state, manifest, addon, lambda line: click.echo(line, err=True))
    click.echo(f"Destroying {', '.join(done.names) or addon.name or name} on ⬢ {app.name}... done")
    if done.still_in_app_json:
        click.echo(
            "app.json still declares it: the next `dynosim run` provisions it again, empty. "
            "Remove it from app.json to stop that."
        )


# --- mail -------------------------------------------------------------------------------------------


@click.command("mail")
@app_dir_option
@json_option
@click.option(
    "-n", "--num", default=20, show_default=True, type=click.IntRange(min=1), help="How many messages, newest first."
)
@operate
def mail(app_dir: Path, as_json: bool, num: int) -> None:
    """The mail the app sent through its mailgun or sendgrid add-on (captured, never sent)."""
    from dynosim.addons.smtp import list_mail

    found = list_mail(app_state(app_dir), num)
    if as_json:
        print_json([m.as_json() for m in found])
        return
    if not found:
        click.echo("No mail captured yet. The app's mail goes to its mailgun or sendgrid add-on's SMTP sink.")
        return
    print_table(
        ("ID", "Time", "From", "To", "Subject"),
        [(m.id, _local(m.time), _cut(m.sender), _cut(m.to), _cut(m.subject, 60)) for m in found],
    )


@click.command("mail:show")
@app_dir_option
@json_option
@click.option("--raw", is_flag=True, help="The message exactly as captured (RFC 5322).")
@click.argument("mail_id", metavar="ID")
@operate
def mail_show(app_dir: Path, as_json: bool, raw: bool, mail_id: str) -> None:
    """One captured message: its headers and text (ID from `dynosim mail`)."""
    from dynosim.addons.smtp import find_mail, readable

    found = find_mail(app_state(app_dir), mail_id)
    if raw:
        sys.stdout.buffer.write(found.path.read_bytes())
        return
    shown = readable(found)
    if as_json:
        print_json(shown)
        return
    click.echo(f"=== {found.id} ({found.addon}) {_local(found.time)}")
    headers = (("From", "from"), ("To", "to"), ("Cc", "cc"), ("Subject", "subject"), ("Date", "date"))
    fields = [(f"{label}:", shown[key]) for label, key in headers if shown[key]]
    fields.append(("Envelope:", f"from <{shown['envelope_from']}> to {', '.join(shown['envelope_to'])}"))
    for a in shown["attachments"]:
        fields.append(("Attached:", f"{a['filename'] or '(no name)'} ({a['content_type']}, {a['size']} bytes)"))
    fields.append(("File:", str(found.path)))
    print_table(None, fields, gap=1)
    click.echo()
    click.echo(shown["body"].rstrip("\n") if shown["body"] else "(no text part; see --raw)")


# --- clients ----------------------------------------------------------------------------------------


@click.command("pg:psql", context_settings=passthrough)
@app_dir_option
@backend_option
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[DATABASE] [-- PSQL ARGS]")
@operate
def pg_psql(app_dir: Path, addons_backend: str, args: tuple[str, ...]) -> None:
    """Open psql on the app's Postgres (the running one, or started for this session)."""
    from dynosim.addons.manage import Session, client_env, psql_binary

    app, state = _app(app_dir)
    wanted, rest = _split(args, app, state, "postgres")
    declared = _pick(app, state, "postgres", wanted, "heroku-postgresql")
    psql = psql_binary()
    with Session(state, declared, _run_vars(app), addons_backend, _say) as session:
        code = _client([psql, "-d", session.url, *rest], client_env())
    sys.exit(code)


@click.command("pg:reset")
@app_dir_option
@backend_option
@click.option("-c", "--confirm", metavar="APP", default=None, help="The app's name: skips the question.")
@click.argument("database", required=False)
@operate
def pg_reset(app_dir: Path, addons_backend: str, confirm: str | None, database: str | None) -> None:
    """Delete every table and all data: drop the app's database and create it again, empty."""
    from dynosim.addons.manage import Session, psql_binary, reset_postgres

    app, state = _app(app_dir)
    declared = _pick(app, state, "postgres", database, "heroku-postgresql")
    psql = psql_binary()
    confirm_destructive(
        app.name, confirm, f"This command will delete all data in {declared.entry.as_name} of app {app.name}"
    )
    with Session(state, declared, _run_vars(app), addons_backend, _say) as session:
        record = session.record()
        click.echo(f"Resetting {record['name']}... ", nl=False)
        reset_postgres(record, psql)
        click.echo("done")


@click.command("redis:cli", context_settings=passthrough)
@app_dir_option
@backend_option
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[REDIS] [-- REDIS-CLI ARGS]")
@operate
def redis_cli(app_dir: Path, addons_backend: str, args: tuple[str, ...]) -> None:
    """Open redis-cli on the app's Redis (the running one, or started for this session)."""
    from dynosim.addons.manage import Session, redis_cli_args, redis_cli_binary

    app, state = _app(app_dir)
    wanted, rest = _split(args, app, state, "redis")
    declared = _pick(app, state, "redis", wanted, "heroku-redis")
    binary = redis_cli_binary()
    with Session(state, declared, _run_vars(app), addons_backend, _say) as session:
        argv, env = redis_cli_args(binary, session.url)
        code = _client([*argv, *rest], env)
    sys.exit(code)


# --- helpers ----------------------------------------------------------------------------------------


def _app(app_dir: Path) -> tuple[Any, Path]:
    from dynosim.app import load_app

    state = app_state(app_dir)
    return load_app(app_dir), state


def _manifest(app: Any) -> list[Any]:
    from dynosim.addons import manifest_requests

    return manifest_requests(app.manifest.addons)


def _active(app: Any) -> dict[str, Any] | None:
    from dynosim.runlock import RunLock

    return RunLock(app).active()


def _run_vars(app: Any) -> dict[str, str] | None:
    """The running release's config vars, when a run is active."""
    active = _active(app)
    if active is not None and isinstance(active.get("config_vars"), dict):
        return dict(active["config_vars"])
    return None


def _pick(app: Any, state: Path, service: str, wanted: str | None, example: str) -> Any:
    from dynosim.addons.manage import pick

    return pick(state, _manifest(app), service, wanted, example)


def _split(args: Sequence[str], app: Any, state: Path, service: str) -> tuple[str | None, list[str]]:
    """[DATABASE] then the client's own arguments. A first word that names none of the app's add-ons of
    this service is the client's (redis-cli's commands are words: `redis:cli PING`)."""
    if not args or args[0].startswith("-"):
        return None, list(args)
    from dynosim.addons.manage import find

    try:
        find(state, _manifest(app), args[0], service)
    except DynosimError:
        return None, list(args)
    return args[0], list(args[1:])


def _client(argv: list[str], env: dict[str, str]) -> int:
    """Runs a client on this terminal. Ctrl-C is the client's (psql cancels a query with it), not ours;
    the client gets the default handler back on exec."""
    previous = signal.signal(signal.SIGINT, lambda *_: None)
    try:
        try:
            return subprocess.call(argv, env=env)
        except OSError as error:
            raise DynosimError(f"cannot run {argv[0]}: {error.strerror}") from None
    finally:
        signal.signal(signal.SIGINT, previous)


def _say(line: str) -> None:
    click.echo(line, err=True)


def _vars(as_name: str, names: Sequence[str]) -> str:
    """The config vars an add-on sets; many of one prefix (Mailgun's six) as AS_* (n)."""
    if len(names) > 2 and all(n.startswith(as_name + "_") for n in names):
        return f"{as_name}_* ({len(names)} vars)"
    return ", ".join(names)


def _size(size: int | None) -> str:
    return "-" if size is None else byte_size(size)


def _local(when: datetime) -> str:
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _cut(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
