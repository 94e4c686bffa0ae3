"""The `dynosim` command: the group, `run` and `exec`; every other command lives with its concept and
is loaded by name from the lazy table at the end. Parse arguments, call the API, print. No logic here."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import ClassVar

import click

from . import __version__
from .clikit import app_dir_option, assignments, fail
from .errors import DynosimError


class LazyGroup(click.Group):
    """Subcommands that live in other modules are imported only when they are run (or listed),
    so `dynosim run` does not pay for importing `doctor` or the add-on commands."""

    lazy: ClassVar[dict[str, str]] = {}  # command name -> "module:attribute"

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name not in self.commands:
            module, _, attribute = self.lazy[name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)


def _no_color(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        from .colour import disable

        disable()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dynosim")
@click.option(
    "--no-color",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_no_color,
    help="No colour in anything dynosim prints (as NO_COLOR=1 does).",
)
def main() -> None:
    """Run a Procfile app on this machine the way Heroku runs it."""


# extra words (`dynosim run python worker.py`) are kept, to point at `exec` instead of click's usage error
@main.command(context_settings={"allow_extra_args": True, "allow_interspersed_args": False})
@click.pass_context
@app_dir_option
@click.option(
    "-f",
    "--procfile",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Another Procfile than the app's, relative to its folder (as `heroku local -f`).",
)
@click.option(
    "-e",
    "--env",
    "env_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Another env file than the app's .env, relative to its folder, read as .env is (as `heroku local -e`).",
)
@click.option(
    "--formation",
    default="",
    metavar="TYPE=N,…",
    help="Dynos per process type for this run, e.g. web=2,worker=1 (default: the app's formation, as ps:scale "
    "left it).",
)
@click.option(
    "-p",
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="The router's public port (default: $PORT, else 5000).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Where the router listens (0.0.0.0 to let other machines in).",
)
@click.option(
    "--forwarded-port",
    type=click.Choice(["heroku", "public"]),
    default="heroku",
    show_default=True,
    help="X-Forwarded-Port for dynos: 80/443 as Heroku's router, or the router's port here.",
)
@click.option(
    "--preboot",
    is_flag=True,
    help="Heroku's preboot: new web dynos are up before old ones stop, so restarts drop no request.",
)
@click.option("--size", default=None, help="Dyno size for every type (standard-1x, standard-2x, performance-m…).")
@click.option("--dirty", is_flag=True, help="Deploy the working tree, uncommitted files included.")
@click.option(
    "--sandbox", type=click.Choice(["auto", "namespaces", "copy"]), default="auto", help="How dynos are contained."
)
@click.option(
    "--boot-timeout",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds a web dyno has to bind $PORT (R10).",
)
@click.option(
    "--stop-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL (R12).",
)
@click.option(
    "--crash-backoff-scale",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Multiply Heroku's crash restart delays (10 min, 20, 40…) by this.",
)
@click.option(
    "--cycle-every",
    default="24h",
    show_default=True,
    metavar="DURATION",
    help="Cycle each dyno this often (90s, 10m, 24h), plus Heroku's random spread.",
)
@click.option("--no-jitter", is_flag=True, help="Cycle exactly every --cycle-every, without the random spread.")
@click.option(
    "--clock-speed",
    type=click.FloatRange(min=1),
    default=1.0,
    show_default=True,
    help="Run Scheduler jobs' clock and daily dyno cycling this many times faster (3600: an hour a second).",
)
@click.option(
    "--ephemeral-ignore",
    multiple=True,
    metavar="PATTERN",
    help="Also leave these paths (gitignore syntax) out of the ephemeral report.",
)
@click.option(
    "--report-json",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write what every dyno wrote and lost to this JSON file.",
)
@click.option("--strict", is_flag=True, help="Exit 3 if any dyno wrote state that a restart loses.")
@click.option(
    "--faults",
    "fault_plan",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help='A plan of timed faults, {"faults": [{"at": "10s", "kind": "addon-outage", "target": "heroku-postgresql", '
    '"for": "5s"}]}, counted from when every dyno is up; a resilience report at the end.',
)
@click.option(
    "--chaos",
    type=int,
    default=None,
    metavar="SEED",
    help="Seeded random faults among the kinds that fit the app; the same seed gives the same faults.",
)
@click.option(
    "--chaos-rate",
    default="1/min",
    show_default=True,
    metavar="N/TIME",
    help="How often --chaos strikes on average (2/30s, 6/h).",
)
@click.option("--watch", is_flag=True, help="Deploy every new commit of the app's repository, as a push would.")
@click.option(
    "--runtime-metrics", is_flag=True, help="Log Heroku's sample#memory_… lines for every dyno (log-runtime-metrics)."
)
@click.option("--no-metrics", is_flag=True, help="Collect no 1-second metrics for `dynosim metrics` this run.")
@click.option(
    "--dashboard-port",
    type=click.IntRange(0, 65535),
    default=None,
    metavar="PORT",
    help="Serve the dashboard on 127.0.0.1:PORT (default: the router's port + 1; 0: any free port).",
)
@click.option("--no-dashboard", is_flag=True, help="Serve no dashboard this run.")
@click.option(
    "--addon",
    "addon",
    multiple=True,
    metavar="NAME[:PLAN]",
    help="Provision an add-on for this run too (heroku-postgresql, heroku-redis, searchbox…).",
)
@click.option(
    "--addons",
    "addons_backend",
    type=click.Choice(["auto", "docker", "native"]),
    default="auto",
    show_default=True,
    help="Where add-ons not created yet are created (each runs where it was created).",
)
def run(
    ctx: click.Context,
    *,
    app_dir: Path,
    procfile: Path | None,
    env_file: Path | None,
    formation: str,
    port: int | None,
    host: str,
    forwarded_port: str,
    preboot: bool,
    size: str | None,
    dirty: bool,
    sandbox: str,
    boot_timeout: float,
    stop_timeout: float,
    crash_backoff_scale: float,
    cycle_every: str,
    clock_speed: float,
    no_jitter: bool,
    ephemeral_ignore: tuple[str, ...],
    report_json: Path | None,
    strict: bool,
    fault_plan: Path | None,
    chaos: int | None,
    chaos_rate: str,
    watch: bool,
    runtime_metrics: bool,
    no_metrics: bool,
    dashboard_port: int | None,
    no_dashboard: bool,
    addon: tuple[str, ...],
    addons_backend: str,
) -> None:
    """Build the app and run its Procfile as Heroku dynos."""
    import shlex

    if ctx.args:
        click.echo(
            f"dynosim: error: `dynosim run` runs the Procfile and takes no command; a one-off command is "
            f"`dynosim exec {shlex.join(ctx.args)}` (Heroku's `heroku run`)",
            err=True,
        )
        sys.exit(2)
    from .addons import AddonRequest
    from .ephemeral import DEFAULT_IGNORE
    from .faults.plan import Chaos, load_plan, parse_rate
    from .formation import parse_formation
    from .runtime.dyno import Timeouts
    from .runtime.manager import CrashPolicy, CycleSchedule
    from .runtime.memory import MemoryPolicy
    from .supervisor import DEFAULT_PORT, Run, RunOptions, StopSignal

    try:
        procfile, formation = _procfile_or_old_formation(app_dir, procfile, formation)
        for flag, given in (("-f", procfile), ("-e", env_file)):
            if given is not None and not (app_dir / given).is_file():
                raise DynosimError(
                    f"{flag} {given}: no such file in {app_dir.resolve()}; name an existing file, or leave "
                    f"{flag} out for the app's own"
                )
        if fault_plan is not None and chaos is not None:
            raise DynosimError("--faults and --chaos: give one of them (a plan's faults, or seeded random ones)")
        if port is None:
            port = _env_port() or DEFAULT_PORT
        options = RunOptions(
            procfile=procfile and (app_dir / procfile).resolve(),
            env_file=env_file and (app_dir / env_file).resolve(),
            formation=parse_formation(formation),
            port=port,
            host=host,
            forwarded_port=forwarded_port,
            preboot=preboot,
            size=size,
            dirty=dirty,
            sandbox=sandbox,
            timeouts=Timeouts(
                boot=boot_timeout, stop=stop_timeout, memory=MemoryPolicy(runtime_metrics=runtime_metrics)
            ),
            crash_policy=CrashPolicy().scaled(crash_backoff_scale),
            cycle=CycleSchedule(parse_duration(cycle_every, "--cycle-every") / clock_speed, jitter=not no_jitter),
            clock_speed=clock_speed,
            ephemeral_ignore=DEFAULT_IGNORE + ephemeral_ignore,
            report_json=report_json,
            strict=strict,
            faults=load_plan(fault_plan) if fault_plan is not None else (),
            chaos=Chaos(chaos, parse_rate(chaos_rate)) if chaos is not None else None,
            watch=watch,
            addons=tuple(AddonRequest(plan) for plan in addon),
            addons_backend=addons_backend,
            metrics=not no_metrics,
            dashboard=not no_dashboard,
            dashboard_port=dashboard_port,
        )
        sys.exit(Run(app_dir, options).run())
    except DynosimError as exc:
        fail(exc)
    except StopSignal as stopped:
        click.echo(f"dynosim: interrupted by {stopped}", err=True)
        sys.exit(128 + stopped.signum)
    except KeyboardInterrupt:
        click.echo("dynosim: interrupted", err=True)
        sys.exit(130)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@app_dir_option
@click.option("-s", "--size", default="standard-1x", show_default=True, help="Dyno size.")
@click.option("-e", "--env", "env", multiple=True, metavar="KEY=VALUE", help="Extra config var for this dyno only.")
@click.option(
    "--sandbox", type=click.Choice(["auto", "namespaces", "copy"]), default="auto", help="How the dyno is contained."
)
@click.option(
    "--addons",
    "addons_backend",
    type=click.Choice(["auto", "docker", "native"]),
    default="auto",
    help="Where add-ons not created yet are created, when no `dynosim run` is active.",
)
@click.option("--dirty", is_flag=True, help="With no release yet: build the working tree, uncommitted files included.")
@click.option(
    "--detach", is_flag=True, help="Run it in the background, its output on the log stream (`heroku run:detached`)."
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec(
    *,
    app_dir: Path,
    size: str,
    env: tuple[str, ...],
    sandbox: str,
    addons_backend: str,
    dirty: bool,
    detach: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND in a one-off dyno of the current release, like `heroku run` (a Procfile type runs its command)."""
    from .oneoff import OneOffOptions, run_oneoff

    try:
        extra = assignments(env, "-e")
        options = OneOffOptions(size=size, sandbox=sandbox, addons_backend=addons_backend, dirty=dirty, env=extra)
        if detach:
            from .app import load_app
            from .oneoff import start_detached

            started = start_detached(app_dir, command, options)
            click.echo(
                f"Running {started.command} on ⬢ {load_app(app_dir).name}... done, {started.name} ({started.size})"
            )
            click.echo(f"Run dynosim logs --dyno {started.name} to view the output.")
            return
        sys.exit(run_oneoff(app_dir, command, options).status)
    except DynosimError as exc:
        fail(exc)


