"""Heroku add-on names → the service that stands in for each, and the names its config vars get.

Pure data: nothing here starts a server. An offering names its service, its add-on names and the
attachment's default name and var suffixes; the values, URLs included, are the service's own
(services/<name>.py `config_vars`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from dynosim.addons.plans import postgres_plan, redis_plan
from dynosim.addons.spec import Attached, Endpoint
from dynosim.errors import AddonError
from dynosim.manifest import quoted


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
class Resolved:
    """A request checked against the catalogue."""

    request: AddonRequest
    offering: Offering
    as_name: str  # upper case; DATABASE when the user gave none for Postgres


def known() -> str:
    return ", ".join(sorted(CATALOGUE))


def offering_for(plan: str) -> Offering:
    addon = plan.split(":", 1)[0]
    offering = CATALOGUE.get(addon)
    if offering is None:
        raise AddonError(f"unknown add-on {quoted(addon)}; known: {known()}")
    return offering


def resolve(requests: Sequence[AddonRequest]) -> list[Resolved]:
    """Checks every request; two add-ons attached under one name is an error naming both."""
    resolved: list[Resolved] = []
    by_as: dict[str, Resolved] = {}
    for request in requests:
        if not re.fullmatch(r"[^\s:]+(:[^\s:]+)?", request.plan):
            raise AddonError(
                f'add-on {quoted(request.plan)} must look like "heroku-postgresql" or "heroku-postgresql:essential-0"'
            )
        offering = offering_for(request.plan)
        _check_plan(request.plan, offering)
        if request.as_name is not None and not _AS_NAME.fullmatch(request.as_name):
            raise AddonError(
                f"{request.plan}: attachment name {quoted(request.as_name)} must be letters, digits and _ "
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


def _check_plan(plan: str, offering: Offering) -> None:
    """A plan Heroku does not have, or has retired, is refused here, before anything is written or
    started (addons:create, a run's app.json); Heroku CI's in-dyno plans are accepted, without limits."""
    if offering.service == "postgres":
        postgres_plan(plan)  # in-dyno included: it has its own (lack of) limits
    elif offering.service == "redis":
        redis_plan(plan)


def attached(entry: Resolved, color: str | None = None) -> Attached:
    # With an explicit "as", Heroku attaches the database under that name only, not under its colour.
    return Attached(entry.as_name, entry.offering.var_suffixes, color if entry.request.as_name is None else None)


def var_names(entry: Resolved, color: str | None = None) -> list[str]:
    """The config vars an add-on sets, without values (what `dynosim config` can list before start)."""
    from dynosim.addons.services import service_for  # not at import: `import dynosim.addons` stays light

    return service_for(entry.offering.service).var_names(attached(entry, color))


def config_vars(
    entry: Resolved, endpoint: Endpoint, *, color: str | None = None, keys: Mapping[str, str] = MappingProxyType({})
) -> dict[str, str]:
    """The config vars an add-on sets for the app, in Heroku's formats. `keys`: what an add-on hands out
    besides its endpoint (Mailgun's "domain", an "api_key")."""
    from dynosim.addons.services import service_for

    return service_for(entry.offering.service).config_vars(attached(entry, color), endpoint, keys)
