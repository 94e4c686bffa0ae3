"""The contract between the add-on services and the backends that run them: what a backend is told
to run (`ServiceSpec`), and what it hands back (`Running`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dynosim.addons.catalogue import Endpoint


@dataclass(frozen=True)
class ServiceSpec:
    """What a backend needs to run one add-on's service. Everything here is kept across runs."""

    label: str  # how messages name the add-on: "heroku-postgresql (postgresql-curly-12345)"
    service: str  # "postgres" | "redis" | "search" | "smtp"
    folder: Path  # the add-on's own folder under <state_dir>/addons/
    port: int  # on 127.0.0.1
    password: str
    user: str | None = None  # Postgres: the app's role
    database: str | None = None  # Postgres: the app's database
    admin_password: str | None = None  # Postgres: our superuser's password
    tls: bool = True  # Redis: rediss:// as on Heroku; False for plain redis:// (app.json "options": {"tls": false})
    tls_port: int | None = None  # search: a second port on 127.0.0.1 that answers over TLS (SEARCHBOX_SSL_URL)
    logins: tuple[tuple[str, str], ...] = ()  # SMTP: more (login, password) pairs it accepts


class Running(Protocol):
    backend: str  # "native" | "docker" | "embedded"
    endpoint: Endpoint

    def stop(self) -> None: ...


class Backend(Protocol):
    name: str

    def start(self, spec: ServiceSpec) -> Running: ...

    def close(self) -> None: ...