def _procfile_or_old_formation(app_dir: Path, procfile: Path | None, formation: str) -> tuple[Path | None, str]:
    """`-f` was --formation before it became the Procfile, as in `heroku local` and honcho. A value that
    is no file and reads as a formation (web=2,worker=1) is still taken as one, with a warning."""
    import re

    if procfile is None or (app_dir / procfile).exists() or not re.fullmatch(r"[\w-]+=\S*", str(procfile)):
        return procfile, formation
    click.echo(
        f"dynosim: warning: -f names the Procfile now (as in `heroku local`); write --formation {procfile}", err=True
    )
    return None, formation or str(procfile)


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
    unit = _UNITS.get(value[-1:])
    number = value[:-1] if unit else value
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        raise DynosimError(f"{flag} {text!r}: not a duration; write it like 90s, 10m or 24h") from None
    if seconds <= 0:
        raise DynosimError(f"{flag} {text!r}: must be more than zero")
    return seconds


LazyGroup.lazy.update(
    {
        "ps": "dynosim.commands.ps:ps",
        "ps:scale": "dynosim.commands.ps:ps_scale",
        "ps:resize": "dynosim.commands.ps:ps_resize",
        "ps:restart": "dynosim.commands.ps:ps_restart",
        "restart": "dynosim.commands.ps:ps_restart",
        "logs": "dynosim.commands.logs:logs",
        "metrics": "dynosim.commands.metrics:metrics",
        "dashboard": "dynosim.commands.dashboard:dashboard",
        "snapshots": "dynosim.commands.snapshots:snapshots",
        "snapshot:save": "dynosim.commands.snapshots:snapshot_save",
        "snapshot:load": "dynosim.commands.snapshots:snapshot_load",
        "snapshot:delete": "dynosim.commands.snapshots:snapshot_delete",
        "config": "dynosim.commands.config:config",
        "config:get": "dynosim.commands.config:config_get",
        "config:set": "dynosim.commands.config:config_set",
        "config:unset": "dynosim.commands.config:config_unset",
        "releases": "dynosim.commands.releases:releases",
        "deploy": "dynosim.commands.releases:deploy",
        "releases:rollback": "dynosim.commands.releases:rollback",
        "releases:info": "dynosim.commands.releases:info",
        "ps:stop": "dynosim.commands.ps:ps_stop",
        "labs": "dynosim.commands.labs:labs",
        "labs:enable": "dynosim.commands.labs:labs_enable",
        "labs:disable": "dynosim.commands.labs:labs_disable",
        "maintenance": "dynosim.commands.maintenance:maintenance",
        "maintenance:on": "dynosim.commands.maintenance:maintenance_on",
        "maintenance:off": "dynosim.commands.maintenance:maintenance_off",
        "certs": "dynosim.commands.certs:certs",
        "scheduler": "dynosim.commands.scheduler:scheduler",
        "scheduler:add": "dynosim.commands.scheduler:scheduler_add",
        "scheduler:remove": "dynosim.commands.scheduler:scheduler_remove",
        "scheduler:run": "dynosim.commands.scheduler:scheduler_run",
        "ci": "dynosim.commands.ci:ci",
        "faults": "dynosim.commands.faults:faults",
        "faults:add": "dynosim.commands.faults:faults_add",
        "faults:remove": "dynosim.commands.faults:faults_remove",
        "faults:clear": "dynosim.commands.faults:faults_clear",
        "doctor": "dynosim.doctor.command:doctor",
        "addons": "dynosim.addons.commands:addons",
        "addons:create": "dynosim.addons.commands:addons_create",
        "addons:destroy": "dynosim.addons.commands:addons_destroy",
        "mail": "dynosim.addons.commands:mail",
        "mail:show": "dynosim.addons.commands:mail_show",
        "pg:psql": "dynosim.addons.commands:pg_psql",
        "pg:reset": "dynosim.addons.commands:pg_reset",
        "pg:pull": "dynosim.commands.pg_transfer:pg_pull",
        "pg:push": "dynosim.commands.pg_transfer:pg_push",
        "redis:cli": "dynosim.addons.commands:redis_cli",
        "pg:backups": "dynosim.commands.pg_backups:backups_list",
        "pg:backups:capture": "dynosim.commands.pg_backups:backups_capture",
        "pg:backups:info": "dynosim.commands.pg_backups:backups_info",
        "pg:backups:restore": "dynosim.commands.pg_backups:backups_restore",
        "pg:backups:download": "dynosim.commands.pg_backups:backups_download",
        "pg:backups:url": "dynosim.commands.pg_backups:backups_url",
        "pg:backups:delete": "dynosim.commands.pg_backups:backups_delete",
        "pg:backups:schedule": "dynosim.commands.pg_backups:backups_schedule",
        "pg:backups:schedules": "dynosim.commands.pg_backups:backups_schedules",
        "pg:backups:unschedule": "dynosim.commands.pg_backups:backups_unschedule",
        "pg": "dynosim.commands.pg:pg_info",  # Heroku's alias of pg:info
        "pg:info": "dynosim.commands.pg:pg_info",
        "pg:ps": "dynosim.commands.pg:pg_ps",
        "pg:killall": "dynosim.commands.pg:pg_killall",
        "pg:credentials": "dynosim.commands.pg:pg_credentials",
        "pg:credentials:url": "dynosim.commands.pg:pg_credentials_url",
        "pg:credentials:rotate": "dynosim.commands.pg:pg_credentials_rotate",
        "redis:info": "dynosim.commands.redis:redis_info",
        "redis:maxmemory": "dynosim.commands.redis:redis_maxmemory",
        "redis:timeout": "dynosim.commands.redis:redis_timeout",
        "redis:credentials": "dynosim.commands.redis:redis_credentials",
        "image": "dynosim.commands.image:image",
        "destroy": "dynosim.commands.releases:destroy",
        "export": "dynosim.commands.export:export",
    }
)
