"""`redis:info`, `redis:maxmemory`, `redis:timeout`, `redis:credentials`: Heroku's verbs and output
(its CLI's commands/redis/*.js) on the app's Redis, the running one or one started for the command.
Parse, call `addons.redis_admin`, print. (`redis:cli` is with the other clients, in addons/commands.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..addons.commands import backend_option
from ..clikit import app_dir_option, app_state, confirm_destructive, json_option, operate, print_json, print_table

database_argument = click.argument("database", metavar="[DATABASE]", required=False)


@click.command("redis:info")
@app_dir_option
@backend_option
@json_option
@database_argument
@operate
def redis_info(app_dir: Path, addons_backend: str, as_json: bool, database: str | None) -> None:
    """Information about the app's Redis: plan, version, timeout, eviction policy (DATABASE: which one)."""
    from ..addons import redis_admin
    from ..addons.manage import Session

    app, state, requests = _app(app_dir)
    found = []
    for declared in _chosen(state, requests, database):
        with Session(state, declared, _run_vars(app), addons_backend, _say) as session:
            found.append(redis_admin.info(session, app.name))
    if as_json:
        print_json([one.as_json() for one in found])
        return
    for one in found:
        click.echo(f"=== {one.name} ({', '.join(one.config_vars)})")
        print_table(None, [(f"{name}:", value) for name, value in one.fields()], gap=1)


@click.command("redis:maxmemory")
@app_dir_option
@backend_option
@click.option("-p", "--policy", required=True, help="The key eviction policy: noeviction, allkeys-lru… (see above).")
@database_argument
@operate
def redis_maxmemory(app_dir: Path, addons_backend: str, policy: str, database: str | None) -> None:
    """Set the key eviction policy when the instance reaches its memory limit.

    \b
    Available policies for key eviction include:
      noeviction      # returns errors when memory limit is reached
      allkeys-lfu     # removes less frequently used keys first
      volatile-lfu    # removes less frequently used keys first that have an expiry set
      allkeys-lru     # removes less recently used keys first
      volatile-lru    # removes less recently used keys first that have an expiry set
      allkeys-random  # evicts random keys
      volatile-random # evicts random keys but only those that have an expiry set
      volatile-ttl    # only evicts keys with an expiry set and a short TTL
    """
    from ..addons import redis_admin
    from ..addons.manage import Session

    redis_admin.check_policy(policy)
    app, state, requests = _app(app_dir)
    declared = _one(state, requests, database)
    with Session(state, declared, _run_vars(app), addons_backend, _say) as session:
        name = str(session.record()["name"])
        redis_admin.set_policy(session, policy)
    click.echo(f"Maxmemory policy for {name} ({_vars(declared)}) set to {policy}.")
    click.echo(f"{policy} {redis_admin.POLICIES[policy]}.")


@click.command("redis:timeout")
@app_dir_option
@backend_option
@click.option("-s", "--seconds", type=int, required=True, help="Idle seconds before a connection is closed (0: never).")
@database_argument
@operate
def redis_timeout(app_dir: Path, addons_backend: str, seconds: int, database: str | None) -> None:
    """Set the number of seconds to wait before killing idle connections. Zero: connections are never closed."""
    from ..addons import redis_admin
    from ..addons.manage import Session

    redis_admin.check_timeout(seconds)
    app, state, requests = _app(app_dir)
    declared = _one(state, requests, database)
    with Session(state, declared, _run_vars(app), addons_backend, _say) as session:
        name = str(session.record()["name"])
        redis_admin.set_timeout(session, seconds)
    click.echo(f"Timeout for {name} ({_vars(declared)}) set to {seconds} seconds.")
    if seconds == 0:
        click.echo("Connections to the Redis instance can idle indefinitely.")
    else:
        click.echo(f"Connections to the Redis instance will be stopped after idling for {seconds} seconds.")


@click.command("redis:credentials")
@app_dir_option
@backend_option
@click.option("--reset", is_flag=True, help="Reset the credentials: a new password, every client disconnected.")
@click.option("-c", "--confirm", metavar="APP", default=None, help="With --reset, the app's name: skips the question.")
@database_argument
@operate
def redis_credentials(
    app_dir: Path, addons_backend: str, reset: bool, confirm: str | None, database: str | None
) -> None:
    """Show the Redis URL, or with --reset give it a new password (a running app gets a new release)."""
    from .. import api
    from ..addons import redis_admin
    from ..addons.manage import Session

    app, state, requests = _app(app_dir)
    declared = _one(state, requests, database)
    if not reset:
        with Session(state, declared, _run_vars(app), addons_backend, _say) as session:
            click.echo(session.url)
        return
    entry = declared.entry
    confirm_destructive(
        app.name, confirm, f"This command will reset the credentials of {entry.as_name} of app {app.name}: "
        "its clients are disconnected and the old password stops working"
    )  # fmt: skip
    with Session(state, declared, _run_vars(app), addons_backend, _say) as session:
        name = str(session.record()["name"])
        click.echo(f"Resetting credentials for {name}")
        redis_admin.reset_credentials(session)
    addon = entry.request.plan.partition(":")[0]
    applied = api.addon_changed(app_dir, name, f"Update {entry.as_name} by {addon}", f"{addon}@addons.heroku.com")
    if applied.live:
        _say(f"Released v{applied.value}: every dyno restarts with the new {_vars(declared)}")


# --- helpers ----------------------------------------------------------------------------------------


def _app(app_dir: Path) -> tuple[Any, Path, list[Any]]:
    from ..addons import manifest_requests
    from ..app import load_app

    state = app_state(app_dir)
    app = load_app(app_dir)
    return app, state, manifest_requests(app.manifest.addons)


def _one(state: Path, requests: list[Any], database: str | None) -> Any:
    from ..addons.manage import pick

    return pick(state, requests, "redis", database, "heroku-redis")


def _chosen(state: Path, requests: list[Any], database: str | None) -> list[Any]:
    """DATABASE, or every Redis add-on the app declares, as Heroku's redis:info shows them all."""
    from ..addons.manage import declarations

    if database is not None:
        return [_one(state, requests, database)]
    found = [d for d in declarations(state, requests) if d.entry.offering.service == "redis"]
    return found or [_one(state, requests, None)]  # none: pick says so, and how to add one


def _run_vars(app: Any) -> dict[str, str] | None:
    """The running release's config vars, when a run is active."""
    from ..runlock import RunLock

    active = RunLock(app).active()
    found = active.get("config_vars") if active is not None else None
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else None


def _vars(declared: Any) -> str:
    from ..addons.catalogue import var_names

    return ", ".join(var_names(declared.entry))


def _say(line: str) -> None:
    click.echo(line, err=True)
