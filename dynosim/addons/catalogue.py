"""Heroku add-on names → the service that stands in for each, and the config vars Heroku's add-on sets.

Pure data and string building: nothing here starts a server. The URLs every service hands to an app
are built in `service_url`, and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from dynosim.errors import AddonError


@dataclass(frozen=True)
class AddonRequest:
    """What the user declared: an app.json "addons" entry, or --addon NAME[:PLAN]."""

    plan: str  # "heroku-postgresql" or "heroku-postgresql:essential-0"
    as_name: str | None = None  # the attachment name: its vars are <AS>_URL…
    # app.json's "options"; dynosim reads {"tls": false} of a Redis add-on (plain redis://, unlike Heroku)
    options: Mapping[str, object] = field(default_factory=dict, hash=False)

    @property
    def tls(self) -> bool:
        """False only when the user asked for plain redis:// with {"tls": false}."""
        return self.options.get("tls", True) is not False


@dataclass(frozen=True)
class Attachment:
    """One provisioned add-on, as the runtime sees it."""

    name: str  # Heroku-style add-on name, e.g. "postgresql-curly-12345" (stable per app)
    plan: str
    service: str  # "postgres" | "redis" | "search" | "smtp"
    backend: str  # "native" | "docker" | "embedded"
    config_vars: Mapping[str, str] = field(hash=False)
    endpoint: str  # "127.0.0.1:54321"


@dataclass(frozen=True)
class Offering:
    """One Heroku add-on name in the catalogue."""

    addon: str  # "heroku-postgresql"
    service: str  # "postgres"
    name_prefix: str  # add-on names look like "<prefix>-<adjective>-<5 digits>"
    default_as: str  # the attachment name when the user gives none
    var_suffixes: tuple[str, ...]  # the config vars are <AS>_<SUFFIX>
    note: str = ""  # said when it starts: what differs from the real add-on ({port} is its port)
    api_login: str = ""  # an SMTP login whose password is <AS>_API_KEY (SendGrid's "apikey")


CATALOGUE: Mapping[str, Offering] = MappingProxyType(
    {
        o.addon: o
        for o in (
            Offering("heroku-postgresql", "postgres", "postgresql", "DATABASE", ("URL",)),
            Offering("heroku-redis", "redis", "redis", "REDIS", ("URL",)),
            Offering("heroku-key-value-store", "redis", "redis", "REDIS", ("URL",)),
            Offering("searchbox", "search", "searchbox", "SEARCHBOX", ("URL", "SSL_URL")),
            Offering("bonsai", "search", "bonsai", "BONSAI", ("URL",)),
            Offering(
                "mailgun",
                "smtp",
                "mailgun",
                "MAILGUN",
                ("SMTP_SERVER", "SMTP_PORT", "SMTP_LOGIN", "SMTP_PASSWORD", "DOMAIN", "API_KEY"),
                note="mail sent over SMTP (MAILGUN_SMTP_*) is captured, see `dynosim mail`; MAILGUN_API_KEY "
                "is a made-up key: Mailgun's HTTP API is not emulated, so mail sent through it is not captured",
            ),
            Offering(
                "sendgrid",
                "smtp",
                "sendgrid",
                "SENDGRID",
                ("USERNAME", "PASSWORD", "API_KEY"),
                note="SendGrid sets no SMTP host or port var, and dynosim cannot redirect a hard-coded "
                "smtp.sendgrid.net: point the app's SMTP host at 127.0.0.1:{port} (login SENDGRID_USERNAME "
                "and SENDGRID_PASSWORD, or apikey and SENDGRID_API_KEY) to have its mail captured, see "
                "`dynosim mail`; SendGrid's HTTP API is not emulated",
                api_login="apikey",
            ),
        )
    }
)

# Heroku Postgres names each database's attachment after a colour: HEROKU_POSTGRESQL_<COLOR>_URL.
COLORS: tuple[str, ...] = (
    "AMBER", "AQUA", "BLACK", "BLUE", "BRONZE", "BROWN", "CHARCOAL", "COBALT", "COPPER", "CRIMSON",
    "CYAN", "GOLD", "GRAY", "GREEN", "IVORY", "JADE", "LIME", "MAROON", "MAUVE", "NAVY", "OLIVE",
    "ONYX", "ORANGE", "PINK", "PUCE", "PURPLE", "RED", "ROSE", "SILVER", "TEAL", "VIOLET", "WHITE",
    "YELLOW",
)  # fmt: skip

# Heroku's add-on names: "postgresql-concentric-12345", "redis-rigid-57093".
ADJECTIVES: tuple[str, ...] = (
    "amorphous", "angular", "asymmetrical", "clean", "closed", "concave", "concentric", "convex",
    "crystalline", "cubed", "curly", "curved", "cylindrical", "deep", "defined", "dimensional",
    "elliptical", "encircled", "fitted", "flat", "horizontal", "infinite", "lateral",
    "metric", "objective", "octagonal", "opaque", "parallel", "perpendicular", "polished", "rectangular",
    "regular", "rigid", "round", "shaped", "sinuous", "solid", "spherical", "symmetrical", "tetrahedral",
    "transparent", "triangular", "vertical",
)  # fmt: skip

