"""Search, behind searchbox and bonsai: SEARCHBOX_URL / BONSAI_URL (http), and SEARCHBOX_SSL_URL (https
on a second port, a certificate of dynosim's CA).

Native: dynosim's Elasticsearch stand-in (the dynosim.addons.search package) as a child process, which
serves both ports itself. Docker: Elasticsearch 8, single node, security off, a bounded heap (OpenSearch
when the image is one); its https port is dynosim's TLS proxy in front of the container (docker.py).
"""

from __future__ import annotations

import http.client
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from dynosim.addons import certs
from dynosim.addons.processes import HOST, Child, Host, Server, accepts, check_port, check_tls_port
from dynosim.addons.services.base import Service
from dynosim.addons.spec import Attached, Endpoint, Running, ServiceSpec
from dynosim.privatefile import private_folder


class Search(Service):
    name = "search"
    title = "Elasticsearch"
    image_var = "DYNOSIM_SEARCH_IMAGE"
    default_image = "elasticsearch:8.17.0"
    container_port = 9200
    ready_timeout = 180.0  # a JVM's cold start
    HEAP = "512m"

    # --- what the app is given ------------------------------------------------------------------

    def endpoint(self, spec: ServiceSpec) -> Endpoint:
        return Endpoint(HOST, spec.port, tls_port=spec.tls_port)

    def config_vars(self, attached: Attached, endpoint: Endpoint, keys: Mapping[str, str]) -> dict[str, str]:
        values = dict.fromkeys(attached.suffixes, url(endpoint))
        if "SSL_URL" in values and endpoint.tls_port is not None:  # SEARCHBOX_SSL_URL: https, on a port of its own
            values["SSL_URL"] = url(replace(endpoint, port=endpoint.tls_port, tls=True))
        return {f"{attached.as_name}_{suffix}": value for suffix, value in values.items()}

    def probe(self, spec: ServiceSpec) -> bool:
        connection = http.client.HTTPConnection(HOST, spec.port, timeout=2)
        try:
            connection.request("GET", "/")
            return connection.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False  # HTTP errors too: a proxy in front may accept, then close, before the server is up
        finally:
            connection.close()

    # --- native ---------------------------------------------------------------------------------

    def start_native(self, spec: ServiceSpec, host: Host) -> Running:
        """The embedded Elasticsearch stand-in, as a child process."""
        check_port(spec)
        data = spec.folder / "data"
        private_folder(data, levels=3)
        args = [sys.executable, "-m", "dynosim.addons.search", "--data", str(data), "--port", str(spec.port)]
        if spec.tls_port is not None:
            check_tls_port(spec)
            chain = certs.server_cert(host.found, host.say)
            args += ["--tls-port", str(spec.tls_port), "--cert", str(chain.cert), "--key", str(chain.key)]
        child = Child.spawn(
            host.spawner,
            args,
            what="the search stand-in",
            label=spec.label,
            log=spec.folder / "search.log",
            stop_signal=signal.SIGTERM,
            death_signal=signal.SIGTERM,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        tls_port = spec.tls_port
        took = child.wait_ready(lambda: self.probe(spec) and (tls_port is None or accepts(tls_port)))
        https = "" if tls_port is None else f", https on {tls_port}"
        host.say(f"{spec.label}: search stand-in (embedded) ready on {HOST}:{spec.port}{https} in {took * 1000:.0f} ms")
        return Server(child, self.endpoint(spec), backend="embedded")

    # --- docker ---------------------------------------------------------------------------------

    @staticmethod
    def _opensearch(image: str) -> bool:
        return "opensearch" in image.rsplit("/", 1)[-1]

    def image_title(self, image: str) -> str:
        return "OpenSearch" if self._opensearch(image) else self.title

    def data_path(self, image: str) -> str:
        return "/usr/share/opensearch/data" if self._opensearch(image) else "/usr/share/elasticsearch/data"

    def environment(self, spec: ServiceSpec, image: str) -> dict[str, str]:
        heap = f"-Xms{self.HEAP} -Xmx{self.HEAP}"
        if self._opensearch(image):
            return {
                "discovery.type": "single-node",
                "DISABLE_SECURITY_PLUGIN": "true",
                "DISABLE_INSTALL_DEMO_CONFIG": "true",
                "OPENSEARCH_JAVA_OPTS": heap,
            }
        return {"discovery.type": "single-node", "xpack.security.enabled": "false", "ES_JAVA_OPTS": heap}

    def create_options(self, image: str) -> dict[str, Any]:
        return {"mem_limit": "1g"}  # heap + the JVM's own; without a limit a JVM sizes itself to the host


def url(endpoint: Endpoint) -> str:
    scheme = "https" if endpoint.tls else "http"
    login = f"{endpoint.user}:{endpoint.password}@" if endpoint.user else ""
    return f"{scheme}://{login}{endpoint.address}"
