"""Add-ons: the services an app declares (Postgres, Redis, search, SMTP), provisioned locally with the
config vars Heroku's add-ons set, their data kept under <state_dir>/addons/<name>/.

    with Addons(app.state_dir, [AddonRequest("heroku-postgresql")]) as addons:
        for attachment in addons.start():
            env.update(attachment.config_vars)

`<state_dir>/addons.json` (mode 0600) remembers each add-on's name, port, passwords and colour, so
they stay the same from run to run, and the add-ons `dynosim addons:create` declared ("declared"),
which every run starts along with app.json's (`declared_requests`). This module stays light: `python -m dynosim.addons.search`
imports it, and the servers' modules are imported only by `start()`.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import string
from collections.abc import Callable, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dynosim.addons.catalogue import (
    ADJECTIVES,
    COLORS,
    EMBEDDED,
    AddonRequest,
    Attachment,
    Resolved,
    config_vars,
    resolve,
)
from dynosim.errors import AddonError

__all__ = ["AddonRequest", "Addons", "Attachment", "declared_requests"]

STATE_FILE = "addons.json"


class Addons:
    """Provisions and starts the declared add-ons, and stops them. Blocking: run it off the event loop."""

    def __init__(
        self,
        state_dir: Path,
        requests: Sequence[AddonRequest],
        *,
        backend: str = "native",
        say: Callable[[str], None] = print,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.resolved = resolve(requests)  # unknown names and clashing attachments fail here, at once
        self.backend_name = backend
        self.say = say
        self._backend: Any = None
        self._embedded: Any = None  # the native backend that runs EMBEDDED services beside docker
        self._running: list[Any] = []

    @staticmethod
    def declared(state_dir: Path) -> list[AddonRequest]:
        """The add-ons `addons:create` declared (see `declared_requests`), for a run to add to app.json's."""
        return declared_requests(state_dir)

    def start(self) -> list[Attachment]:
        """Starts every add-on, each ready to accept connections when this returns."""
        if self._backend is not None:
            raise RuntimeError("add-ons are already started; stop them first")
        if not self.resolved:
            return []
        from dynosim.addons import backends

        backend = backends.load(self.backend_name, self.say)
        try:
            return self._start_on(backend)
        except AddonError as error:
            if self.backend_name != "auto" or backend.name != "docker":
                raise
            # auto means "what works here": an engine without the images (none can be pulled) is no use
            self.say(f"add-ons: the docker backend could not start them ({error}); using the native backend")
            return self._start_on(backends.load("native", self.say))

    def _start_on(self, backend: Any) -> list[Attachment]:
        from dynosim.addons import backends

        state = State.load(self.state_dir / STATE_FILE)
        records = [state.record_for(entry, _backend_name(entry, backend.name)) for entry in self.resolved]
        state.save()
        self._backend = backend
        attachments: list[Attachment] = []
        try:
            for entry, record in zip(self.resolved, records):
                runs_on = self._embedded_backend(backend) if entry.offering.service in EMBEDDED else backend
                api_login = entry.offering.api_login
                running = runs_on.start(
                    backends.ServiceSpec(
                        label=f"{entry.request.plan} ({record['name']})",
                        service=record["service"],
                        folder=self.state_dir / "addons" / record["name"],
                        port=record["port"],
                        password=record["password"],
                        user=record.get("user"),
                        database=record.get("database"),
                        admin_password=record.get("admin_password"),
                        logins=((api_login, record["api_key"]),) if api_login else (),
                        tls=entry.request.tls,
                        tls_port=record.get("tls_port"),
                    )
                )
                self._running.append(running)
                if not entry.request.tls:
                    self.say(
                        f"{entry.request.plan} ({record['name']}): plain redis:// without TLS, as app.json asks "
                        '("tls": false); this differs from Heroku, whose Key-Value Store takes rediss:// only'
                    )
                if entry.offering.note:
                    self.say(f"{entry.request.plan} ({record['name']}): {entry.offering.note.format(port=record['port'])}")
                attachments.append(
                    Attachment(
                        name=record["name"],
                        plan=entry.request.plan,
                        service=record["service"],
                        backend=running.backend,
                        config_vars=MappingProxyType(
                            config_vars(entry, running.endpoint, color=record.get("color"), keys=_keys(record))
                        ),
                        endpoint=running.endpoint.address,
                    )
                )
        except BaseException:
            self.stop()
            raise
        return attachments

    def _embedded_backend(self, backend: Any) -> Any:
        if backend.name == "native":
            return backend
        if self._embedded is None:
            from dynosim.addons import backends

            self._embedded = backends.load("native", self.say)
        return self._embedded

    def stop(self) -> None:
        """Stops everything start() started, last first. Safe to call twice, or after a failed start."""
        errors: list[BaseException] = []
        while self._running:
            try:
                self._running.pop().stop()
            except Exception as error:  # stop the others all the same
                errors.append(error)
        for attribute in ("_embedded", "_backend"):
            backend = getattr(self, attribute)
            if backend is not None:
                backend.close()
                setattr(self, attribute, None)
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
        if not isinstance(declared, list) or not all(isinstance(d, dict) and isinstance(d.get("plan"), str) for d in declared):
            raise AddonError(f'{path}: its "declared" list is broken; fix it, or delete it and declare the add-ons again')
        return cls(path, records, declared)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"addons": self.records, "declared": self.declared}, f, indent=2)
            f.write("\n")
        os.replace(scratch, self.path)

    def record_for(self, entry: Resolved, backend: str) -> dict[str, Any]:
        """The record of this add-on, made on first provision; anything missing from it is filled in."""
        service = entry.offering.service
        for record in self.records:
            if (record.get("service"), record.get("as"), record.get("backend")) == (service, entry.as_name, backend):
                break
        else:
            reserved = self.declaration_of(service, entry.as_name) or {}
            name = reserved.get("name")
            if not isinstance(name, str) or name in {r.get("name") for r in self.records}:
                name = self._new_name(entry.offering.name_prefix)
            record = {"name": name, "service": service, "as": entry.as_name}
            record["backend"] = backend
            if service == "postgres" and isinstance(reserved.get("color"), str):
                record["color"] = reserved["color"]
            self.records.append(record)
        record["plan"] = entry.request.plan
        if not isinstance(record.get("port"), int):
            from dynosim.addons.backends.native import free_port

            record["port"] = free_port({r["port"] for r in self.records if isinstance(r.get("port"), int)})
        if service == "search" and not isinstance(record.get("tls_port"), int):  # SEARCHBOX_SSL_URL's, https
            from dynosim.addons.backends.native import free_port

            taken = {r[key] for r in self.records for key in ("port", "tls_port") if isinstance(r.get(key), int)}
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
        return record

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


