"""Add-ons: the services an app declares (Postgres, Redis, search, SMTP), provisioned locally with the
config vars Heroku's add-ons set, their data kept under <state_dir>/addons/<name>/.

    with Addons(app.state_dir, [AddonRequest("heroku-postgresql")]) as addons:
        for attachment in addons.start():
            env.update(attachment.config_vars)

`<state_dir>/addons.json` (mode 0600) remembers each add-on's identity (name, port, passwords and
colour, made when it is provisioned: by `addons:create`, or for app.json's at the first look at the
config vars or first start), so its config vars are known before any run and stay the same from run to
run (`provisioned_vars`); its backend, recorded at its first start; and the add-ons `dynosim
addons:create` declared ("declared"), which every run starts along with app.json's (`app_requests`). This module stays light: `python -m
dynosim.addons.search` imports it, and the services (services/) and their backends only when add-ons start or
name their vars.
"""

from __future__ import annotations

import json
import random
import secrets
import string
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dynosim.addons import capacity
from dynosim.addons.catalogue import (
    ADJECTIVES,
    COLORS,
    AddonRequest,
    Attachment,
    Resolved,
    config_vars,
    resolve,
    var_names,
)
from dynosim.addons.plans import postgres_plan, redis_plan
from dynosim.addons.spec import Running, ServiceSpec
from dynosim.errors import AddonError
from dynosim.manifest import AddonSpec
from dynosim.privatefile import write_private
from dynosim.runtime.ports import free_port

__all__ = [
    "AddonRequest",
    "Addons",
    "Attachment",
    "app_requests",
    "declared_requests",
    "manifest_requests",
    "provision",
    "provisioned_vars",
]

STATE_FILE = "addons.json"


