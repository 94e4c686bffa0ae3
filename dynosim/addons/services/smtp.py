"""SMTP, behind mailgun and sendgrid: their vars (MAILGUN_SMTP_*, SENDGRID_USERNAME…) for dynosim's SMTP
sink, which keeps every message and sends none (the sink itself: dynosim.addons.smtp).

No official image exists, so dynosim runs the sink itself as its child under either backend (`embedded`).
It asks for the add-on's login and password, as Mailgun and SendGrid do, and offers STARTTLS with a
certificate of dynosim's CA when there is one.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

from dynosim.addons import certs
from dynosim.addons.processes import HOST, Child, Host, Server, accepts, check_port
from dynosim.addons.services.base import Service
from dynosim.addons.smtp import LOGINS_VAR, MAIL
from dynosim.addons.spec import Attached, Endpoint, Running, ServiceSpec
from dynosim.ca import TLSError
from dynosim.errors import AddonError


class Smtp(Service):
    name = "smtp"
    title = "SMTP sink"
    embedded = True

    def endpoint(self, spec: ServiceSpec) -> Endpoint:
        return Endpoint(HOST, spec.port, spec.user, spec.password)

    def config_vars(self, attached: Attached, endpoint: Endpoint, keys: Mapping[str, str]) -> dict[str, str]:
        """Mailgun's and SendGrid's vars: each of the offering's suffixes from the endpoint or `keys`."""
        values = {
            "SMTP_SERVER": endpoint.host,
            "SMTP_PORT": str(endpoint.port),
            "SMTP_LOGIN": endpoint.user,
            "SMTP_PASSWORD": endpoint.password,
            "USERNAME": endpoint.user,
            "PASSWORD": endpoint.password,
            "DOMAIN": keys.get("domain"),
            "API_KEY": keys.get("api_key"),
        }
        result: dict[str, str] = {}
        for suffix, name in zip(attached.suffixes, attached.names(), strict=True):
            value = values.get(suffix)
            if value is None:  # our bug: the record lacks what the catalogue promises
                raise AddonError(f"no value for {name}")
            result[name] = value
        return result

    def probe(self, spec: ServiceSpec) -> bool:
        return accepts(spec.port)

    def start_native(self, spec: ServiceSpec, host: Host) -> Running:
        """The sink as a child of dynosim, ready when this returns."""
        check_port(spec)
        (spec.folder / MAIL).mkdir(mode=0o700, parents=True, exist_ok=True)
        logins = [(spec.user or "", spec.password), *spec.logins]
        args = [sys.executable, "-m", "dynosim.addons.smtp", "--folder", str(spec.folder), "--port", str(spec.port)]
        starttls = _certificate(host)
        if starttls is not None:
            args += ["--cert", str(starttls[0]), "--key", str(starttls[1])]
        child = Child.spawn(
            host.spawner,
            args,
            what="the SMTP sink",
            label=spec.label,
            log=spec.folder / "smtp.log",
            stop_signal=signal.SIGTERM,
            death_signal=signal.SIGTERM,
            env={**os.environ, "PYTHONUNBUFFERED": "1", LOGINS_VAR: json.dumps(logins)},
        )
        took = child.wait_ready(lambda: self.probe(spec))
        tls_note = "" if starttls else ", no STARTTLS"
        host.say(
            f"{spec.label}: SMTP sink (embedded{tls_note}) ready on {HOST}:{spec.port} in {took * 1000:.0f} ms; "
            f"mail is kept in {spec.folder / MAIL}, never sent"
        )
        return Server(child, self.endpoint(spec), backend="embedded")


def _certificate(host: Host) -> tuple[Path, Path] | None:
    """The add-ons' certificate from dynosim's CA (the one Postgres serves) for STARTTLS; None, said
    once, when no CA can be had here (a user without a home folder…): the sink then offers no STARTTLS."""
    if host.found.get("smtp:no-tls"):
        return None
    try:
        chain = certs.server_cert(host.found, host.say)
    except (TLSError, OSError) as error:
        host.say(f"SMTP sink: no STARTTLS ({error})")
        host.found["smtp:no-tls"] = True
        return None
    return chain.cert, chain.key
