"""`dynosim export swarm`: a stack file (`docker stack deploy -c stack.yml APP`) of the app's current release.

One service per process type with the formation's replicas, DYNO's replica number from the task's slot; web
published on the routing mesh's port 5000 with PORT set, updated start-first (preboot); the release phase
as the one-shot `release` service (`restart_policy.condition: none`, labelled `dynosim.release-phase`).
`docker stack deploy` starts every service at once: `dynosim deploy --to swarm` deploys `release` first
and the rest once its task has completed; by hand, the process types restart until it has run. The plain
config vars in an env file; the secret ones, and the add-ons' vars, as Docker secrets (files in
`<stack>.secrets/`, 0600; named after a digest of the value, since a secret cannot change), loaded into
the environment from /run/secrets before the command; external add-ons' vars as external secrets the user
creates. Add-ons as services with named volumes; Heroku's stop (SIGTERM, 30 s), memory (the size's hard
limit, its quota reserved) and crash policy (restart whatever the exit, the first at once: Swarm's fixed
delay cannot grow to Heroku's 10 min, 20, 40… cool-offs).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from dynosim.export import files, stackfile
from dynosim.export.model import ROUTER_PORT, STOP_GRACE_SECONDS, AppModel, ProcessModel

FORMAT = "swarm"
DEFAULT_PATH = "stack.yml"
SECRETS_DIR = "/run/secrets"
RELEASE_LABEL = "dynosim.release-phase"
# every file in /run/secrets becomes the variable of its name, then the command runs as Heroku runs it
_LOAD_SECRETS = f'for f in {SECRETS_DIR}/*; do [ -f "$f" ] && export "${{f##*/}}=$(cat "$f")"; done; exec bash -c "$1"'


def write(model: AppModel, path: Path) -> list[Path]:
    env_path = path.with_name(f"{path.stem}.env")
    secrets_path = path.with_name(f"{path.stem}.secrets")
    addon_envs = stackfile.addon_env_paths(model, path)
    for target in (path, env_path, *addon_envs.values()):
        files.check_file(target, FORMAT)
    if model.secrets or secrets_path.exists():
        files.secrets_folder(secrets_path)
    environment = model.environment
    secret_values = {name: value for name, value in environment.items() if name in model.secrets}
    plain = {name: value for name, value in environment.items() if name not in model.secrets}
    in_file = {name: value for name, value in plain.items() if files.one_line(value)}
    inline = {name: value.replace("$", "$$") for name, value in plain.items() if name not in in_file}
    secrets: dict[str, Any] = {
        name: {"name": _secret_name(model, name, value), "file": f"./{secrets_path.name}/{name}"}
        for name, value in secret_values.items()
    }
    secrets |= {name: {"name": f"{model.slug}_{name}", "external": True} for name in model.required_vars}
    uses = [{"source": name, "target": name, "mode": 0o400} for name in secrets]
    labels = {"dynosim.app": model.app, "dynosim.release": model.release_label}

    def dyno(argv: tuple[str, ...], process_type: str, size: str) -> dict[str, Any]:
        command = ("bash", "-c", _LOAD_SECRETS, "dyno", argv[2]) if uses else argv
        return {
            "image": model.image,
            "command": stackfile.escaped(command),
            "env_file": [env_path.name],
            "environment": {
                **inline,
                **model.size_env(size),
                "DYNO_TYPE": process_type,
                "DYNO_REPLICA": "{{.Task.Slot}}",
                "PORT": str(ROUTER_PORT),
            },
            **({"secrets": uses} if uses else {}),
            "stop_signal": "SIGTERM",
            "stop_grace_period": f"{STOP_GRACE_SECONDS}s",
        }

    services: dict[str, Any] = {}
    if model.release_argv is not None:
        services["release"] = dyno(model.release_argv, "release", model.release_size) | {
            "deploy": {
                "replicas": 1,
                "restart_policy": {"condition": "none"},
                "labels": {**labels, RELEASE_LABEL: "true"},
            }
        }
    for process in model.processes:
        services[process.name] = dyno(process.argv, process.name, process.size) | _deploy(process, labels)
    running = stackfile.running_addons(model)
    for addon in running:
        services[addon.name] = stackfile.addon_service(addon, addon_envs[addon.name].name) | {
            "deploy": {"replicas": 1, "restart_policy": {"condition": "any", "delay": "0s"}, "labels": labels}
        }
    document: dict[str, Any] = {"version": "3.9", "services": services}
    if running:
        document["volumes"] = {addon.name: {} for addon in running}
    if secrets:
        document["secrets"] = secrets
    notes = [
        f"Deploy it with `docker stack deploy -c {path.name} {model.project}` on a Swarm manager; run `release` first:",
        "`docker stack deploy` starts every service at once (`dynosim deploy --to swarm` waits for it to complete).",
    ]
    for name in model.required_vars:
        notes.append(f'Create first: printf %s "$YOUR_{name}" | docker secret create {model.slug}_{name} -')
    written = [files.write(path, files.header(model, FORMAT, *notes) + files.to_yaml(document))]
    written.append(files.write(env_path, files.header(model, FORMAT) + files.env_lines(in_file), private=True))
    written += stackfile.write_addon_envs(model, FORMAT, addon_envs, "")
    stackfile.remove_stale_envs(path, written)
    written += [files.write(secrets_path / name, value, private=True) for name, value in secret_values.items()]
    return written


def _deploy(process: ProcessModel, labels: dict[str, str]) -> dict[str, Any]:
    deploy: dict[str, Any] = {
        "replicas": process.quantity,
        "resources": stackfile.memory(process),
        "restart_policy": {"condition": "any", "delay": "0s"},  # Heroku restarts a dyno whatever its exit
        "labels": labels,
    }
    service: dict[str, Any] = {"deploy": deploy}
    if process.web:
        deploy["update_config"] = {"order": "start-first", "failure_action": "rollback"}  # preboot
        service["ports"] = [{"target": ROUTER_PORT, "published": ROUTER_PORT, "protocol": "tcp", "mode": "ingress"}]
    return service


def _secret_name(model: AppModel, name: str, value: str) -> str:
    """`<app>_<VAR>_<digest>`: a Docker secret cannot be changed, so another value is another secret."""
    digest = hashlib.sha256(value.encode()).hexdigest()[:10]
    return f"{model.slug}_{name}"[: 64 - len(digest) - 1] + f"_{digest}"
