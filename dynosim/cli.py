"""The `dynosim` command: parse arguments, call the API, print. No logic here."""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import click

from . import __version__
from .errors import DynosimError


def _fail(exc: DynosimError) -> None:
    click.echo(f"dynosim: error: {exc}", err=True)
    sys.exit(exc.exit_code)


class LazyGroup(click.Group):
    """Subcommands that live in other modules are imported only when they are run (or listed),
    so `dynosim run` does not pay for importing `doctor` or the add-on commands."""

    lazy: dict[str, str] = {}  # command name -> "module:attribute"

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name not in self.commands:
            module, _, attribute = self.lazy[name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dynosim")
def main() -> None:
    """Run a Procfile app on this machine the way Heroku runs it."""


# extra words (`dynosim run python worker.py`) are kept, to point at `exec` instead of click's usage error
@main.command(context_settings={"allow_extra_args": True, "allow_interspersed_args": False})
@click.pass_context
@click.option("-C", "--app-dir", type=click.Path(file_okay=False, path_type=Path), default=".", help="The app's folder (default: here).")
@click.option("-f", "--formation", default="", metavar="TYPE=N,…", help="Dynos per process type for this run, e.g. web=2,worker=1 (default: the app's formation, as ps:scale left it).")
@click.option("-p", "--port", type=click.IntRange(1, 65535), default=None, help="The router's public port (default: $PORT, else 5000).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Where the router listens (0.0.0.0 to let other machines in).")
@click.option("--forwarded-port", type=click.Choice(["heroku", "public"]), default="heroku", show_default=True, help="X-Forwarded-Port for dynos: 80/443 as Heroku's router, or the router's port here.")
@click.option("--preboot", is_flag=True, help="Heroku's preboot: new web dynos are up before old ones stop, so restarts drop no request.")
@click.option("--size", default=None, help="Dyno size for every type (standard-1x, standard-2x, performance-m…).")
@click.option("--dirty", is_flag=True, help="Deploy the working tree, uncommitted files included.")
@click.option("--sandbox", type=click.Choice(["auto", "namespaces", "copy"]), default="auto", help="How dynos are contained.")
@click.option("--boot-timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True, help="Seconds a web dyno has to bind $PORT (R10).")
@click.option("--stop-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True, help="Seconds between SIGTERM and SIGKILL (R12).")
@click.option("--crash-backoff-scale", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Multiply Heroku's crash restart delays (10 min, 20, 40…) by this.")
@click.option("--cycle-every", default="24h", show_default=True, metavar="DURATION", help="Cycle each dyno this often (90s, 10m, 24h), plus Heroku's random spread.")
@click.option("--no-jitter", is_flag=True, help="Cycle exactly every --cycle-every, without the random spread.")
@click.option("--ephemeral-ignore", multiple=True, metavar="PATTERN", help="Also leave these paths (gitignore syntax) out of the ephemeral report.")
@click.option("--report-json", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write what every dyno wrote and lost to this JSON file.")
@click.option("--strict", is_flag=True, help="Exit 3 if any dyno wrote state that a restart loses.")
@click.option("--watch", is_flag=True, help="Deploy every new commit of the app's repository, as a push would.")
@click.option("--runtime-metrics", is_flag=True, help="Log Heroku's sample#memory_… lines for every dyno (log-runtime-metrics).")
@click.option("--addon", "addon", multiple=True, metavar="NAME[:PLAN]", help="Provision an add-on for this run too (heroku-postgresql, heroku-redis, searchbox…).")
@click.option("--addons", "addons_backend", type=click.Choice(["auto", "docker", "native"]), default="auto", show_default=True, help="Where add-ons not created yet are created (each runs where it was created).")
def run(ctx: click.Context, app_dir: Path, formation: str, port: int | None, host: str, forwarded_port: str, preboot: bool, size: str | None, dirty: bool, sandbox: str,
        boot_timeout: float, stop_timeout: float, crash_backoff_scale: float, cycle_every: str, no_jitter: bool,
        ephemeral_ignore: tuple[str, ...], report_json: Path | None, strict: bool, watch: bool, runtime_metrics: bool, addon: tuple[str, ...],
        addons_backend: str) -> None:
    """Build the app and run its Procfile as Heroku dynos."""
    import shlex

    if ctx.args:
        click.echo(f"dynosim: error: `dynosim run` runs the Procfile and takes no command; a one-off command is "
                   f"`dynosim exec {shlex.join(ctx.args)}` (Heroku's `heroku run`)", err=True)
        sys.exit(2)
    from .addons import AddonRequest
    from .supervisor import DEFAULT_PORT, Run, RunOptions
    from .ephemeral import DEFAULT_IGNORE
    from .formation import parse_formation
    from .runtime.dyno import Timeouts
    from .runtime.manager import CrashPolicy, CycleSchedule
    from .runtime.memory import MemoryPolicy

    try:
        if port is None:
            port = _env_port() or DEFAULT_PORT
        options = RunOptions(
            formation=parse_formation(formation),
            port=port,
            host=host,
            forwarded_port=forwarded_port,
            preboot=preboot,
            size=size,
            dirty=dirty,
            sandbox=sandbox,
            timeouts=Timeouts(boot=boot_timeout, stop=stop_timeout, memory=MemoryPolicy(runtime_metrics=runtime_metrics)),
            crash_policy=CrashPolicy().scaled(crash_backoff_scale),
            cycle=CycleSchedule(parse_duration(cycle_every, "--cycle-every"), jitter=not no_jitter),
            ephemeral_ignore=DEFAULT_IGNORE + ephemeral_ignore,
            report_json=report_json,
            strict=strict,
            watch=watch,
            addons=tuple(AddonRequest(plan) for plan in addon),
            addons_backend=addons_backend,
        )
        sys.exit(Run(app_dir, options).run())
    except DynosimError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        click.echo("dynosim: interrupted", err=True)
        sys.exit(130)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-C", "--app-dir", type=click.Path(file_okay=False, path_type=Path), default=".", help="The app's folder (default: here).")
@click.option("-s", "--size", default="standard-1x", show_default=True, help="Dyno size.")
@click.option("-e", "--env", "env", multiple=True, metavar="KEY=VALUE", help="Extra config var for this dyno only.")
@click.option("--sandbox", type=click.Choice(["auto", "namespaces", "copy"]), default="auto", help="How the dyno is contained.")
@click.option("--addons", "addons_backend", type=click.Choice(["auto", "docker", "native"]), default="auto", help="Where add-ons not created yet are created, when no `dynosim run` is active.")
@click.option("--dirty", is_flag=True, help="With no release yet: build the working tree, uncommitted files included.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec(app_dir: Path, size: str, env: tuple[str, ...], sandbox: str, addons_backend: str, dirty: bool, command: tuple[str, ...]) -> None:
    """Run COMMAND in a one-off dyno of the current release, like `heroku run` (a Procfile type runs its command)."""
    from .oneoff import OneOffOptions, run_oneoff

    try:
        extra = {}
        for item in env:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise DynosimError(f"-e {item!r}: write KEY=VALUE")
            extra[key] = value
        options = OneOffOptions(size=size, sandbox=sandbox, addons_backend=addons_backend, dirty=dirty, env=extra)
        sys.exit(run_oneoff(app_dir, command, options))
    except DynosimError as exc:
        _fail(exc)


def _env_port() -> int | None:
    value = os.environ.get("PORT", "")
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise DynosimError(f"PORT={value!r} in the environment is not a port number; unset it or pass --port")
    return int(value)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, flag: str) -> float:
    """`90s`, `10m`, `24h`, `1d` or plain seconds."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:], None)
    number = value[:-1] if unit else value
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise DynosimError(f"{flag} {text!r}: not a duration; write it like 90s, 10m or 24h") from None
    if seconds <= 0:
        raise DynosimError(f"{flag} {text!r}: must be more than zero")
    return seconds


# Operating a running app from another terminal (over the control socket), or its stored state.
app_dir_option = click.option(
    "-C", "--app-dir", type=click.Path(file_okay=False, path_type=Path), default=".", help="The app's folder (default: here)."
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def _state(app_dir: Path) -> Path:
    from .config import state_dir

    if not (app_dir / "Procfile").exists() and not (app_dir / ".dynosim").exists():
        raise DynosimError(f"{app_dir.resolve()}: not a dynosim app (no Procfile); run this in your app's folder or pass -C")
    return state_dir(app_dir.resolve())


def _print_json(value: object) -> None:
    import json

    click.echo(json.dumps(value, indent=1, sort_keys=True))


def _operate(fn):  # type: ignore[no-untyped-def]
    """Turn DynosimError into one line on stderr and its exit code."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return fn(*args, **kwargs)
        except DynosimError as exc:
            _fail(exc)

    return wrapper


@main.command()
@app_dir_option
@json_option
@_operate
def ps(app_dir: Path, as_json: bool) -> None:
    """The dynos of the running app, as `heroku ps` shows them."""
    import time

    from .control import request

    rows = request(_state(app_dir), "ps")
    if as_json:
        _print_json(rows)
        return
    by_type: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_type.setdefault(str(row["type"]), []).append(row)
    for kind, dynos in by_type.items():
        click.echo(f"=== {kind} ({dynos[0]['size']}): {dynos[0]['command']} ({len(dynos)})")
        for row in dynos:
            since = row["since"]
            age = f"{time.strftime('%Y/%m/%d %H:%M:%S', time.localtime(float(since)))}" if since else ""  # type: ignore[arg-type]
            memory = f" {row['memory_mb']:.0f} MB" if row.get("memory_mb") else ""
            click.echo(f"{row['name']}: {row['state']} {age}{memory}")
        click.echo()


@main.command("ps:scale")
@app_dir_option
@click.argument("counts", nargs=-1, required=True)
@_operate
def ps_scale(app_dir: Path, counts: tuple[str, ...]) -> None:
    """Scale process types: `dynosim ps:scale web=2 worker=0` (kept for the next runs too)."""
    from .control import NoRunError, request
    from .formation import FormationStore, parse_formation
    from .procfile import load_procfile

    wanted = parse_formation(" ".join(counts), "ps:scale")
    state = _state(app_dir)
    try:
        result = request(state, "ps:scale", counts=wanted)
    except NoRunError:
        FormationStore(state).scale(load_procfile(app_dir.resolve()), wanted)
        click.echo("Scaling dynos... done, " + ", ".join(f"{k} at {v}" for k, v in wanted.items())
                   + " (no run is active: the next `dynosim run` starts this formation)")
        return
    click.echo("Scaling dynos... done, now running " + ", ".join(f"{k} at {v}" for k, v in result.items()))


@main.command("ps:resize")
@app_dir_option
@click.argument("sizes", nargs=-1, required=True)
@_operate
def ps_resize(app_dir: Path, sizes: tuple[str, ...]) -> None:
    """Change dyno sizes: `dynosim ps:resize web=standard-2x` (memory quota, WEB_CONCURRENCY; kept for the next runs too)."""
    from .control import NoRunError, request
    from .formation import FormationStore
    from .procfile import load_procfile

    wanted: dict[str, str] = {}
    for item in sizes:
        kind, sep, size = item.partition("=")
        if not sep or not kind or not size:
            raise DynosimError(f"ps:resize {item!r}: write TYPE=SIZE, e.g. web=standard-2x")
        wanted[kind] = size
    state = _state(app_dir)
    try:
        result = request(state, "ps:resize", sizes=wanted)
    except NoRunError:
        stored = FormationStore(state).resize(load_procfile(app_dir.resolve()), wanted)
        click.echo("Resizing dynos... done: " + ", ".join(f"{k} {stored.sizes[k]}" for k in wanted)
                   + " (no run is active: the next `dynosim run` uses these sizes)")
        return
    click.echo("Resizing and restarting the specified dynos... done: " + ", ".join(f"{k} {v}" for k, v in result.items()))


@main.command("ps:restart")
@app_dir_option
@click.argument("target", required=False)
@_operate
def ps_restart(app_dir: Path, target: str | None) -> None:
    """Restart all dynos, a process type (web) or one dyno (web.1)."""
    from .control import request

    names = request(_state(app_dir), "restart", target=target)
    click.echo(f"Restarting {', '.join(names) or 'no'} dynos... done")


main.add_command(ps_restart, "restart")


@main.command()
@app_dir_option
@click.option("-n", "--num", default=100, show_default=True, type=click.IntRange(1, 1500), help="How many lines (logplex keeps 1,500).")
@click.option("-t", "--tail", is_flag=True, help="Keep streaming new lines.")
@click.option("-d", "--dyno", default=None, help="Only this dyno (web.1), type (web), router or api.")
@click.option("-s", "--source", type=click.Choice(["app", "heroku", "dynosim"]), default=None, help="Only this source.")
@json_option
@_operate
def logs(app_dir: Path, num: int, tail: bool, dyno: str | None, source: str | None, as_json: bool) -> None:
    """The running app's log stream, as `heroku logs`."""
    from .control import request, stream

    state = _state(app_dir)
    if tail:
        try:
            for line in stream(state, "logs:tail", n=num, dyno=dyno, source=source):
                click.echo(_json_line(line) if as_json else line)
        except KeyboardInterrupt:
            pass
        return
    lines = request(state, "logs", n=num, dyno=dyno, source=source)
    if as_json:
        _print_json([_json_fields(line) for line in lines])
    else:
        for line in lines:
            click.echo(line)


def _json_fields(line: str) -> dict[str, str]:
    import re

    match = re.match(r"^(\S+) (\w+)\[([^\]]+)\]: (.*)$", line, re.S)
    if not match:
        return {"line": line}
    return dict(zip(("time", "source", "dyno", "text"), match.groups()))


def _json_line(line: str) -> str:
    import json

    return json.dumps(_json_fields(line))


def _config_values(state: Path, app_dir: Path) -> dict[str, str]:
    from .control import NoRunError, request

    try:
        return dict(request(state, "config"))
    except NoRunError:
        from .app import load_app

        return dict(load_app(app_dir).config_vars)


@main.command()
@app_dir_option
@click.option("-s", "--shell", is_flag=True, help="KEY=value lines, for a shell or a .env file.")
@json_option
@_operate
def config(app_dir: Path, shell: bool, as_json: bool) -> None:
    """The config vars (of the running release, or as stored when no run is active)."""
    import shlex

    values = _config_values(_state(app_dir), app_dir)
    if as_json:
        _print_json(values)
    elif shell:
        for key, value in sorted(values.items()):
            click.echo(f"{key}={shlex.quote(value)}")
    else:
        width = max((len(k) for k in values), default=0) + 1
        for key, value in sorted(values.items()):
            click.echo(f"{key + ':':<{width}} {value}")


@main.command("config:get")
@app_dir_option
@click.argument("name")
@_operate
def config_get(app_dir: Path, name: str) -> None:
    """One config var's value."""
    values = _config_values(_state(app_dir), app_dir)
    if name not in values:
        raise DynosimError(f"config var {name} is not set")
    click.echo(values[name])


@main.command("config:set")
@app_dir_option
@click.argument("assignments", nargs=-1, required=True)
@_operate
def config_set(app_dir: Path, assignments: tuple[str, ...]) -> None:
    """Set config vars (KEY=VALUE…): a new release that restarts every dyno."""
    changes: dict[str, str | None] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep:
            raise DynosimError(f"config:set {item!r}: write KEY=VALUE")
        changes[key] = value
    _change_config(app_dir, changes)


@main.command("config:unset")
@app_dir_option
@click.argument("names", nargs=-1, required=True)
@_operate
def config_unset(app_dir: Path, names: tuple[str, ...]) -> None:
    """Unset config vars set with config:set: a new release that restarts every dyno."""
    _change_config(app_dir, {name: None for name in names})


def _change_config(app_dir: Path, changes: dict[str, str | None]) -> None:
    from .config import ConfigStore
    from .control import NoRunError, request
    from .manifest import ENV_NAME

    for name in changes:
        if not ENV_NAME.match(name):
            raise DynosimError(f"{name!r} is not a valid config var name; use letters, digits and _, not starting with a digit")
    state = _state(app_dir)
    names = ", ".join(changes)
    verb = "Unsetting" if all(value is None for value in changes.values()) else "Setting"
    try:
        version = request(state, "config:set", changes=changes)
        click.echo(f"{verb} {names} and restarting... done, v{version}")
    except NoRunError:
        ConfigStore(state).change(changes)
        click.echo(f"{verb} {names}... done (no run is active: the next `dynosim run` uses it)")


@main.command()
@app_dir_option
@json_option
@_operate
def releases(app_dir: Path, as_json: bool) -> None:
    """The release history, newest first, as `heroku releases` shows it."""
    import time

    from .manifest import load_manifest
    from .releases import ReleaseHistory

    rows = ReleaseHistory(_state(app_dir)).listing()
    if as_json:
        _print_json(rows)
        return
    name = load_manifest(app_dir.resolve()).name or app_dir.resolve().name
    if not rows:
        click.echo(f"{name} has no releases.")
        return
    current = next((row for row in rows if row["current"]), None)
    click.echo(f"=== {name} Releases" + (f" - Current: v{current['version']}" if current else ""))
    marks = {"pending": " release command executing", "failed": " release command failed"}  # Heroku's words
    for row in rows:
        when = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(float(row["created_at"])))  # type: ignore[arg-type]
        click.echo(f"v{row['version']}  {row['description']}{marks.get(str(row['status']), '')}  {row['user']}  {when}")


@main.command()
@_operate
def certs() -> None:
    """Where dynosim's local certificate authority is, and how to trust it (made on first use)."""
    from .ca import LocalCA, trust_instructions

    ca = LocalCA.load_or_create(say=lambda line: click.echo(line, err=True))
    ca.server_cert(say=lambda line: click.echo(line, err=True))
    click.echo(trust_instructions(ca))


@main.command("maintenance")
@app_dir_option
@_operate
def maintenance(app_dir: Path) -> None:
    """Whether maintenance mode is on (the router answers H80)."""
    from .control import request

    click.echo("on" if request(_state(app_dir), "maintenance") else "off")


@main.command("maintenance:on")
@app_dir_option
@_operate
def maintenance_on(app_dir: Path) -> None:
    """Serve Heroku's maintenance page (H80) to every request."""
    from .control import request

    request(_state(app_dir), "maintenance", on=True)
    click.echo("Enabling maintenance mode... done")


@main.command("maintenance:off")
@app_dir_option
@_operate
def maintenance_off(app_dir: Path) -> None:
    """Route requests to the web dynos again."""
    from .control import request

    request(_state(app_dir), "maintenance", on=False)
    click.echo("Disabling maintenance mode... done")


LazyGroup.lazy.update({
    "doctor": "dynosim.doctor.command:doctor",
    "addons": "dynosim.addons.commands:addons",
    "addons:create": "dynosim.addons.commands:addons_create",
    "addons:destroy": "dynosim.addons.commands:addons_destroy",
    "mail": "dynosim.addons.commands:mail",
    "mail:show": "dynosim.addons.commands:mail_show",
    "pg:psql": "dynosim.addons.commands:pg_psql",
    "pg:reset": "dynosim.addons.commands:pg_reset",
    "redis:cli": "dynosim.addons.commands:redis_cli",
})


@main.command()
@app_dir_option
@_operate
def deploy(app_dir: Path) -> None:
    """Build HEAD and roll the running app onto it, as `git push heroku main` would."""
    import dataclasses

    from .app import load_app
    from .buildpack import build_slug, default_cache_dir
    from .control import request

    state = _state(app_dir)
    request(state, "ping")  # no run: say so before building anything
    slug = build_slug(app_dir.resolve(), cache_dir=default_cache_dir(), config_vars=load_app(app_dir.resolve()).config_vars,
                      say=click.echo)
    fields = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(slug).items()}
    click.echo("-----> Launching...")
    version = request(state, "deploy", slug=fields)
    click.echo(f"       Released v{version}")
