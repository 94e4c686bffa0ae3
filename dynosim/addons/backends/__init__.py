"""Backends run a catalogue service somewhere and say where it answers.

A backend has one method that matters, `start(spec) -> Running`, and `close()` once every service it
started is stopped. `native` runs local server binaries as children of dynosim; `docker` runs official
images in long-lived containers, reused from run to run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dynosim.addons.catalogue import Endpoint
from dynosim.errors import AddonError


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


BACKENDS = ("auto", "docker", "native")
DEFAULT_SOCKET = "/var/run/docker.sock"  # where docker-py looks when DOCKER_HOST is not set


def load(name: str, say: Callable[[str], None]) -> Backend:
    """The backend `--addons NAME` asks for; `auto` takes docker when an engine answers, and says which
    backend it took and why in one line."""
    if name == "auto" and not os.environ.get("DOCKER_HOST") and not os.path.exists(DEFAULT_SOCKET):
        # what docker-py would find too, without importing it (≈ 85 ms) on machines without Docker
        say(f"add-ons: native backend (no Docker engine: unix://{DEFAULT_SOCKET}: no such socket)")
        name = "native"
    if name == "auto":
        try:
            from dynosim.addons.backends.docker import NoEngine, probe
        except ImportError as error:  # docker-py or testcontainers missing from this install
            say(f"add-ons: native backend (the docker backend cannot load: {error})")
            name = "native"
        else:
            try:
                client, engine = probe()
            except NoEngine as error:
                say(f"add-ons: native backend (no Docker engine: {error.reason})")
                name = "native"
            else:
                from dynosim.addons.backends.docker import DockerBackend

                say(f"add-ons: docker backend (engine {engine} answers)")
                return DockerBackend(say, client, engine)
    if name == "native":
        from dynosim.addons.backends.native import NativeBackend

        return NativeBackend(say)
    if name == "docker":
        try:
            from dynosim.addons.backends.docker import DockerBackend
        except ImportError as error:
            raise AddonError(
                f"--addons docker: the docker backend cannot load ({error}); "
                "pip install 'docker>=7' 'testcontainers>=4', or run with --addons native"
            ) from None
        backend = DockerBackend(say)  # AddonError when no engine answers
        say(f"add-ons: docker backend (engine {backend.engine} answers)")
        return backend
    raise AddonError(f'unknown add-on backend "{name}"; use one of: {", ".join(BACKENDS)}')
