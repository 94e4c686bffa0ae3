"""`dynosim export compose`: a Compose file (`docker compose up`) of the app's current release.

One service per process type with the formation's replicas (`deploy.replicas`), each running the release's
image; web published on the router's port 5000 with PORT set (several web replicas: one host port each,
5000 up, as Compose publishes a port once per container); the release phase as a one-shot `release`
service every process type waits for (`service_completed_successfully`); the config vars in an env file
beside the Compose file (0600, single-quoted: Compose reads them literally); each add-on as a service of
the image its docker backend runs, its data on a named volume, healthy before the release phase starts,
and Heroku's vars pointing at it by its service name (with --external-addons, each var a
`${VAR:?…}` that Compose refuses to start without); DYNO_TYPE for the image's entrypoint (Compose numbers
no replica: every one is <type>.1); Heroku's stop (SIGTERM, 30 s, SIGKILL), memory limit
(the dyno size's hard limit, its quota reserved) and crash policy (restart, always).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dynosim.export import files, stackfile
from dynosim.export.model import ROUTER_PORT, STOP_GRACE_SECONDS, AppModel, ProcessModel

FORMAT = "compose"
DEFAULT_PATH = "docker-compose.yml"


def write(model: AppModel, path: Path) -> list[Path]:
    env_path = path.with_name(f"{path.stem}.env")
    addon_envs = stackfile.addon_env_paths(model, path)
    for target in (path, env_path, *addon_envs.values()):
        files.check_file(target, FORMAT)
    environment = model.environment
    in_file = {name: value for name, value in environment.items() if files.one_line(value) and "'" not in value}
    inline = {name: value.replace("$", "$$") for name, value in environment.items() if name not in in_file}
    inline |= {name: f"${{{name}:?{stackfile.required_reason(model, name)}}}" for name in model.required_vars}
    running = stackfile.running_addons(model)
    services: dict[str, Any] = {}
    if model.release_argv is not None:
        services["release"] = {
            "image": model.image,
            "command": stackfile.escaped(model.release_argv),
            "env_file": [env_path.name],
            "environment": {
                **inline,
                **model.size_env(model.release_size),
                "DYNO_TYPE": "release",
                "PORT": str(ROUTER_PORT),
            },
            "restart": "no",
            "stop_grace_period": f"{STOP_GRACE_SECONDS}s",
        }
        if running:
            services["release"]["depends_on"] = {addon.name: {"condition": "service_healthy"} for addon in running}
    for process in model.processes:
        services[process.name] = _process(model, process, env_path.name, inline)
    for addon in running:
        services[addon.name] = {**stackfile.addon_service(addon, addon_envs[addon.name].name), "restart": "always"}
    document: dict[str, Any] = {"name": model.project, "services": services}
    if running:
        document["volumes"] = {addon.name: {} for addon in running}
    notes = [f"Run it with `docker compose -f {path.name} up`; the config vars are in {env_path.name}."]
    if model.required_vars:
        notes.append(f"Set these in the environment first (add-ons run elsewhere): {', '.join(model.required_vars)}.")
    written = [files.write(path, files.header(model, FORMAT, *notes) + files.to_yaml(document))]
    quoted = {name: f"'{value}'" for name, value in in_file.items()}
    written.append(files.write(env_path, files.header(model, FORMAT) + files.env_lines(quoted), private=True))
    written += stackfile.write_addon_envs(model, FORMAT, addon_envs, "'")
    stackfile.remove_stale_envs(path, written)
    return written


def _process(model: AppModel, process: ProcessModel, env_file: str, inline: dict[str, str]) -> dict[str, Any]:
    service: dict[str, Any] = {
        "image": model.image,
        "command": stackfile.escaped(process.argv),
        "env_file": [env_file],
        "environment": {**inline, **model.size_env(process.size), "DYNO_TYPE": process.name, "PORT": str(ROUTER_PORT)},
    }
    if process.web:
        last = ROUTER_PORT + max(process.quantity, 1) - 1
        published = str(ROUTER_PORT) if last == ROUTER_PORT else f"{ROUTER_PORT}-{last}"
        service["ports"] = [f"{published}:{ROUTER_PORT}"]
    service |= {
        "deploy": {"replicas": process.quantity, "resources": stackfile.memory(process)},
        "stop_signal": "SIGTERM",
        "stop_grace_period": f"{STOP_GRACE_SECONDS}s",
        "restart": "always",  # Heroku restarts a dyno whatever its exit
    }
    depends_on = {addon.name: {"condition": "service_healthy"} for addon in stackfile.running_addons(model)}
    if model.release_argv is not None:
        depends_on["release"] = {"condition": "service_completed_successfully"}
    if depends_on:
        service["depends_on"] = depends_on
    return service
