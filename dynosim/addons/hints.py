"""Hints about add-ons, read off the log stream: what a dyno's output shows going wrong against one.

Each symptom is a failure Heroku users meet against an add-on, which fails on Heroku just the same,
with the fix Heroku documents. When a dyno prints one, the fix is said once, naming the add-on:

- Heroku's Key-Value Store serves a self-signed certificate, so a Redis client that verifies certificates
  (redis-py's default for rediss://) cannot connect; the fix is to turn verification off.
- Heroku Postgres sets DATABASE_URL as postgres://…, a scheme SQLAlchemy 1.4+ refuses
  (NoSuchModuleError: Can't load plugin: sqlalchemy.dialects:postgres); the fix is to rewrite the scheme.

    watch_for_addon_failures(logs, attachments)  # after the add-ons started, before the dynos
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dynosim.addons.catalogue import Attachment
from dynosim.logs import LogLine, LogStream, Subscriber

WINDOW = 30  # lines of one dyno: a traceback names the port in one exception and the failure in another
REDIS_FIX_URL = "https://devcenter.heroku.com/articles/connecting-heroku-redis"
POSTGRES_FIX_URL = "https://help.heroku.com/ZKNTJQSK/why-is-sqlalchemy-1-4-x-not-connecting-to-heroku-postgres"


@dataclass(frozen=True)
class Symptom:
    """A failure a dyno prints against an add-on, and what to say, once, when it is seen."""

    failure: re.Pattern[str]
    scheme: str  # the add-ons concerned: those with a config var of this scheme
    # whether the add-on's port must be named within WINDOW lines of the failure (the failure alone may be
    # another service's); if not, only an add-on of this scheme can cause it
    needs_endpoint: bool
    explain: Callable[[str, Sequence[Attachment]], tuple[str, ...]]  # (dyno, the add-ons it shows failing)


def _redis_tls(dyno: str, attachments: Sequence[Attachment]) -> tuple[str, ...]:
    attachment = attachments[0]  # one: the port near the failure says which
    var = _var(attachment, "rediss://")
    return (
        f"{dyno} cannot verify the TLS certificate of {attachment.plan} ({attachment.name}) at "
        f"{attachment.endpoint}: Heroku's Key-Value Store serves a self-signed certificate, so this fails on "
        "Heroku too",
        f"  fix, as Heroku documents ({REDIS_FIX_URL}): do not verify it, e.g. redis-py "
        f'`redis.from_url(os.environ["{var}"], ssl_cert_reqs=None)`, django-redis '
        '`"CONNECTION_POOL_KWARGS": {"ssl_cert_reqs": None}`, Celery `broker_use_ssl={"ssl_cert_reqs": ssl.CERT_NONE}`',
    )


def _postgres_scheme(dyno: str, attachments: Sequence[Attachment]) -> tuple[str, ...]:
    # the failure does not say which database: the one apps read first, DATABASE_URL, if it is one of them
    attachment = min(attachments, key=lambda a: "DATABASE_URL" not in a.config_vars)
    var = _var(attachment, "postgres://")
    named = f"{attachment.plan} ({attachment.name})"
    return (
        f"{dyno} hands SQLAlchemy the postgres:// URL that {named} sets in {var}: SQLAlchemy 1.4+ refuses that "
        "scheme (NoSuchModuleError: Can't load plugin: sqlalchemy.dialects:postgres), and Heroku Postgres sets it "
        "the same way, so this fails on Heroku too",
        f"  fix, as Heroku documents ({POSTGRES_FIX_URL}): replace postgres:// with postgresql:// when reading "
        f'it, e.g. `create_engine(os.environ["{var}"].replace("postgres://", "postgresql://", 1))` (the same for '
        "Flask-SQLAlchemy's SQLALCHEMY_DATABASE_URI); Heroku may change the URL at any time, so rewrite it in code, "
        "never copy it",
    )


# What Python's ssl module, OpenSSL and the clients built on them print for a rejected certificate
REDIS_TLS = Symptom(
    re.compile(r"CERTIFICATE_VERIFY_FAILED|certificate verify failed|SSLCertVerificationError", re.IGNORECASE),
    "rediss://",
    needs_endpoint=True,
    explain=_redis_tls,
)
# SQLAlchemy's lookup of the dialect a URL names: postgres:// or postgres+driver://, never postgresql
POSTGRES_SCHEME = Symptom(
    re.compile(r"Can't load plugin: sqlalchemy\.dialects:postgres(?!ql)\b"),
    "postgres://",
    needs_endpoint=False,
    explain=_postgres_scheme,
)
SYMPTOMS = (REDIS_TLS, POSTGRES_SCHEME)


def watch_for_addon_failures(logs: LogStream, attachments: Sequence[Attachment]) -> Subscriber | None:
    """Subscribes to `logs` a watcher of the add-ons that a symptom concerns (none: nothing to watch, None);
    returns the subscriber, for `logs.unsubscribe`."""
    trackers = [
        _Tracker(symptom, concerned)
        for symptom in SYMPTOMS
        if (concerned := [a for a in attachments if _var(a, symptom.scheme) is not None])
    ]
    if not trackers:
        return None
    watcher = _Watcher(logs, trackers)
    logs.subscribe(watcher)
    return watcher


def _var(attachment: Attachment, scheme: str) -> str | None:
    """The attachment's config var of that scheme; DATABASE_URL first, as apps read it."""
    names = sorted(attachment.config_vars, key=lambda name: name != "DATABASE_URL")
    return next((name for name in names if attachment.config_vars[name].startswith(scheme)), None)


