"""`dynosim export supervisord`: a supervisord include file of the formation, through honcho's supervisord
exporter (a program per dyno, a group of the app), with dynosim's env and Heroku's stop in each program
(SIGTERM, not honcho's QUIT, to the whole process group, SIGKILL 30 s later); the release phase as a
program run once that starts the group when it succeeds (`supervisorctl start <app>:*`), the group's
programs waiting for it (supervisord orders none: it starts programs, waiting for no exit). 0600: the config vars are in it. supervisord sets no memory limit.
"""

from __future__ import annotations

import configparser
import io
from pathlib import Path

from dynosim.export import files, host
from dynosim.export.model import APP_ROOT, ROUTER_PORT, STOP_GRACE_SECONDS, AppModel

FORMAT = "supervisord"
DEFAULT_PATH = "supervisord.conf"


def write(model: AppModel, path: Path) -> list[Path]:
    from honcho.export.supervisord import Export

    processes = host.processes(model, FORMAT, host.environment(model))
    files.check_file(path, FORMAT)
    context = host.context(model)
    [rendered] = Export().render(processes, context)
    config = configparser.ConfigParser(interpolation=None)
    config.read_string(rendered.content)
    release = f"program:{model.slug}-release"
    for section in config.sections():
        if section.startswith("program:"):
            config[section].update(
                stopsignal="TERM",
                stopwaitsecs=str(STOP_GRACE_SECONDS),
                stopasgroup="true",
                killasgroup="true",
            )
            if model.release_command is not None:
                config[section]["autostart"] = "false"  # the release program starts them
    if model.release_command is not None:
        environment = {
            **host.environment(model),
            **model.size_env(model.release_size),
            "DYNO": "release.1",
            "PORT": str(ROUTER_PORT),
        }
        env = ",".join(f"{k}={_quote(v)}" for k, v in environment.items())
        command = f"{host.PROFILE}{model.release_command} && supervisorctl start {model.slug}:*"
        config[release] = {
            "command": f"{host.SHELL} -c '{command.replace('%', '%%')}'",
            "autostart": "true",
            "autorestart": "false",
            "startsecs": "0",
            "exitcodes": "0",
            "priority": "1",
            "stopsignal": "TERM",
            "stopwaitsecs": str(STOP_GRACE_SECONDS),
            "stopasgroup": "true",
            "killasgroup": "true",
            "stdout_logfile": f"{context['log']}/release.log",
            "stderr_logfile": f"{context['log']}/release.error.log",
            "user": context["user"],
            "directory": APP_ROOT,
            "environment": env,
        }
    out = io.StringIO()
    config.write(out)
    notes = [f"Include it from supervisord.conf ([include] files = {path.name}); the logs go to {context['log']}."]
    if model.release_command is not None:
        notes.append(
            f"The release program starts the group: its user ({context['user']}) must reach supervisord's socket "
            f"([unix_http_server] chown=), else `supervisorctl start {model.slug}:*` once it has exited 0."
        )
    if host.addon_vars(model):
        notes.append(
            "The add-ons do not run here: add "
            + ", ".join(f"{name}=…" for name in host.addon_vars(model))
            + " to each program's environment (their URLs)."
        )
    return [files.write(path, files.header(model, FORMAT, *notes) + out.getvalue(), private=True)]


def _quote(value: str) -> str:
    import shlex

    return shlex.quote(value).replace("%", "%%")  # as honcho's template quotes its programs' values
