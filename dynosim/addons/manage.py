"""What `dynosim addons`, `addons:create`, `addons:destroy`, `pg:psql`, `pg:reset` and `redis:cli` do to
an app's add-ons, apart from printing (that is `commands.py`).

An add-on here is what the app declares (app.json's "addons", or `addons:create`, kept in addons.json's
"declared" list) and what has been provisioned for it: one record in addons.json, naming the backend it
was created on, with its data in `<state_dir>/addons/<name>/` (native, embedded) or in the docker volume
`dynosim-<name>`. Everything works without a run and without a Docker engine, except deleting docker
data, which needs the engine (and then deletes nothing until it answers).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dynosim.addons import STATE_FILE, AddonRequest, Addons, State, provisioned_vars
from dynosim.addons.catalogue import (
    Resolved,
    offering_for,
    resolve,
    var_names,
)
from dynosim.addons.processes import accepts
from dynosim.addons.services import EMBEDDED
from dynosim.errors import AddonError
from dynosim.sizes import disk_usage

_SAFE_NAME = re.compile(r"[a-z][a-z0-9-]*")  # what State._new_name makes: safe as a folder name


@dataclass(frozen=True)
class Declared:
    """An add-on the app declares, and where it does."""

    request: AddonRequest
    where: str  # "app.json" | "addons:create"
    reserved: Mapping[str, Any] = field(default_factory=dict)  # addons:create's name and colour

    @property
    def entry(self) -> Resolved:
        return resolve([self.request])[0]

    @property
    def key(self) -> tuple[str, str]:
        return _key(self.entry)


@dataclass(frozen=True)
class AddonInfo:
    """One row of `dynosim addons`: one add-on, provisioned on its backend or declared, not provisioned yet."""

    name: str  # "postgresql-curly-12345"; the reserved one when not provisioned yet
    addon: str  # "heroku-postgresql"
    plan: str  # "essential-0", "" for the default plan
    service: str  # "postgres"
    backend: str  # "native" | "docker" | "embedded" | "" (not provisioned yet)
    endpoint: str  # "127.0.0.1:54321", "" when not provisioned yet
    attached_as: str  # "DATABASE"
    config_vars: tuple[str, ...]  # ("DATABASE_URL", "HEROKU_POSTGRESQL_JADE_URL")
    declared_in: str  # "app.json" | "addons:create" | "" (a `run --addon`, or no longer declared)
    size: int | None  # bytes on disk; None when unknown (a docker volume without an engine at hand)
    # its server in the active run (addons/recovery.py's ServerState.as_json()); None when no run has it
    server: Mapping[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "addon": self.addon,
            "plan": self.plan,
            "service": self.service,
            "backend": self.backend,
            "endpoint": self.endpoint,
            "attached_as": self.attached_as,
            "config_vars": list(self.config_vars),
            "declared_in": self.declared_in,
            "size": self.size,
            **({"server": dict(self.server)} if self.server is not None else {}),  # only while a run has it
        }


def declarations(state_dir: Path, manifest: Iterable[AddonRequest]) -> list[Declared]:
    """app.json's add-ons, then those `addons:create` declared."""
    state = _load(state_dir)
    found = [Declared(request, "app.json") for request in manifest]
    for declared in state.declared:
        found.append(Declared(AddonRequest(declared["plan"], declared.get("as")), "addons:create", declared))
    return found


# --- addons:create ----------------------------------------------------------------------------------