_AS_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


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
class Resolved:
    """A request checked against the catalogue."""

    request: AddonRequest
    offering: Offering
    as_name: str  # upper case; DATABASE when the user gave none for Postgres


# Services dynosim runs itself, for which no official image exists: the native backend runs them under
# --addons docker too, and their records say "embedded" whatever the backend.
EMBEDDED: frozenset[str] = frozenset({"smtp"})


def known() -> str:
    return ", ".join(sorted(CATALOGUE))


def offering_for(plan: str) -> Offering:
    addon = plan.split(":", 1)[0]
    offering = CATALOGUE.get(addon)
    if offering is None:
        raise AddonError(f'unknown add-on "{addon}"; known: {known()}')
    return offering


def resolve(requests: Sequence[AddonRequest]) -> list[Resolved]:
    """Checks every request; two add-ons attached under one name is an error naming both."""
    resolved: list[Resolved] = []
    by_as: dict[str, Resolved] = {}
    for request in requests:
        if not re.fullmatch(r"[^\s:]+(:[^\s:]+)?", request.plan):
            raise AddonError(
                f'add-on "{request.plan}" must look like "heroku-postgresql" or "heroku-postgresql:essential-0"'
            )
        offering = offering_for(request.plan)
        if request.as_name is not None and not _AS_NAME.fullmatch(request.as_name):
            raise AddonError(
                f'{request.plan}: attachment name "{request.as_name}" must be letters, digits and _ '
                "starting with a letter, like DATABASE or CACHE"
            )
        if "tls" in request.options:
            if offering.service != "redis":
                raise AddonError(f'{request.plan}: "tls" is an option of heroku-redis and heroku-key-value-store only')
            if not isinstance(request.options["tls"], bool):
                raise AddonError(f'{request.plan}: option "tls" must be true or false, got {request.options["tls"]!r}')
        as_name = (request.as_name or offering.default_as).upper()
        other = by_as.get(as_name)
        if other is not None:
            raise AddonError(
                f"{other.request.plan} and {request.plan} are both attached as {as_name}; "
                'give one of them another name with "as" in app.json or --as'
            )
        entry = Resolved(request, offering, as_name)
        by_as[as_name] = entry
        resolved.append(entry)
    return resolved


def service_url(service: str, endpoint: Endpoint) -> str:
    """The URL an app is given for a service, in the form Heroku's add-on uses."""
    host = f"{endpoint.host}:{endpoint.port}"
    if service == "postgres":
        # postgres://, not postgresql://: Heroku still hands this scheme out, and SQLAlchemy >= 1.4
        # rejects it, so an app that forgets to rewrite it fails here as it fails there.
        return f"postgres://{endpoint.user}:{endpoint.password}@{host}/{endpoint.path}"
    if service == "redis":
        return f"{'rediss' if endpoint.tls else 'redis'}://:{endpoint.password}@{host}"
    if service == "search":
        scheme = "https" if endpoint.tls else "http"
        login = f"{endpoint.user}:{endpoint.password}@" if endpoint.user else ""
        return f"{scheme}://{login}{host}"
    raise AddonError(f"no URL for service {service}")  # our bug: the catalogue and this list disagree


def var_names(entry: Resolved, color: str | None = None) -> list[str]:
    """The config vars an add-on sets, without values (what `dynosim config` can list before start)."""
    names = [f"{entry.as_name}_{suffix}" for suffix in entry.offering.var_suffixes]
    if _colour_attached(entry) and color:
        names.append(f"HEROKU_POSTGRESQL_{color}_URL")
    return names


def config_vars(
    entry: Resolved, endpoint: Endpoint, *, color: str | None = None, keys: Mapping[str, str] = MappingProxyType({})
) -> dict[str, str]:
    """The config vars an add-on sets for the app, in Heroku's formats. `keys`: what an add-on hands out
    besides its endpoint (Mailgun's "domain", an "api_key")."""
    service = entry.offering.service
    if service == "smtp":
        return smtp_vars(entry, endpoint, keys)
    url = service_url(service, endpoint)
    values = {suffix: url for suffix in entry.offering.var_suffixes}
    if "SSL_URL" in values and endpoint.tls_port is not None:  # SEARCHBOX_SSL_URL: https, on a port of its own
        values["SSL_URL"] = service_url(service, replace(endpoint, port=endpoint.tls_port, tls=True))
    result = {f"{entry.as_name}_{suffix}": value for suffix, value in values.items()}
    if _colour_attached(entry) and color:
        # The primary database is attached twice: as DATABASE and under its colour, same value.
        result[f"HEROKU_POSTGRESQL_{color}_URL"] = url
    return result


def _colour_attached(entry: Resolved) -> bool:
    # With an explicit "as", Heroku attaches the database under that name only.
    return entry.offering.service == "postgres" and entry.request.as_name is None


def smtp_vars(entry: Resolved, endpoint: Endpoint, keys: Mapping[str, str]) -> dict[str, str]:
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
    for suffix in entry.offering.var_suffixes:
        value = values.get(suffix)
        if value is None:  # our bug: the record lacks what the catalogue promises
            raise AddonError(f"{entry.offering.addon}: no value for {entry.as_name}_{suffix}")
        result[f"{entry.as_name}_{suffix}"] = value
    return result
