"""What the formats that run the app on a host, without an engine (systemd, supervisord), share: honcho's
processes (`expand_processes`: one per dyno of the formation, web.1 on 5000, web.2 on 5001, the next type
from 5100, as honcho numbers them) with dynosim's env applied: DYNO, PORT, HOME, the config vars.

The slug is where Heroku has it, /app (copy it out of `dynosim image`'s image), each command run after
its `.profile.d` scripts, as a dyno's. Add-ons do not run here: their vars are for the user to set.
"""

from __future__ import annotations

from typing import Any

from dynosim.export.model import APP_ROOT, ROUTER_PORT, AppModel, ExportError

SHELL = "/bin/bash"
# what a dyno's start does before the command (honcho's templates quote the command in '…': none here)
PROFILE = f'for f in {APP_ROOT}/.profile.d/*.sh; do [ -r "$f" ] && . "$f"; done; '


def processes(model: AppModel, fmt: str, env: dict[str, str]) -> list[Any]:
    """honcho's ProcessParams, one per dyno, each with `env` and its own DYNO and PORT; ExportError for a
    command honcho's templates cannot quote."""
    from honcho.environ import expand_processes

    for name, command in [(p.name, p.command) for p in model.processes] + [("release", model.release_command or "")]:
        if "'" in command:
            raise ExportError(
                f"{fmt}: the {name} command holds a ' and honcho's {fmt} template quotes commands in '…'; "
                "write it without one (a script in the app, say)"
            )
    expanded = expand_processes(
        {p.name: PROFILE + p.command for p in model.processes},
        concurrency={p.name: p.quantity for p in model.processes},
        env=env,
        port=ROUTER_PORT,
    )
    sizes = {p.name: p.size for p in model.processes}
    return [
        p._replace(env={**p.env, **model.size_env(sizes[p.name.rsplit(".", 1)[0]]), "DYNO": p.name}) for p in expanded
    ]


def environment(model: AppModel) -> dict[str, str]:
    """The config vars every dyno gets, with the platform's HOME (PORT and DYNO are each dyno's own); not
    the add-ons' (they point at a cluster's host names)."""
    return {**model.config_vars, "HOME": APP_ROOT}


def context(model: AppModel) -> dict[str, Any]:
    """honcho's export context, as `honcho export` makes it: the app's name, its user of the same name."""
    return {
        "app": model.slug,
        "app_root": APP_ROOT,
        "log": f"/var/log/{model.slug}",
        "shell": SHELL,
        "user": model.slug,
    }


def addon_vars(model: AppModel) -> list[str]:
    """The add-ons' vars, which the user sets to where each add-on runs."""
    return [name for addon in model.addons for name in addon.var_names]