def declared_requests(state_dir: Path) -> list[AddonRequest]:
    """The add-ons `dynosim addons:create` declared for the app: every run starts them, after app.json's."""
    path = Path(state_dir) / STATE_FILE
    if not path.exists():
        return []
    return [AddonRequest(d["plan"], d.get("as")) for d in State.load(path).declared]


def _backend_name(entry: Resolved, backend: str) -> str:
    """What a record says runs the add-on: "embedded" for what dynosim always runs itself."""
    return "embedded" if entry.offering.service in EMBEDDED else backend


def _keys(record: dict[str, Any]) -> dict[str, str]:
    return {key: record[key] for key in ("domain", "api_key") if isinstance(record.get(key), str)}


def _smtp_keys(addon: str) -> dict[str, str]:
    """The login, domain and API key a mail add-on hands out, in the shapes the real ones have."""
    if addon == "mailgun":
        domain = f"sandbox{secrets.token_hex(16)}.mailgun.org"  # Mailgun's sandbox domains look like this
        return {"user": f"postmaster@{domain}", "domain": domain,
                "api_key": f"{secrets.token_hex(16)}-{secrets.token_hex(4)}-{secrets.token_hex(4)}"}
    # SendGrid's Heroku add-on: an app user name, and API keys like SG.<22>.<43>
    return {"user": f"app{random.randint(10_000_000, 99_999_999)}@heroku.com",
            "api_key": f"SG.{secrets.token_urlsafe(16)[:22]}.{secrets.token_urlsafe(32)[:43]}"}


def _password() -> str:
    return "p" + secrets.token_hex(32)  # Heroku's passwords look like this: p + 64 hex digits


def _word(length: int) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return secrets.choice(string.ascii_lowercase) + "".join(secrets.choice(alphabet) for _ in range(length - 1))