def declare(
    state_dir: Path, manifest: Sequence[AddonRequest], request: AddonRequest, backend: str | None = None
) -> tuple[str, list[str]]:
    """Declares an add-on for every later run; its name and the config vars it will set. `backend`
    ("docker", "native") is where its first start creates it, whatever a run's --addons says. Unknown
    add-ons, one attached under a name already taken, and a backend its data is not on are refused
    before anything is written."""
    state = _load(state_dir)
    existing = declarations(state_dir, manifest)
    entry = resolve([request])[0]  # an unknown add-on or a malformed name fails here
    taken = next((d for d in existing if d.entry.as_name == entry.as_name), None)
    if taken is not None:
        raise AddonError(
            f"{taken.request.plan} is already attached as {entry.as_name} ({taken.where}); attach this one "
            f"under another name with --as, e.g. --as {entry.as_name}_2"
        )
    service, as_name = _key(entry)
    if backend is not None and service in EMBEDDED:
        raise AddonError(f"--backend {backend}: {request.plan} is one dynosim always runs itself; drop --backend")
    record = state.record_of(entry)
    if record is not None:  # data from a `run --addon`, or an earlier declaration: it is this add-on's
        if backend is not None and record.get("backend") not in (None, backend):
            raise AddonError(
                f"--backend {backend}: {record['name']} was created on {record.get('backend')} and its data is there; "
                f"drop --backend, or `dynosim addons:destroy {record['name']}` first to begin again on {backend}, empty"
            )
        name, color = str(record["name"]), record.get("color")
    else:
        name = state._new_name(entry.offering.name_prefix)
        color = state._new_color() if service == "postgres" else None
    names = var_names(entry, color if isinstance(color, str) else None)
    for row in inventory(state_dir, manifest):
        shared = [var for var in names if var in row.config_vars]
        if shared and (row.service, row.attached_as) != (service, as_name):
            raise AddonError(
                f"{row.addon} ({row.name or row.attached_as}) already sets {shared[0]}; attach this one under "
                "another name with --as"
            )
    declared: dict[str, Any] = {"plan": request.plan, "as": request.as_name, "name": name, "created_at": time.time()}
    if color:
        declared["color"] = color
    if backend is not None:
        declared["backend"] = backend
    state.declared.append(declared)
    if record is None:  # provisioned now, as on Heroku: its config vars are known before any run
        state.records.append(state.new_record(entry))
    state.save()
    return name, names


# --- dynosim addons ---------------------------------------------------------------------------------


def inventory(state_dir: Path, manifest: Sequence[AddonRequest]) -> list[AddonInfo]:
    """Every add-on the app declares or has data of, with its size on disk."""
    state = _load(state_dir)
    declared = declarations(state_dir, manifest)
    by_key = {d.key: d for d in reversed(declared)}  # the first declaration of a key wins, as resolve() says
    rows: list[AddonInfo] = []
    docker_names = [str(r["name"]) for r in state.records if r.get("backend") == "docker"]
    docker_sizes = _docker_volume_sizes(state_dir, docker_names) if docker_names else {}
    seen: set[tuple[str, str]] = set()
    for record in state.records:
        key = (str(record.get("service")), str(record.get("as")))
        declaration = by_key.get(key)
        entry = declaration.entry if declaration else _entry_of(record)
        if entry is None:
            continue  # a record of an add-on the catalogue no longer has
        seen.add(key)
        name = str(record["name"])
        if record.get("backend") == "docker":
            size = docker_sizes.get(name)
        elif record.get("backend") is None:  # provisioned, not started yet: no data anywhere
            size = None
        else:
            size = disk_usage(state_dir / "addons" / name) if _SAFE_NAME.fullmatch(name) else None
        endpoint = f"127.0.0.1:{record['port']}" if record.get("port") else ""
        rows.append(
            _info(
                entry,
                name,
                backend=record.get("backend", ""),
                endpoint=endpoint,
                color=record.get("color"),
                where=declaration.where if declaration else "",
                size=size,
            )
        )
    for declaration in declared:
        if declaration.key in seen:
            continue
        seen.add(declaration.key)
        name = str(declaration.reserved.get("name", ""))
        rows.append(
            _info(
                declaration.entry,
                name,
                backend="",
                endpoint="",
                color=declaration.reserved.get("color"),
                where=declaration.where,
                size=None,
            )
        )
    order: dict[tuple[str, str], int] = {}
    for index, declaration in enumerate(declared):
        order.setdefault(declaration.key, index)
    rows.sort(key=lambda row: order.get((row.service, row.attached_as), len(order)))  # the order a run starts them
    return rows


def _info(
    entry: Resolved, name: str, *, backend: str, endpoint: str, color: Any, where: str, size: int | None
) -> AddonInfo:
    addon, _, plan = entry.request.plan.partition(":")
    return AddonInfo(
        name=name, addon=addon, plan=plan, service=entry.offering.service, backend=backend, endpoint=endpoint,
        attached_as=entry.as_name, config_vars=tuple(var_names(entry, color if isinstance(color, str) else None)),
        declared_in=where, size=size,
    )  # fmt: skip