class _Tracker:
    """One symptom's watch: where each dyno last printed the failure, and the add-ons' ports."""

    def __init__(self, symptom: Symptom, attachments: Sequence[Attachment]) -> None:
        self.symptom = symptom
        self.attachments = attachments
        self.by_port = {a.endpoint.rsplit(":", 1)[1]: a for a in attachments}
        # 127.0.0.1:PORT, localhost:PORT, [::1]:PORT, or redis-py's "(host, PORT)" — not a longer number
        self.mentions = re.compile(r"(?:[\w.\]]:|, )(" + "|".join(map(re.escape, self.by_port)) + r")(?!\d)")
        self.said: set[str] = set()  # add-on names, once each
        self.failed_at: dict[str, int] = {}  # per dyno: the line of the last failure
        self.mentioned_at: dict[tuple[str, str], int] = {}  # (dyno, port): the line of its last mention

    def seen(self, dyno: str, n: int, text: str) -> list[list[Attachment]]:
        """What to explain for this line (the dyno's n-th): each group of add-ons it shows failing, not said before."""
        if self.symptom.failure.search(text):
            self.failed_at[dyno] = n
        failed = self.failed_at.get(dyno)
        if not self.symptom.needs_endpoint:
            if failed != n or self.said:
                return []
            self.said.update(a.name for a in self.attachments)
            return [list(self.attachments)]
        for port in {match[1] for match in self.mentions.finditer(text)}:
            self.mentioned_at[(dyno, port)] = n
        if failed is None:
            return []
        found = []
        for port, attachment in self.by_port.items():
            mentioned = self.mentioned_at.get((dyno, port))
            if mentioned is not None and abs(mentioned - failed) <= WINDOW and attachment.name not in self.said:
                self.said.add(attachment.name)
                found.append([attachment])
        return found


class _Watcher:
    def __init__(self, logs: LogStream, trackers: Sequence[_Tracker]) -> None:
        self.logs = logs
        self.trackers = trackers
        self.count: dict[str, int] = {}  # lines seen per dyno

    def __call__(self, lines: Sequence[LogLine]) -> None:
        for line in lines:
            if line.source != "app" or line.dyno == "api":
                continue
            n = self.count[line.dyno] = self.count.get(line.dyno, 0) + 1
            for tracker in self.trackers:
                for failing in tracker.seen(line.dyno, n, line.text):
                    self._say(line.dyno, tracker.symptom.explain(line.dyno, failing))

    def _say(self, dyno: str, texts: Sequence[str]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        for text in texts:
            if loop is None:
                self.logs.hint(dyno, text)
            else:  # after the line that showed it, also for the subscribers after this one
                loop.call_soon(self.logs.hint, dyno, text)
