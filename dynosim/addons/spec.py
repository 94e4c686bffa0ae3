"""The contract between the add-on services and the backends that run them: where a service answers
(`Endpoint`), what a backend is told to run (`ServiceSpec`), what it hands back (`Running`), and the
names an add-on is attached under (`Attached`), which its service fills with config vars."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Endpoint:
    """Where a running service answers, and how an app logs in to it."""

    host: str
    port: int
    user: str | None = None
    password: str | None = None
    path: str = ""  # the database name, for Postgres
    tls: bool = False
    tls_port: int | None = None  # search: where it also answers over TLS (SEARCHBOX_SSL_URL)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Attached:
    """How an add-on is attached to the app: its config vars are <as_name>_<suffix>, one per suffix."""

    as_name: str  # "DATABASE"
    suffixes: tuple[str, ...]  # the offering's: ("URL",), Mailgun's six
    color: str | None = None  # Heroku Postgres: the colour it is attached under too; None under a name the user gave

    def names(self) -> list[str]:
        return [f"{self.as_name}_{suffix}" for suffix in self.suffixes]


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
    plan: str = ""  # as declared, "heroku-postgresql:essential-0": the limits it runs with (addons/plans.py)
    restricted: bool = False  # Postgres: over its plan's storage past the enforcement date (addons/capacity.py)
    tls: bool = True  # Redis: rediss:// as on Heroku; False for plain redis:// (app.json "options": {"tls": false})
    tls_port: int | None = None  # search: a second port on 127.0.0.1 that answers over TLS (SEARCHBOX_SSL_URL)
    logins: tuple[tuple[str, str], ...] = ()  # SMTP: more (login, password) pairs it accepts
    # Redis: (directive, value) pairs its plan and redis:timeout/redis:maxmemory set (maxmemory, maxclients…)
    server_config: tuple[tuple[str, str], ...] = ()


class Running(Protocol):
    backend: str  # "native" | "docker" | "embedded"
    endpoint: Endpoint

    def stop(self) -> None: ...


class Backend(Protocol):
    name: str

    def start(self, spec: ServiceSpec) -> Running: ...

    def close(self) -> None: ...