class Addons:
    """Provisions and starts the declared add-ons, and stops them. Blocking: run it off the event loop.

    An add-on runs where it was created: its record in addons.json names its backend, chosen once, at
    its first start (by `addons:create --backend`, or by the run's `--addons`, `auto` picking), because
    its data lives there. `--addons` only chooses for add-ons that have no record yet."""

    def __init__(
        self,
        state_dir: Path,
        requests: Sequence[AddonRequest],
        *,
        backend: str = "native",
        say: Callable[[str], None] = print,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.resolved = resolve(requests)  # unknown names and plans, clashing attachments fail here, at once
        for entry in self.resolved:
            if entry.offering.service == "postgres":
                capacity.check_settings(postgres_plan(entry.request.plan))  # a malformed override, too
        self.backend_name = backend
        self.say = say
        self._backends: dict[str, Any] = {}  # "docker", "native": loaded when an add-on needs one
        self._picked: str | None = None  # what `auto` picked, asked once per start
        self._running: list[Any] = []
        self._watched: list[capacity.Watched] = []  # Postgres add-ons whose storage is checked
        self._started: dict[str, tuple[Any, Resolved, Any]] = {}  # name → (backend, entry, running), for faults
        self._away: dict[str, int | None] = {}  # name → the port a fault moved its server to; None: stopped
        self._crashed: set[str] = set()  # add-ons whose server exited unplanned, until revive() starts it again
        # what a server's stop and start change (the above), from a fault's thread, recovery's or the loop's
        self._servers = threading.Lock()
        self._records = threading.Lock()  # addons.json read, changed and written: the capacity task's and a fault's
        self.on_server_start: Callable[[str], None] | None = None  # told, from any thread, when a server starts

    def start(self) -> list[Attachment]:
        """Starts every add-on, each ready to accept connections when this returns."""
        if self._running or self._backends:
            raise RuntimeError("add-ons are already started; stop them first")
        if not self.resolved:
            return []
        state = State.load(self.state_dir / STATE_FILE)
        existing = [state.record_of(entry) for entry in self.resolved]  # a duplicate record fails here
        _refuse_shared_vars(state, self.resolved, existing)
        self._say_where(existing)
        attachments: list[Attachment] = []
        try:
            for entry, record in zip(self.resolved, existing, strict=True):
                if record is not None and record.get("backend") is not None:
                    attachments.append(self._start_recorded(state, entry, record))
                else:
                    attachments.append(self._first_start(state, entry, record))
        except BaseException:
            self.stop()
            raise
        return attachments

    def _say_where(self, existing: Sequence[dict[str, Any] | None]) -> None:
        """With an explicit --addons, one line for each add-on that runs elsewhere, where its data is."""
        if self.backend_name == "auto":
            return
        for entry, record in zip(self.resolved, existing, strict=True):
            where = record.get("backend") if record is not None else None
            if record is not None and where in ("docker", "native") and where != self.backend_name:
                self.say(
                    f"{entry.request.plan} ({record['name']}): runs on {record['backend']}, where it was created and "
                    f"its data is (--addons {self.backend_name} chooses for new add-ons only; to begin it again on "
                    f"{self.backend_name}, empty: `dynosim addons:destroy {record['name']}`)"
                )

    def _start_recorded(self, state: State, entry: Resolved, record: dict[str, Any]) -> Attachment:
        """An add-on with a record: on its own backend, never another (an empty one would shadow its data)."""
        where = str(record["backend"])
        state.fill(record, entry)
        try:
            attachment = self._start_one(self._loaded("native" if where == "embedded" else where), entry, record)
        except AddonError as error:
            if where != "docker":
                raise
            reason = getattr(error, "reason", None)  # the docker backend's EngineUnavailable
            raise AddonError(
                f"{entry.request.plan} ({record['name']}) was created on docker, and its data is in the volume "
                f"dynosim-{record['name']}: {f'no Docker engine answers ({reason}); start Docker' if reason else error}"
                f" (or begin again elsewhere, empty: `dynosim addons:destroy {record['name']}`)"
            ) from None
        state.save()
        return attachment

    def _first_start(self, state: State, entry: Resolved, record: dict[str, Any] | None) -> Attachment:
        """An add-on's first start: its identity (made now, or at `addons:create`) and the backend it
        started on are recorded once it has started."""
        where = self._where_new(entry, state)
        if record is None:
            record = state.new_record(entry)
        else:
            state.fill(record, entry)
        record["backend"] = where
        try:
            attachment = self._start_one(self._loaded("native" if where == "embedded" else where), entry, record)
        except AddonError as error:
            if not (self.backend_name == "auto" and where == "docker" and state.declared_backend(entry) is None):
                raise
            # auto means "what works here": an engine that cannot run this image is no use for it
            label = f"{entry.request.plan} ({record['name']})"
            self.say(
                f"{label}: the docker backend could not start it ({str(error).removeprefix(label + ': ')}); "
                "created on the native backend instead, where it stays"
            )
            record["backend"] = "native"
            attachment = self._start_one(self._loaded("native"), entry, record)
        if record not in state.records:
            state.records.append(record)
        state.save()
        return attachment

    def _where_new(self, entry: Resolved, state: State) -> str:
        """Where a new add-on goes: "embedded" for what dynosim always runs itself, else where
        `addons:create --backend` said, else where --addons says (`auto`: asked once per start)."""
        from dynosim.addons.services import EMBEDDED

        if entry.offering.service in EMBEDDED:
            return "embedded"
        chosen = state.declared_backend(entry) or self.backend_name
        if chosen != "auto":
            return chosen
        if self._picked is None:
            from dynosim.addons import backends

            picked = backends.load("auto", self.say)
            self._picked = picked.name
            self._backends.setdefault(picked.name, picked)
        return self._picked

    def _loaded(self, name: str) -> Any:
        if name not in self._backends:
            from dynosim.addons import backends

            self._backends[name] = backends.load(name, self.say)
        return self._backends[name]

    def _start_one(self, backend: Any, entry: Resolved, record: dict[str, Any]) -> Attachment:
        spec = _spec(self.state_dir, entry, record)
        running = backend.start(spec)
        with self._servers:
            self._running.append(running)
            self._started[record["name"]] = (backend, entry, running)
        if entry.offering.service == "postgres":
            self._watch(spec, backend, running, record)
        if not entry.request.tls:
            self.say(
                f"{entry.request.plan} ({record['name']}): plain redis:// without TLS, as app.json asks "
                '("tls": false); this differs from Heroku, whose Key-Value Store takes rediss:// only'
            )
        if entry.offering.note:
            self.say(f"{entry.request.plan} ({record['name']}): {entry.offering.note.format(port=record['port'])}")
        return Attachment(
            name=record["name"],
            plan=entry.request.plan,
            service=record["service"],
            backend=running.backend,
            config_vars=MappingProxyType(
                config_vars(entry, running.endpoint, color=record.get("color"), keys=_keys(record))
            ),
            endpoint=running.endpoint.address,
        )

    def reattached(self, attachment: Attachment) -> Attachment:
        """A started add-on as its record has it now: after a credential rotation or a failover changed
        the record (a password, a port), the config vars and endpoint the app gets next."""
        state = State.load(self.state_dir / STATE_FILE)
        for entry in self.resolved:
            record = state.record_of(entry)
            if record is not None and record.get("name") == attachment.name:
                from dynosim.addons.services import service_for

                endpoint = service_for(entry.offering.service).endpoint(_spec(self.state_dir, entry, record))
                return replace(
                    attachment,
                    config_vars=MappingProxyType(_vars_of(self.state_dir, entry, record)),
                    endpoint=endpoint.address,
                )
        raise AddonError(f"the running app has no add-on {attachment.name}; see `dynosim addons`")

    def _watch(self, spec: ServiceSpec, backend: Any, running: Any, record: dict[str, Any]) -> None:
        """A Postgres add-on's storage, checked now against its plan (its status said when it is not
        Available), then at every check_capacity() while it runs."""
        from dynosim.addons.services import service_for

        plan = postgres_plan(spec.plan)
        if capacity.storage_limit(plan) <= 0:
            return
        admin = service_for("postgres").admin(spec, backend, running)  # type: ignore[attr-defined]
        watched = capacity.Watched(record["name"], spec.label, plan, spec.user or "", spec.database or "", admin)
        self._watched.append(watched)
        previous = record.get("capacity") or {}
        try:
            record["capacity"], line = capacity.check(watched, previous, datetime.now(UTC))
        except AddonError as error:
            self.say(f"{spec.label}: its storage was not checked: {error}")
            return
        if line is None and record["capacity"]["status"] != capacity.AVAILABLE:
            line = capacity.announcement(spec.label, plan, "", record["capacity"])  # still over: said every start
        if line is not None:
            self.say(line)

    @property
    def watching(self) -> bool:
        """Whether a started add-on's storage is checked (check_capacity has something to do)."""
        return bool(self._watched)

    def check_capacity(self, now: datetime) -> list[str]:
        """Each running Postgres add-on's storage checked at `now` on dynosim's clock, its status kept in
        its record; the lines that say what changed. A check that fails (the add-on is stopping) is skipped."""
        lines: list[str] = []
        for watched in list(self._watched):
            try:
                with self._records:
                    state = State.load(self.state_dir / STATE_FILE)
                    record = next((r for r in state.records if r.get("name") == watched.name), None)
                    if record is None:  # destroyed meanwhile
                        continue
                    record["capacity"], line = capacity.check(watched, record.get("capacity") or {}, now)
                    state.save()
            except Exception:  # an add-on stopping under the check (its engine, its server): the next one tries again
                continue
            if line is not None:
                lines.append(line)
        return lines

    # --- one add-on's server stopped and started again, as the add-on faults do (dynosim/faults/kinds/) ---

    def away(self, name: str) -> str | None:
        """Why this add-on's server is not on its own port now (a fault stopped or moved it, or it crashed and
        recovery is starting it again), else None."""
        if name in self._crashed:
            return "its server crashed, and dynosim is starting it again"
        if name not in self._away:
            return None
        port = self._away[name]
        return "its server is stopped" if port is None else f"its server runs on port {port}, behind a proxy"

    def stop_server(self, name: str) -> None:
        """Stops one running add-on's server as a run's end does (Postgres' fast shutdown, Redis' SIGTERM:
        every acknowledged write is on disk), its record and data kept, for start_server."""
        with self._servers:
            _, _, running = self._started_server(name)
            if name in self._crashed:
                raise AddonError(f"{name}: its server crashed, and dynosim is starting it again; see `dynosim addons`")
            if name in self._away and self._away[name] is None:
                raise AddonError(f"{name}: its server is stopped already")
            # out of _running before it stops: its exit is then planned, not recovery's to undo (exited())
            self._running.remove(running)
            self._away[name] = None
        self._watched = [w for w in self._watched if w.name != name]
        running.stop()

    def start_server(self, name: str, port: int | None = None) -> int:
        """Starts what stop_server stopped, from its record: its data, credentials and port, or `port`
        this once (what addon-latency's proxy forwards to; the record and config vars keep their own).
        Returns the port it answers on."""
        spec = self._start_server(name, port)
        with self._servers:
            if port is None:
                self._away.pop(name, None)
            else:
                self._away[name] = port
        return spec.port

    def revive(self, name: str) -> Running:
        """Starts again a server that exited() unplanned, where it ran (its own port, or the one a fault moved
        it to), with its data: Postgres recovers from its WAL, Redis reloads its append-only file. AddonError
        when it cannot start; the add-on stays crashed for the next try."""
        with self._servers:
            if name not in self._crashed:
                raise AddonError(f"{name}: its server has not crashed")
        self._start_server(name, self._away.get(name))
        with self._servers:
            self._crashed.discard(name)
            return self._started_server(name)[2]

    def _start_server(self, name: str, port: int | None) -> ServiceSpec:
        backend, entry, _ = self._started_server(name)
        state, record = self._record(name, entry)
        spec = _spec(self.state_dir, entry, record if port is None else {**record, "port": port})
        running = backend.start(spec)
        with self._servers:
            if name not in self._started:  # the run stopped its add-ons meanwhile: this one goes too
                running.stop()
                raise AddonError(f"{name}: the run is stopping its add-ons")
            self._running.append(running)
            self._started[name] = (backend, entry, running)
        if entry.offering.service == "postgres":  # its storage checks follow the server
            with self._records:
                state, record = self._record(name, entry)
                self._watch(spec, backend, running, record)
                state.save()
        if self.on_server_start is not None:
            self.on_server_start(name)
        return spec

    def servers(self) -> list[tuple[str, Resolved, Running]]:
        """Each add-on's server running now (not one a fault stopped, nor one that crashed), with its add-on."""
        with self._servers:
            return [
                (name, entry, running)
                for name, (_, entry, running) in self._started.items()
                if running in self._running
            ]

    def exited(self, name: str, running: Running) -> bool:
        """Told that this server's process ended: True when nobody meant it to (not a fault's stop_server, a
        reset's, nor the run's end, which each take it out of the running first), and the add-on is then
        crashed until revive()."""
        with self._servers:
            found = self._started.get(name)
            if found is None or found[2] is not running or running not in self._running:
                return False
            self._running.remove(running)
            self._crashed.add(name)
        self._watched = [w for w in self._watched if w.name != name]
        return True

    def move_server(self, name: str) -> int:
        """A new port in a stopped add-on's record, which start_server then starts it on and its config
        vars name: where a failover's promoted standby answers."""
        _, entry, _ = self._started_server(name)
        with self._records:
            state, record = self._record(name, entry)
            taken = {r[key] for r in state.records for key in ("port", "tls_port") if isinstance(r.get(key), int)}
            record["port"] = free_port(taken)
            state.save()
        return int(record["port"])

    def _record(self, name: str, entry: Resolved) -> tuple[State, dict[str, Any]]:
        state = State.load(self.state_dir / STATE_FILE)
        record = state.record_of(entry)
        if record is None:
            raise AddonError(f"{name} has no record in {state.path} any more; see `dynosim addons`")
        return state, record

    def _started_server(self, name: str) -> tuple[Any, Resolved, Any]:
        found = self._started.get(name)
        if found is None:
            raise AddonError(f"the running app has no add-on {name}; see `dynosim addons`")
        return found

    def stop(self) -> None:
        """Stops everything start() started, last first. Safe to call twice, or after a failed start."""
        self._watched.clear()
        with self._servers:
            self._started.clear()
            self._away.clear()
            self._crashed.clear()
        errors: list[BaseException] = []
        while self._running:
            try:
                self._running.pop().stop()
            except Exception as error:  # stop the others all the same
                errors.append(error)
        while self._backends:
            self._backends.popitem()[1].close()
        self._picked = None
        if errors:
            raise errors[0]

    def __enter__(self) -> Addons:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class State:
    """addons.json: one record per provisioned add-on, kept across runs, and the add-ons
    `addons:create` declared (each with the name and colour it reserved for its first record)."""

    def __init__(self, path: Path, records: list[dict[str, Any]], declared: list[dict[str, Any]] | None = None) -> None:
        self.path = path
        self.records = records
        self.declared = declared if declared is not None else []

    @classmethod
    def load(cls, path: Path) -> State:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path, [])
        except (OSError, ValueError) as error:
            raise AddonError(f"cannot read {path} ({error}); fix or delete it (add-ons then get new ports)") from None
        records = raw.get("addons") if isinstance(raw, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise AddonError(f'{path} has no "addons" list; fix or delete it (add-ons then get new ports)')
        declared = raw.get("declared", [])
        if not isinstance(declared, list) or not all(
            isinstance(d, dict) and isinstance(d.get("plan"), str) for d in declared
        ):
            raise AddonError(
                f'{path}: its "declared" list is broken; fix it, or delete it and declare the add-ons again'
            )
        return cls(path, records, declared)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_private(self.path, json.dumps({"addons": self.records, "declared": self.declared}, indent=2) + "\n")

    def record_of(self, entry: Resolved) -> dict[str, Any] | None:
        """This add-on's record (one per service and attachment), or None before its first start."""
        key = (entry.offering.service, entry.as_name)
        found = [r for r in self.records if (r.get("service"), r.get("as")) == key]
        if len(found) > 1:  # what dynosim before 0.2 left behind: an `auto` fallback's second, empty add-on
            names = ", ".join(f"{r.get('name')} on {r.get('backend')}" for r in found)
            raise AddonError(
                f"{self.path}: {entry.request.plan} attached as {entry.as_name} has {len(found)} add-ons ({names}); "
                "keep the one holding your data and remove the other with `dynosim addons:destroy NAME` "
                "(`dynosim addons` shows their sizes)"
            )
        return found[0] if found else None

    def new_record(self, entry: Resolved) -> dict[str, Any]:
        """A record of this add-on's identity, with the name and colour `addons:create` reserved, without
        a backend (its first start records that); not kept until the caller appends it."""
        service = entry.offering.service
        reserved = self.declaration_of(service, entry.as_name) or {}
        name = reserved.get("name")
        if not isinstance(name, str) or name in {r.get("name") for r in self.records}:
            name = self._new_name(entry.offering.name_prefix)
        record: dict[str, Any] = {"name": name, "service": service, "as": entry.as_name}
        if service == "postgres" and isinstance(reserved.get("color"), str):
            record["color"] = reserved["color"]
        self.fill(record, entry)
        return record

    def fill(self, record: dict[str, Any], entry: Resolved) -> None:
        """Fills in the identity the record lacks (an older dynosim's records lack some); keeps what it has."""
        service = entry.offering.service
        record["plan"] = entry.request.plan
        others = [r for r in self.records if r is not record]
        if not isinstance(record.get("port"), int):
            record["port"] = free_port({r["port"] for r in others if isinstance(r.get("port"), int)})
        if service == "search" and not isinstance(record.get("tls_port"), int):  # SEARCHBOX_SSL_URL's, https
            taken = {r[key] for r in [*others, record] for key in ("port", "tls_port") if isinstance(r.get(key), int)}
            record["tls_port"] = free_port(taken)
        record.setdefault("password", _password())
        if service == "postgres":
            record.setdefault("color", self._new_color())
            record.setdefault("user", "u" + _word(14))
            record.setdefault("database", "d" + _word(14))
            record.setdefault("admin_password", _password())
        if service == "smtp":
            for key, value in _smtp_keys(entry.offering.addon).items():
                record.setdefault(key, value)

    def declared_backend(self, entry: Resolved) -> str | None:
        """The backend `addons:create --backend` chose for this add-on, if it chose one."""
        declared = self.declaration_of(entry.offering.service, entry.as_name) or {}
        backend = declared.get("backend")
        return backend if backend in ("docker", "native") else None

    def declaration_of(self, service: str, as_name: str) -> dict[str, Any] | None:
        """What `addons:create` declared for this service attached as `as_name`, if it did."""
        from dynosim.addons.catalogue import offering_for

        for declared in self.declared:
            try:
                offering = offering_for(declared["plan"])
            except AddonError:
                continue
            if (offering.service, (declared.get("as") or offering.default_as).upper()) == (service, as_name):
                return declared
        return None

    def _new_name(self, prefix: str) -> str:
        taken = {r.get("name") for r in self.records}
        while True:
            name = f"{prefix}-{random.choice(ADJECTIVES)}-{random.randint(10000, 99999)}"
            if name not in taken:
                return name

    def _new_color(self) -> str:
        taken = {r.get("color") for r in self.records}
        free = [c for c in COLORS if c not in taken] or list(COLORS)
        return random.choice(free)


def provisioned_vars(state_dir: Path, requests: Sequence[AddonRequest]) -> dict[str, str]:
    """The config vars these add-ons set, from their records, without starting them: what `heroku
    config` shows once an add-on is provisioned (`provision`)."""
    values: dict[str, str] = {}
    for entry, record in provision(state_dir, requests):
        values.update(_vars_of(Path(state_dir), entry, record))
    return values


def provision(state_dir: Path, requests: Sequence[AddonRequest]) -> list[tuple[Resolved, dict[str, Any]]]:
    """Each add-on with its record. One without a record (app.json's, before its first start) gets its
    identity here, as Heroku provisions app.json's add-ons when it creates the app; its first start
    then only chooses its backend."""
    resolved = resolve(requests)
    if not resolved:
        return []
    state = State.load(Path(state_dir) / STATE_FILE)
    records = [state.record_of(entry) for entry in resolved]
    _refuse_shared_vars(state, resolved, records)
    before = json.dumps(state.records, sort_keys=True)
    provisioned: list[tuple[Resolved, dict[str, Any]]] = []
    for entry, found in zip(resolved, records, strict=True):
        record = found if found is not None else state.new_record(entry)
        state.fill(record, entry)
        if found is None:
            state.records.append(record)
        provisioned.append((entry, record))
    if json.dumps(state.records, sort_keys=True) != before:
        state.save()
    return provisioned


def _spec(state_dir: Path, entry: Resolved, record: dict[str, Any]) -> ServiceSpec:
    """What a backend is told to run for this record: everything in it is fixed when it is provisioned."""
    api_login = entry.offering.api_login
    return ServiceSpec(
        label=f"{entry.request.plan} ({record['name']})",
        service=record["service"],
        folder=state_dir / "addons" / record["name"],
        port=record["port"],
        password=record["password"],
        user=record.get("user"),
        database=record.get("database"),
        admin_password=record.get("admin_password"),
        plan=entry.request.plan,
        restricted=(record.get("capacity") or {}).get("status") == capacity.RESTRICTED,
        logins=((api_login, record["api_key"]),) if api_login else (),
        tls=entry.request.tls,
        tls_port=record.get("tls_port"),
        server_config=redis_plan(entry.request.plan).directives(record) if record["service"] == "redis" else (),
    )


def _vars_of(state_dir: Path, entry: Resolved, record: dict[str, Any]) -> dict[str, str]:
    """The config vars of a recorded add-on: the same values whichever backend runs it (both answer
    on 127.0.0.1 at the recorded port)."""
    from dynosim.addons.services import service_for

    endpoint = service_for(entry.offering.service).endpoint(_spec(state_dir, entry, record))
    return config_vars(entry, endpoint, color=record.get("color"), keys=_keys(record))


def manifest_requests(specs: Iterable[AddonSpec]) -> list[AddonRequest]:
    """app.json's `addons`, as requests: the one place they are turned into them."""
    return [AddonRequest(spec.plan, spec.as_name, dict(spec.options)) for spec in specs]


def app_requests(specs: Iterable[AddonSpec], state_dir: Path) -> list[AddonRequest]:
    """Every add-on the app has: app.json's, then those `addons:create` declared (what a run starts)."""
    return [*manifest_requests(specs), *declared_requests(state_dir)]


def declared_requests(state_dir: Path) -> list[AddonRequest]:
    """The add-ons `dynosim addons:create` declared for the app: every run starts them, after app.json's."""
    path = Path(state_dir) / STATE_FILE
    if not path.exists():
        return []
    return [AddonRequest(d["plan"], d.get("as")) for d in State.load(path).declared]


def _refuse_shared_vars(state: State, resolved: Sequence[Resolved], records: Sequence[dict[str, Any] | None]) -> None:
    """Two add-ons setting one config var (a Redis attached as HEROKU_POSTGRESQL_JADE beside that
    Postgres) would hide one from the app; Heroku refuses that attachment, and so do we, before any starts."""
    setters: dict[str, str] = {}
    for entry, record in zip(resolved, records, strict=True):
        color = (record or state.declaration_of(entry.offering.service, entry.as_name) or {}).get("color")
        who = f"{entry.request.plan} (as {entry.as_name})"
        for var in var_names(entry, color if isinstance(color, str) else None):
            if var in setters:
                raise AddonError(
                    f"{setters[var]} and {who} would both set {var}; give one of them another attachment name "
                    '(--as, or "as" in app.json)'
                )
            setters[var] = who


def _keys(record: dict[str, Any]) -> dict[str, str]:
    return {key: record[key] for key in ("domain", "api_key") if isinstance(record.get(key), str)}


def _smtp_keys(addon: str) -> dict[str, str]:
    """The login, domain and API key a mail add-on hands out, in the shapes the real ones have."""
    if addon == "mailgun":
        domain = f"sandbox{secrets.token_hex(16)}.mailgun.org"  # Mailgun's sandbox domains look like this
        return {
            "user": f"postmaster@{domain}",
            "domain": domain,
            "api_key": f"{secrets.token_hex(16)}-{secrets.token_hex(4)}-{secrets.token_hex(4)}",
        }
    # SendGrid's Heroku add-on: an app user name, and API keys like SG.<22>.<43>
    return {
        "user": f"app{random.randint(10_000_000, 99_999_999)}@heroku.com",
        "api_key": f"SG.{secrets.token_urlsafe(16)[:22]}.{secrets.token_urlsafe(32)[:43]}",
    }


def _password() -> str:
    return "p" + secrets.token_hex(32)  # Heroku's passwords look like this: p + 64 hex digits


def _word(length: int) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return secrets.choice(string.ascii_lowercase) + "".join(secrets.choice(alphabet) for _ in range(length - 1))
