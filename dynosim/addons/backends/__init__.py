"""Backends run a catalogue service somewhere and say where it answers.

A backend has one method that matters, `start(spec) -> Running`, and `close()` once every service it
started is stopped. `native` runs local server binaries as children of dynosim; `docker` runs official
images in long-lived containers, reused from run to run.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from dynosim.addons.spec import Backend
from dynosim.errors import AddonError

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
