"""What a Compose file and a Swarm stack file share: the services' pieces both engines read the same way, and
`$` escaped as both interpolate it (a command's `$PORT` is the dyno's, not the deploying shell's)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dynosim.export import files
from dynosim.export.model import AddonModel, AppModel, ProcessModel


def escaped(words: Iterable[str]) -> list[str]:
    return [word.replace("$", "$$") for word in words]


def running_addons(model: AppModel) -> list[AddonModel]:
    """The add-ons the file runs as services of its own (not external ones, nor mail: no image)."""
    return [addon for addon in model.addons if not addon.external]


def required_reason(model: AppModel, name: str) -> str:
    addon = next(a for a in model.addons if name in a.var_names)
    return f"set {name} (the {addon.addon} add-on runs elsewhere)"


def memory(process: ProcessModel) -> dict[str, Any]:
    """The dyno size: its hard limit enforced (R15's kill), its quota reserved."""
    return {
        "limits": {"memory": f"{process.memory_limit_mb}M"},
        "reservations": {"memory": f"{process.memory_mb}M"},
    }


def addon_env_paths(model: AppModel, path: Path) -> dict[str, Path]:
    """Each running add-on's own env file beside `path` (its container's passwords, for it alone)."""
    return {addon.name: path.with_name(f"{path.stem}.{addon.name}.env") for addon in running_addons(model)}


def addon_service(addon: AddonModel, env_file: str) -> dict[str, Any]:
    service: dict[str, Any] = {"image": addon.image, "env_file": [env_file]}
    if addon.command is not None:
        service["command"] = escaped(addon.command)
    service |= {
        "volumes": [f"{addon.name}:{addon.volume_path}"],
        "healthcheck": {"test": ["CMD", *escaped(addon.healthcheck)], "interval": "2s", "timeout": "5s", "retries": 60},
    }
    return service


def write_addon_envs(model: AppModel, fmt: str, paths: dict[str, Path], quote: str) -> list[Path]:
    written = []
    for addon in running_addons(model):
        values = {name: f"{quote}{value}{quote}" for name, value in addon.environment.items()}
        text = files.header(model, fmt) + files.env_lines(values)
        written.append(files.write(paths[addon.name], text, private=True))
    return written


def remove_stale_envs(path: Path, keep: Iterable[Path]) -> None:
    """An earlier export's env file of an add-on the app no longer runs here."""
    kept = set(keep)
    for stale in path.parent.glob(f"{path.stem}.*.env"):
        if stale not in kept and files.ours(stale):
            stale.unlink()
