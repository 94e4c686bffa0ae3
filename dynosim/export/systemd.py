"""`dynosim export systemd`: systemd units of the formation, through honcho's systemd exporter (its targets
and one service per dyno, `Restart=always`), with dynosim's env (the plain config vars in the units, the
secret ones in `<app>.env`, 0600, which systemd reads as root: a unit's Environment= is anyone's to read),
and, in a drop-in per unit, Heroku's stop (SIGTERM to every process of the dyno, SIGKILL 30 s later:
honcho's units signal the main process only), the dyno size's hard limit (MemoryMax) and the release
phase, a oneshot unit every dyno requires and starts after. Install: copy the folder's files to
/etc/systemd/system (ENV_FILE's place), `systemctl daemon-reload`, `systemctl start <app>.target`.
"""

from __future__ import annotations

from pathlib import Path

from dynosim.export import files, host
from dynosim.export.model import APP_ROOT, ROUTER_PORT, STOP_GRACE_SECONDS, AppModel

FORMAT = "systemd"
DEFAULT_PATH = "systemd"
UNIT_DIR = "/etc/systemd/system"


def write(model: AppModel, path: Path) -> list[Path]:
    from honcho.export.base import dashrepl
    from honcho.export.systemd import Export

    environment = host.environment(model)
    plain = {k: v for k, v in environment.items() if k not in model.secrets}
    secret = {k: v for k, v in environment.items() if k in model.secrets}
    processes = host.processes(model, FORMAT, plain)
    files.clear_folder(path, FORMAT)
    env_file = f"{model.slug}.env"
    # systemd expands % specifiers in Environment= and ExecStart=: %% is a %
    processes = [
        p._replace(cmd=p.cmd.replace("%", "%%"), env={k: v.replace("%", "%%") for k, v in p.env.items()})
        for p in processes
    ]
    context = host.context(model)
    release_unit = f"{model.slug}-release.service" if model.release_command is not None else None
    sizes = {p.name: p for p in model.processes}
    written: list[Path] = []
    for unit in Export().render(processes, context):
        written.append(files.write(path / unit.name, files.header(model, FORMAT) + unit.content))
    for process in processes:
        unit = f"{model.slug}-{dashrepl(process.name)}.service"  # as honcho names it
        size = sizes[process.name.rsplit(".", 1)[0]]
        lines = []
        if release_unit:
            lines += ["[Unit]", f"Requires={release_unit}", f"After={release_unit}", ""]
        lines += [
            "[Service]",
            "KillMode=control-group",
            "KillSignal=SIGTERM",
            f"TimeoutStopSec={STOP_GRACE_SECONDS}",
            f"MemoryMax={size.memory_limit_mb}M",
            f"EnvironmentFile={UNIT_DIR}/{env_file}",
        ]
        folder = path / f"{unit}.d"
        folder.mkdir(exist_ok=True)
        written.append(files.write(folder / "50-dynosim.conf", files.header(model, FORMAT) + "\n".join(lines) + "\n"))
    if model.release_command is not None and release_unit is not None:
        written.append(files.write(path / release_unit, files.header(model, FORMAT) + _release(model, plain, env_file)))
    lines = [f"{name}={_quote(value)}" for name, value in secret.items()]
    lines += [f"#{name}=  (required: set it to the add-on's URL, and remove the #)" for name in host.addon_vars(model)]
    text = files.header(model, FORMAT) + "".join(f"{line}\n" for line in lines)
    written.append(files.write(path / env_file, text, private=True))
    return written


def _release(model: AppModel, plain: dict[str, str], env_file: str) -> str:
    """The release phase as honcho would write a dyno, run once before the formation."""
    env = {**plain, **model.size_env(model.release_size), "DYNO": "release.1", "PORT": str(ROUTER_PORT)}
    command = (host.PROFILE + (model.release_command or "")).replace("%", "%%")
    lines = [
        "[Unit]",
        f"PartOf={model.slug}.target",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        f"User={model.slug}",
        f"WorkingDirectory={APP_ROOT}",
        *(f"Environment={name}={_quote(value.replace('%', '%%'))}" for name, value in env.items()),
        f"EnvironmentFile={UNIT_DIR}/{env_file}",
        f"ExecStart={host.SHELL} -lc '{command}'",
        "KillMode=control-group",
        f"TimeoutStopSec={STOP_GRACE_SECONDS}",
        "StandardOutput=journal",
        "StandardError=journal",
        "",
        "[Install]",
        f"WantedBy={model.slug}.target",
    ]
    return "\n".join(lines) + "\n"


def _quote(value: str) -> str:
    import shlex

    return shlex.quote(value)  # as honcho's template quotes its units' values
