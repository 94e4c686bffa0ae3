"""Add-ons: the services an app declares (Postgres, Redis, search, SMTP), provisioned locally with the
config vars Heroku's add-ons set, their data kept under <state_dir>/addons/<name>/.

    with Addons(app.state_dir, [AddonRequest("heroku-postgresql")]) as addons:
        for attachment in addons.start():
            env.update(attachment.config_vars)

`<state_dir>/addons.json` (mode 0600) remembers each add-on's name, port, passwords and colour, so
they stay the same from run to run. This module stays light: `python -m dynosim.addons.search`
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
    AddonRequest,
    Attachment,
    Resolved,
    config_vars,
    resolve,
)
from dynosim.errors import AddonError

__all__ = ["AddonRequest", "Addons", "Attachment"]

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
        self._running: list[Any] = []

    def start(self) -> list[Attachment]:
        """Starts every add-on, each ready to accept connections when this returns."""
        if self._backend is not None:
            raise RuntimeError("add-ons are already started; stop them first")
        if not self.resolved:
            return []
        for entry in self.resolved:
            if entry.offering.service == "smtp":
                raise AddonError(f"{entry.offering.addon}: the SMTP sink is not built yet")
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
        records = [state.record_for(entry, backend.name) for entry in self.resolved]
        state.save()
        self._backend = backend
        attachments: list[Attachment] = []
        try:
            for entry, record in zip(self.resolved, records):
                running = backend.start(
                    backends.ServiceSpec(
                        label=f"{entry.request.plan} ({record['name']})",
                        service=record["service"],
                        folder=self.state_dir / "addons" / record["name"],
                        port=record["port"],
                        password=record["password"],
                        user=record.get("user"),
                        database=record.get("database"),
                        admin_password=record.get("admin_password"),
                    )
                )
                self._running.append(running)
                attachments.append(
                    Attachment(
                        name=record["name"],
                        plan=entry.request.plan,
                        service=record["service"],
                        backend=running.backend,
                        config_vars=MappingProxyType(config_vars(entry, running.endpoint, color=record.get("color"))),
                        endpoint=running.endpoint.address,
                    )
                )
        except BaseException:
            self.stop()
            raise
        return attachments

    def stop(self) -> None:
        """Stops everything start() started, last first. Safe to call twice, or after a failed start."""
        errors: list[BaseException] = []
        while self._running:
            try:
                self._running.pop().stop()
            except Exception as error:  # stop the others all the same
                errors.append(error)
        if self._backend is not None:
            self._backend.close()
            self._backend = None
        if errors:
            raise errors[0]

    def __enter__(self) -> Addons:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class State:
    """addons.json: one record per provisioned add-on, kept across runs."""

    def __init__(self, path: Path, records: list[dict[str, Any]]) -> None:
        self.path = path
        self.records = records

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
        return cls(path, records)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"addons": self.records}, f, indent=2)
            f.write("\n")
        os.replace(scratch, self.path)

    def record_for(self, entry: Resolved, backend: str) -> dict[str, Any]:
        """The record of this add-on, made on first provision; anything missing from it is filled in."""
        service = entry.offering.service
        for record in self.records:
            if (record.get("service"), record.get("as"), record.get("backend")) == (service, entry.as_name, backend):
                break
        else:
            record = {"name": self._new_name(entry.offering.name_prefix), "service": service, "as": entry.as_name}
            record["backend"] = backend
            self.records.append(record)
        record["plan"] = entry.request.plan
        if not isinstance(record.get("port"), int):
            from dynosim.addons.backends.native import free_port

            record["port"] = free_port({r["port"] for r in self.records if isinstance(r.get("port"), int)})
        record.setdefault("password", _password())
        if service == "postgres":
            record.setdefault("color", self._new_color())
            record.setdefault("user", "u" + _word(14))
            record.setdefault("database", "d" + _word(14))
            record.setdefault("admin_password", _password())
        return record

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


def _password() -> str:
    return "p" + secrets.token_hex(32)  # Heroku's passwords look like this: p + 64 hex digits


def _word(length: int) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return secrets.choice(string.ascii_lowercase) + "".join(secrets.choice(alphabet) for _ in range(length - 1))
