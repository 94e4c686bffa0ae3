"""Hints about add-ons, read off the log stream: what a dyno's output shows going wrong against one.

Heroku's Key-Value Store serves a self-signed certificate, so a Redis client that verifies certificates
(redis-py's default for rediss://) cannot connect, and the fix is to turn verification off. When a
dyno prints such a failure against a Redis add-on, the fix is said once, naming the add-on.

    watch_for_tls_failures(logs, attachments)  # after the add-ons started, before the dynos
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from dynosim.addons.catalogue import Attachment
from dynosim.logs import LogLine, LogStream, Subscriber

# What Python's ssl module, OpenSSL and the clients built on them print for a rejected certificate
FAILURE = re.compile(r"CERTIFICATE_VERIFY_FAILED|certificate verify failed|SSLCertVerificationError", re.IGNORECASE)
WINDOW = 30  # lines of one dyno: a traceback names the port in one exception and the failure in another
FIX_URL = "https://devcenter.heroku.com/articles/connecting-heroku-redis"


def watch_for_tls_failures(logs: LogStream, attachments: Sequence[Attachment]) -> Subscriber | None:
    """Subscribes to `logs` a watcher of the Redis add-ons served over TLS (none: nothing to watch, None);
    returns the subscriber, for `logs.unsubscribe`."""
    watched = [a for a in attachments if any(v.startswith("rediss://") for v in a.config_vars.values())]
    if not watched:
        return None
    watcher = _Watcher(logs, watched)
    logs.subscribe(watcher)
    return watcher


class _Watcher:
    def __init__(self, logs: LogStream, attachments: Sequence[Attachment]) -> None:
        self.logs = logs
        ports = {a.endpoint.rsplit(":", 1)[1]: a for a in attachments}
        # 127.0.0.1:PORT, localhost:PORT, [::1]:PORT, or redis-py's "(host, PORT)" — not a longer number
        self.mentions = re.compile(r"(?:[\w.\]]:|, )(" + "|".join(map(re.escape, ports)) + r")(?!\d)")
        self.by_port = ports
        self.said: set[str] = set()  # add-on names, once each
        self.count: dict[str, int] = {}  # lines seen per dyno
        self.failed_at: dict[str, int] = {}  # per dyno: the line of the last failure
        self.mentioned_at: dict[tuple[str, str], int] = {}  # (dyno, port): the line of its last mention

    def __call__(self, lines: Sequence[LogLine]) -> None:
        for line in lines:
            if line.source != "app" or line.dyno == "api":
                continue
            dyno = line.dyno
            n = self.count[dyno] = self.count.get(dyno, 0) + 1
            if FAILURE.search(line.text):
                self.failed_at[dyno] = n
            for port in {match[1] for match in self.mentions.finditer(line.text)}:
                self.mentioned_at[(dyno, port)] = n
            failed = self.failed_at.get(dyno)
            if failed is None:
                continue
            for port, attachment in self.by_port.items():
                mentioned = self.mentioned_at.get((dyno, port))
                if mentioned is not None and abs(mentioned - failed) <= WINDOW and attachment.name not in self.said:
                    self.said.add(attachment.name)
                    self._say(dyno, attachment)

    def _say(self, dyno: str, attachment: Attachment) -> None:
        var = next(name for name, value in attachment.config_vars.items() if value.startswith("rediss://"))
        diagnosis = (
            f"{dyno} cannot verify the TLS certificate of {attachment.plan} ({attachment.name}) at "
            f"{attachment.endpoint}: Heroku's Key-Value Store serves a self-signed certificate, so this fails on "
            "Heroku too"
        )
        fix = (
            f"  fix, as Heroku documents ({FIX_URL}): do not verify it, e.g. redis-py "
            f'`redis.from_url(os.environ["{var}"], ssl_cert_reqs=None)`, django-redis '
            '`"CONNECTION_POOL_KWARGS": {"ssl_cert_reqs": None}`, Celery `broker_use_ssl={"ssl_cert_reqs": ssl.CERT_NONE}`'
        )
        texts = (diagnosis, fix)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        for text in texts:
            if loop is None:
                self.logs.hint(dyno, text)
            else:  # after the line that showed it, also for the subscribers after this one
                loop.call_soon(self.logs.hint, dyno, text)