# --- finding one add-on by what the user calls it ---------------------------------------------------


def find(state_dir: Path, manifest: Sequence[AddonRequest], wanted: str, service: str | None = None) -> AddonInfo:
    """The add-on the user means by `wanted`: its name (postgresql-curly-12345), its attachment (DATABASE,
    DATABASE_URL, HEROKU_POSTGRESQL_JADE_URL), its service (postgres) or its add-on name
    (heroku-postgresql). One add-on, or an error that lists them."""
    rows = [r for r in inventory(state_dir, manifest) if service is None or r.service == service]
    upper = wanted.upper()
    named = [r for r in rows if r.name == wanted]  # a name is exact, whatever else matches
    hits = named or [
        r
        for r in rows
        if wanted in (r.service, r.addon)
        or upper in (r.attached_as, *r.config_vars, *(v.removesuffix("_URL") for v in r.config_vars))
    ]
    if len(hits) == 1:
        return hits[0]
    names = ", ".join(sorted({f"{r.name or r.addon} (as {r.attached_as})" for r in rows})) or "none"
    if not hits:
        raise AddonError(f'the app has no add-on "{wanted}"; its add-ons: {names} (see `dynosim addons`)')
    raise AddonError(f'"{wanted}" could mean {len(hits)} add-ons: {names}; name one by its name (see `dynosim addons`)')


def pick(state_dir: Path, manifest: Sequence[AddonRequest], service: str, wanted: str | None, example: str) -> Declared:
    """The declared add-on of `service` a client command opens: `wanted`, or the one attached under the
    service's usual name (DATABASE, REDIS), or the only one."""
    declared = [d for d in declarations(state_dir, manifest) if d.entry.offering.service == service]
    if not declared:
        raise AddonError(f"the app declares no {service} add-on; add one with `dynosim addons:create {example}`")
    if wanted is not None:
        row = find(state_dir, manifest, wanted, service)
        chosen = [d for d in declared if d.key == (row.service, row.attached_as)]
        if not chosen:
            raise AddonError(f'"{wanted}" is not declared by the app any more (app.json or `dynosim addons:create`)')
        return chosen[0]
    usual = [d for d in declared if d.entry.as_name == d.entry.offering.default_as]
    if usual or len(declared) == 1:
        return (usual or declared)[0]
    names = ", ".join(d.entry.as_name for d in declared)
    raise AddonError(f"the app has {len(declared)} {service} add-ons ({names}); name the one to open")


# --- addons:destroy ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Destroyed:
    names: tuple[str, ...]  # the add-on names whose data is gone
    still_in_app_json: bool  # app.json declares it: the next run provisions it afresh


def destroy(
    state_dir: Path, manifest: Sequence[AddonRequest], addon: AddonInfo, say: Callable[[str], None]
) -> Destroyed:
    """Deletes this one add-on's data and, unless another record still holds its attachment, its
    `addons:create` declaration. The caller has made sure no run is active. Checks first, then deletes:
    a refusal deletes nothing."""
    state = _load(state_dir)
    key = (addon.service, addon.attached_as)
    records = [r for r in state.records if (r.get("service"), r.get("as")) == key and r.get("name") == addon.name]
    for record in records:
        name = str(record.get("name"))
        if not _SAFE_NAME.fullmatch(name):
            raise AddonError(
                f'{state_dir / STATE_FILE}: the add-on name "{name}" is not one dynosim made; fix it by hand'
            )
        if record.get("backend") != "docker" and isinstance(record.get("port"), int) and accepts(record["port"]):
            raise AddonError(
                f"{name} is running (port {record['port']} answers): stop what runs it (a `dynosim pg:psql` or "
                "`redis:cli` session, or a run) first; nothing was deleted"
            )
    docker_names = [str(r["name"]) for r in records if r.get("backend") == "docker"]
    if docker_names:
        _remove_docker(state_dir, docker_names, say)
    for record in records:
        folder = state_dir / "addons" / str(record["name"])
        if folder.exists():
            shutil.rmtree(folder)
    state.records = [r for r in state.records if r not in records]
    last = not any((r.get("service"), r.get("as")) == key for r in state.records)  # else the other keeps it
    still = [d for d in declarations(state_dir, manifest) if d.key == key] if last else []
    if last:
        state.declared = [d for d in state.declared if not _declares(d, key)]
    state.save()
    reserved = tuple(str(d.reserved.get("name", "")) for d in still if d.reserved)
    names = tuple(str(r["name"]) for r in records) or reserved
    return Destroyed(names, any(d.where == "app.json" for d in still))


