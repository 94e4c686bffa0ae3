"""The app as every export writer and `dynosim image`/`deploy --to swarm` see it: its name and current
release, the image of that release, its process types with the formation's quantities and dyno sizes,
the release phase, its config vars (which of them are secret), its add-ons as services of their own,
and its Scheduler jobs. Read from the app folder and its state, without a run.

How a process runs in the image: `bash -c COMMAND` (`ProcessModel.argv`) as the image's entrypoint's
arguments, as Heroku runs a Procfile line; the entrypoint sources `.profile.d` and execs them, with the
slug at `/app` (HOME). Each writer gives a dyno DYNO_TYPE, PORT and its size's DYNO_RAM and WEB_CONCURRENCY
(`size_env`), as dynosim's own dynos get them.

Which config vars are secret: every one but the few plain names in `PLAIN` (and names ending in one of
`PLAIN_SUFFIXES`), unless its value holds a login (`scheme://user:password@`); every add-on var is secret
(its URL holds the add-on's password).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from dynosim.errors import DynosimError

if TYPE_CHECKING:
    from dynosim.addons.catalogue import Resolved

APP_ROOT = "/app"  # the slug's place in a dyno, and HOME, as on Heroku
ROUTER_PORT = 5000  # the router's default port: where web listens and is published
STOP_GRACE_SECONDS = 30  # Heroku's SIGTERM-to-SIGKILL
PLAIN: frozenset[str] = frozenset(
    {
        "DEBUG", "DISABLE_COLLECTSTATIC", "DJANGO_SETTINGS_MODULE", "ENV", "ENVIRONMENT", "FLASK_APP", "FLASK_ENV",
        "LANG", "LOG_LEVEL", "NODE_ENV", "PYTHONUNBUFFERED", "RACK_ENV", "RAILS_ENV", "TZ", "WEB_CONCURRENCY",
        "GUNICORN_CMD_ARGS", "FORWARDED_ALLOW_IPS", "PYTHONPATH",
    }
)  # fmt: skip
PLAIN_SUFFIXES = ("_HOST", "_PORT", "_LEVEL", "_MODE", "_REGION", "_TIMEOUT", "_WORKERS", "_THREADS")
_LOGIN_IN_VALUE = re.compile(r"://[^/@\s]*:[^/@\s]*@")


@dataclass(frozen=True)
class ProcessModel:
    """One Procfile process type in the formation."""

    name: str  # "web", "worker", "my_worker": the Procfile's own name
    command: str
    quantity: int
    size: str  # "standard-1x"
    memory_mb: int  # the size's quota (R14 past it): what an engine reserves
    memory_limit_mb: int  # the size's hard limit (R15 kills past it): what an engine enforces
    web: bool  # gets HTTP from the router on $PORT

    @property
    def argv(self) -> tuple[str, ...]:
        return ("bash", "-c", self.command)


@dataclass(frozen=True)
class AddonModel:
    """One add-on as a service of its own: the official image its docker backend runs, with its data on a
    volume, reached by the app at its host name (`name`) in the cluster."""

    name: str  # the add-on's name, "postgresql-opaque-60862": also its host name in the cluster
    addon: str  # "heroku-postgresql"
    service: str  # "postgres"
    plan: str  # "heroku-postgresql:essential-0", as declared
    image: str  # "postgres:17" (DYNOSIM_POSTGRES_IMAGE… override it, as for the docker backend)
    container_port: int
    environment: Mapping[str, str]  # the container's own (POSTGRES_PASSWORD…): secret
    command: tuple[str, ...] | None  # None: the image's own
    healthcheck: tuple[str, ...]  # a command run in the container that succeeds once it answers
    volume_path: str  # where the image keeps its data: the named volume or claim goes there
    storage_mb: int  # how much the volume should hold: the plan's storage, else 1 GB
    config_vars: Mapping[str, str]  # Heroku's vars for the app, pointing at `name`; {} when external
    var_names: tuple[str, ...]  # the vars it sets, known even when external
    external: bool  # runs elsewhere (--external-addons, or a mail add-on: no image): the user sets its vars


@dataclass(frozen=True)
class JobModel:
    """One Heroku Scheduler job (scheduler:add or app.json `cron`)."""

    id: str  # "1", "cron.1"
    command: str
    schedule: str  # a cron expression, UTC
    size: str
    memory_mb: int
    memory_limit_mb: int
    concurrency_policy: str  # "allow" | "forbid" | "replace"

    @property
    def argv(self) -> tuple[str, ...]:
        return ("bash", "-c", self.command)


@dataclass(frozen=True)
class AppModel:
    app: str  # the app's name, as dynosim has it ("dynosim-sample")
    release_version: int | None  # the current release; None before the first
    slug_commit: str | None
    image: str  # "dynosim/dynosim-sample:v3"
    processes: tuple[ProcessModel, ...]  # the formation's types, in Procfile order (release excluded)
    release_command: str | None
    config_vars: Mapping[str, str]  # the app's own (app.json env, .env, config:set), add-ons' excluded
    secrets: frozenset[str]  # names among config_vars and the add-ons' vars whose values are secret
    addons: tuple[AddonModel, ...]
    jobs: tuple[JobModel, ...]
    external_addons: bool = False  # the add-ons run elsewhere: their vars are for the user to set

    @property
    def slug(self) -> str:
        return app_slug(self.app)

    @property
    def project(self) -> str:
        """The name of a Compose project or Swarm stack, which take no '.'."""
        return self.slug.replace(".", "-")

    @property
    def release_label(self) -> str:
        return f"v{self.release_version}" if self.release_version is not None else "latest"

    @property
    def addon_vars(self) -> dict[str, str]:
        """The add-ons' vars as the app gets them (empty when external)."""
        return {name: value for addon in self.addons for name, value in addon.config_vars.items()}

    @property
    def required_vars(self) -> tuple[str, ...]:
        """The vars the user must set where the app runs: external add-ons' (and mail add-ons', which have
        no image to run)."""
        return tuple(name for addon in self.addons if addon.external for name in addon.var_names)

    @property
    def environment(self) -> dict[str, str]:
        """What every dyno gets from the app: its config vars, with the add-ons' winning, as on Heroku."""
        return {**self.config_vars, **self.addon_vars}

    def size_env(self, size: str) -> dict[str, str]:
        """What a dyno of `size` gets from the Python buildpack's profile as dynosim's dynos do (runtime/dyno.py):
        DYNO_RAM, and WEB_CONCURRENCY unless a config var sets it."""
        from dynosim.formation import SIZES

        env = {"DYNO_RAM": str(SIZES[size].memory_mb)}
        if "WEB_CONCURRENCY" not in self.config_vars:
            env |= {"WEB_CONCURRENCY": str(SIZES[size].web_concurrency), "WEB_CONCURRENCY_SET_BY": "heroku/python"}
        return env

    @property
    def release_size(self) -> str:
        """The release dyno's size: the web dyno's (else the first type's), as Heroku sizes it."""
        sized = next((p for p in self.processes if p.web), self.processes[0] if self.processes else None)
        return sized.size if sized is not None else "standard-1x"

    @property
    def release_argv(self) -> tuple[str, ...] | None:
        return ("bash", "-c", self.release_command) if self.release_command is not None else None