def _declares(declared: Mapping[str, Any], key: tuple[str, str]) -> bool:
    try:
        return _key(resolve([AddonRequest(declared["plan"], declared.get("as"))])[0]) == key
    except AddonError:
        return False


# --- clients: psql, redis-cli, pg:reset ---------------------------------------------------------------


class Session:
    """An add-on's URL for a client: the running app's, or the add-on started for this session only."""

    def __init__(self, state_dir: Path, declared: Declared, run_vars: Mapping[str, str] | None, backend: str,
                 say: Callable[[str], None]) -> None:  # fmt: skip
        self.state_dir = state_dir
        self.declared = declared
        self.run_vars = run_vars
        self.backend = backend
        self.say = say
        self.addons: Addons | None = None
        self.vars: dict[str, str] = {}

    def __enter__(self) -> Session:
        entry = self.declared.entry
        wanted = var_names(entry)[0]  # <AS>_URL
        if self.run_vars is not None:
            if wanted not in self.run_vars:
                raise AddonError(
                    f"the running app has no {wanted}: {entry.request.plan} was declared after `dynosim run` "
                    "started; restart the run to attach it"
                )
            self.vars = dict(self.run_vars)
            return self
        record = _load(self.state_dir).record_of(entry)
        if record is not None and isinstance(record.get("port"), int) and accepts(record["port"]):
            # another session's server (`pg:psql` in another terminal): used, and left running, not
            # stopped under that session as starting our own would
            self.vars = provisioned_vars(self.state_dir, [self.declared.request])
            return self
        self.say(f"Starting {entry.request.plan} for this session (no `dynosim run` is active)...")
        self.addons = Addons(self.state_dir, [self.declared.request], backend=self.backend, say=self.say)
        try:
            for attachment in self.addons.start():
                self.vars.update(attachment.config_vars)
        except BaseException:
            self.addons.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.addons is not None:
            self.addons.stop()

    @property
    def url(self) -> str:
        return self.vars[var_names(self.declared.entry)[0]]

    def record(self) -> dict[str, Any]:
        """The add-on's record, found by the port its URL names."""
        port = urllib.parse.urlsplit(self.url).port
        key = self.declared.key
        for record in _load(self.state_dir).records:
            if (record.get("service"), record.get("as")) == key and record.get("port") == port:
                return record
        raise AddonError(f"no record in {self.state_dir / STATE_FILE} for the add-on on port {port}")


def psql_binary() -> str:
    """psql from the same place as the server (so their versions match), else from PATH."""
    from dynosim.addons.backends.native import NativeBackend
    from dynosim.addons.services.postgres_native import find_binaries

    backend = NativeBackend(lambda _: None)
    try:
        bindir = find_binaries(backend).bindir
    except AddonError:
        bindir = None
    finally:
        backend.close()
    if bindir is not None and os.access(bindir / "psql", os.X_OK):
        return str(bindir / "psql")
    found = shutil.which("psql")
    if found is None:
        raise AddonError(
            "no psql found (next to the Postgres server or on PATH); install it: apt-get install postgresql-client"
        )
    return found


def redis_cli_binary() -> str:
    found = shutil.which("redis-cli")
    if found is None:
        raise AddonError("no redis-cli on PATH; install it: apt-get install redis-tools (brew install redis on macOS)")
    return found