def app_slug(name: str) -> str:
    """The app's name in image tags and engine names: lowercase, anything outside [a-z0-9.-] a '-'."""
    return re.sub(r"[^a-z0-9.-]", "-", name.lower())


def image_tag(app: str, release_version: int | None) -> str:
    """`dynosim/<app>:v<N>`, `:latest` before the first release: the tag `dynosim image` builds."""
    return f"dynosim/{app_slug(app)}:{f'v{release_version}' if release_version is not None else 'latest'}"


def is_secret(name: str, value: str) -> bool:
    if _LOGIN_IN_VALUE.search(value):
        return True
    return not (name in PLAIN or name.endswith(PLAIN_SUFFIXES))


def app_model(app_dir: Path, *, image: str | None = None, external_addons: bool = False) -> AppModel:
    """The app in `app_dir` as its current release would run: DynosimError for what cannot be read (no
    Procfile, a broken app.json or state file). Provisions app.json's add-ons that are not yet, as
    `dynosim config` does: their names and credentials are fixed from then on."""
    from dynosim.addons import app_requests, provision
    from dynosim.app import load_app
    from dynosim.formation import DEFAULT_SIZE, FormationStore, dyno_size, resolve_formation
    from dynosim.releases import ReleaseHistory
    from dynosim.scheduler import SchedulerJobs

    app = load_app(app_dir)
    formation = resolve_formation(app.procfile, app.manifest, app=FormationStore(app.state_dir).load())
    processes = tuple(
        ProcessModel(
            name=kind,
            command=app.procfile.processes[kind].command,
            quantity=quantity,
            size=formation.sizes[kind].name,
            memory_mb=formation.sizes[kind].memory_mb,
            memory_limit_mb=int(formation.sizes[kind].memory_mb * formation.sizes[kind].kill_factor),
            web=kind == "web",
        )
        for kind, quantity in formation.quantities.items()
    )
    history = ReleaseHistory(app.state_dir)
    version = history.current_version()
    commit = _slug_commit(history.entries(), version)
    addons = tuple(
        _addon(entry, record, external=external_addons)
        for entry, record in provision(app.state_dir, app_requests(app.manifest.addons, app.state_dir))
    )
    addon_names = {name for addon in addons for name in addon.var_names}
    config_vars = {name: value for name, value in app.config_vars.items() if name not in addon_names}
    jobs = []
    for job in SchedulerJobs(app.state_dir).jobs(app.manifest):
        size = dyno_size(job.size or DEFAULT_SIZE, f"Scheduler job {job.id}'s size")
        jobs.append(
            JobModel(
                id=job.id,
                command=job.command,
                schedule=job.schedule,
                size=size.name,
                memory_mb=size.memory_mb,
                memory_limit_mb=int(size.memory_mb * size.kill_factor),
                concurrency_policy=job.concurrency_policy,
            )
        )
    secrets = {name for name, value in config_vars.items() if is_secret(name, value)} | addon_names
    release = app.procfile.release
    return AppModel(
        app=app.name,
        release_version=version,
        slug_commit=commit,
        image=image or image_tag(app.name, version),
        processes=processes,
        release_command=release.command if release is not None else None,
        config_vars=MappingProxyType(config_vars),
        secrets=frozenset(secrets),
        addons=addons,
        jobs=tuple(jobs),
        external_addons=external_addons,
    )


def _slug_commit(entries: list[dict[str, object]], version: int | None) -> str | None:
    entry = next((e for e in entries if e.get("version") == version), None)
    slug = entry.get("slug") if entry is not None else None
    commit = slug.get("commit") if isinstance(slug, dict) else None
    return str(commit) if commit else None


def _addon(entry: Resolved, record: dict[str, Any], *, external: bool) -> AddonModel:
    """An add-on's service in a cluster: the docker backend's image and data path, without its local extras
    (no TLS certificates to mount, no `docker exec` to provision): the image makes the app's role itself."""
    from dynosim.addons.catalogue import config_vars, var_names
    from dynosim.addons.plans import redis_plan
    from dynosim.addons.services import service_for
    from dynosim.addons.spec import Endpoint, ServiceSpec

    service = service_for(entry.offering.service)
    color = record.get("color") if isinstance(record.get("color"), str) else None
    names = tuple(var_names(entry, color))
    name, password = str(record["name"]), str(record["password"])
    image = service.image()
    port = service.container_port
    environment: dict[str, str] = {}
    command: tuple[str, ...] | None = None
    if service.name == "postgres":
        user, database = str(record["user"]), str(record["database"])
        environment = {
            "POSTGRES_USER": user,
            "POSTGRES_PASSWORD": password,
            "POSTGRES_DB": database,
            "PGDATA": service.data_path(image),
        }
        healthcheck: tuple[str, ...] = ("pg_isready", "-h", "127.0.0.1", "-U", user, "-d", database)
        endpoint = Endpoint(name, port, user, password, database)
    elif service.name == "redis":
        directives = redis_plan(entry.request.plan).directives(record)
        # the password from the environment, not the command line: the command is in files anyone may read
        limits = " ".join(f"--{key} {shlex.quote(value)}" for key, value in directives)
        command = ("sh", "-c", f'exec redis-server --requirepass "$REDIS_PASSWORD" --appendonly yes {limits}')
        healthcheck = ("sh", "-c", 'redis-cli --no-auth-warning -a "$REDIS_PASSWORD" ping | grep -q PONG')
        environment = {"REDIS_PASSWORD": password}
        endpoint = Endpoint(name, port, password=password, tls=False)
    elif service.name == "search":
        spec = ServiceSpec(label=name, service=service.name, folder=Path(APP_ROOT), port=port, password=password)
        environment = service.environment(spec, image)
        healthcheck = ("curl", "-fsS", f"http://127.0.0.1:{port}/")
        endpoint = Endpoint(name, port)
    else:  # mail: dynosim's own sink, no image; the app is given the real provider's vars to set
        external = True
        healthcheck, endpoint = (), Endpoint(name, port)
    if service.embedded or not image:
        external = True
    values = {} if external else config_vars(entry, endpoint, color=color, keys=_keys(record))
    return AddonModel(
        name=name,
        addon=entry.offering.addon,
        service=service.name,
        plan=entry.request.plan,
        image=image,
        container_port=port,
        environment=MappingProxyType(environment),
        command=command,
        healthcheck=healthcheck,
        volume_path=service.data_path(image) if not service.embedded else "",
        storage_mb=_storage_mb(entry),
        config_vars=MappingProxyType(values),
        var_names=names,
        external=external,
    )


def _storage_mb(entry: Resolved) -> int:
    from dynosim.addons.plans import postgres_plan

    if entry.offering.service == "postgres":
        storage = postgres_plan(entry.request.plan).storage
        if storage > 0:
            return max(storage // 2**20, 1)
    return 1024


def _keys(record: Mapping[str, Any]) -> dict[str, str]:
    return {key: record[key] for key in ("domain", "api_key") if isinstance(record.get(key), str)}


class ExportError(DynosimError):
    pass