def redis_cli_args(binary: str, url: str) -> tuple[list[str], dict[str, str]]:
    """redis-cli's arguments for a REDIS_URL, the password in its environment (REDISCLI_AUTH), not in
    its arguments: `-u redis://:pw@…` makes redis-cli 7 send AUTH with an empty user name, which fails."""
    parts = urllib.parse.urlsplit(url)
    argv = [binary, "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 6379)]
    if parts.username:
        argv += ["--user", urllib.parse.unquote(parts.username)]
    if parts.scheme == "rediss":
        argv += ["--tls", "--insecure"]  # Heroku's own advice: its certificates are self-signed
    env = dict(os.environ)
    if parts.password:
        env["REDISCLI_AUTH"] = urllib.parse.unquote(parts.password)
    return argv, env


def client_env() -> dict[str, str]:
    """The environment for a client: the user's, without libpq settings that would point elsewhere."""
    elsewhere = ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGSERVICE")
    return {k: v for k, v in os.environ.items() if k not in elsewhere}


def reset_postgres(record: Mapping[str, Any], psql: str) -> None:
    """pg:reset: drops the app's database and makes it again, empty (services/postgres.py `reset_sql`)."""
    from dynosim.addons.services.postgres import SUPERUSER, reset_sql

    script = reset_sql(str(record["database"]), str(record["user"]))
    env = {**client_env(), "PGPASSWORD": str(record.get("admin_password") or ""), "PGCONNECT_TIMEOUT": "10"}
    done = subprocess.run(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(record["port"]), "-U", SUPERUSER,
         "-d", "postgres", "-f", "-"],
        input=script, capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        raise AddonError(f"pg:reset failed: {lines[-1] if lines else done.returncode}")


# --- helpers ------------------------------------------------------------------------------------------


def _load(state_dir: Path) -> State:
    return State.load(Path(state_dir) / STATE_FILE)


def _key(entry: Resolved) -> tuple[str, str]:
    return entry.offering.service, entry.as_name


def _entry_of(record: Mapping[str, Any]) -> Resolved | None:
    """A record's add-on as a request (what `run --addon` asked for, or a declaration since removed)."""
    try:
        offering = offering_for(str(record.get("plan", "")))
    except AddonError:
        return None
    as_name = str(record.get("as") or offering.default_as)
    return resolve([AddonRequest(str(record["plan"]), None if as_name == offering.default_as else as_name)])[0]


def _docker_client() -> Any:
    """A client of the engine, or None without one (no socket: no import, no wait)."""
    from dynosim.addons.backends import DEFAULT_SOCKET

    if not os.environ.get("DOCKER_HOST") and not os.path.exists(DEFAULT_SOCKET):
        return None
    try:
        from dynosim.addons.backends.docker import NoEngine, probe
    except ImportError:
        return None
    try:
        return probe()[0]
    except NoEngine:
        return None


def _docker_volume_sizes(state_dir: Path, names: Sequence[str]) -> dict[str, int | None]:
    """The size of each add-on's volume, where the engine says where it is and we may read it (root, the
    local driver); otherwise nothing, and the table shows "-"."""
    client = _docker_client()
    if client is None:
        return {}
    sizes: dict[str, int | None] = {}
    try:
        for name in names:
            try:
                mountpoint = client.volumes.get(f"dynosim-{name}").attrs.get("Mountpoint") or ""
            except Exception:  # no such volume, an engine error: size unknown
                continue
            if mountpoint and os.access(mountpoint, os.R_OK | os.X_OK):
                sizes[name] = disk_usage(Path(mountpoint))
    finally:
        client.close()
    return sizes


def _remove_docker(state_dir: Path, names: Sequence[str], say: Callable[[str], None]) -> None:
    """Removes the add-ons' containers and volumes, found by their labels."""
    client = _docker_client()
    if client is None:
        raise AddonError(
            f"{', '.join(names)} keeps its data in a docker volume, and no Docker engine answers; start Docker "
            "and try again (nothing was deleted)"
        )
    from dynosim.addons.backends.docker import (
        ENGINE_ERRORS,
        LABEL_ADDON,
        LABEL_APP,
        app_id,
    )

    me = app_id(state_dir)
    try:
        for name in names:
            labels = {"label": [f"{LABEL_APP}={me}", f"{LABEL_ADDON}={name}"]}
            for container in client.containers.list(all=True, filters=labels):
                say(f"Removing container {container.name}...")
                container.remove(force=True, v=True)
            for volume in client.volumes.list(filters=labels):
                say(f"Removing volume {volume.name}...")
                volume.remove(force=True)
    except ENGINE_ERRORS as error:
        raise AddonError(f"removing the docker data of {', '.join(names)} failed: {error}") from None
    finally:
        client.close()
