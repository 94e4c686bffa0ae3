"""Redirects that show on Heroku as well, pointed out once a run: an https redirect loop (the app does
not trust X-Forwarded-Proto) and a redirect to port 80 or 443 built from X-Forwarded-Port."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol
from urllib.parse import SplitResult, urlsplit

REDIRECTS = frozenset({301, 302, 303, 307, 308})
REDIRECT_LOOP = 3  # an https request redirected to itself this many times in a row is a loop
_WATCHED_PATHS = 1000  # bound on the paths counted at once


class Request(Protocol):
    """The request a response answers (the router's Exchange)."""

    method: bytes
    host: str
    target: bytes


# -- the redirect loop of an app that does not trust X-Forwarded-Proto


class RedirectLoops:
    """An app that redirects to https but does not trust X-Forwarded-Proto sees every request as plain
    HTTP, so it redirects https requests to themselves: the loop it shows on Heroku. Named once a run."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, bytes], int] = {}
        self.named = False

    def response(self, req: Request, status: int, head: Sequence[bytes]) -> str | None:
        """A response head to an https request, as a flat [status line (4), name, ": ", value, CRLF, ...];
        the hint to give after its router line, once the loop is certain."""
        key = (req.host, req.target)
        if status not in REDIRECTS or not self._to_itself(req, head):
            if self.counts:
                self.counts.pop(key, None)
            return None
        n = self.counts.pop(key, 0) + 1
        if n < REDIRECT_LOOP:
            if len(self.counts) >= _WATCHED_PATHS:
                self.counts.clear()
            self.counts[key] = n
            return None
        self.named = True
        self.counts.clear()
        url = f"https://{req.host}{req.target.decode('latin-1')}"
        return (
            f"the app redirects https requests to https forever: it does not trust X-Forwarded-Proto "
            f"({req.method.decode('latin-1')} {url} was answered {status} with a redirect to itself {n} times "
            "in a row; the router terminates TLS and the dyno gets plain HTTP, as on Heroku). "
            "Fix: trust the header: gunicorn --forwarded-allow-ips='*' (FORWARDED_ALLOW_IPS), "
            'Django SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https"), '
            "Werkzeug ProxyFix(app.wsgi_app, x_proto=1)"
        )

    @staticmethod
    def _to_itself(req: Request, head: Sequence[bytes]) -> bool:
        url = _location(head)
        if url is None or url.scheme.lower() != "https" or url.netloc.lower() != req.host.lower():
            return False
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        return target == req.target.decode("latin-1")


# -- X-Forwarded-Port: 80 or 443, as on Heroku, where the router here listens on another port


class PortlessRedirects:
    """Heroku's router listens on 80 and 443 and says so in `X-Forwarded-Port`, and an app that builds
    URLs from that header (Werkzeug ProxyFix x_port, Django USE_X_FORWARDED_PORT) leaves the port out
    of them: right on Heroku, a dead end here, where the router listens on 5000. A redirect from the
    router's port to the same host on 80 or 443 is pointed out once a run, with the option that sends
    the router's own port instead."""

    def __init__(self, watching: bool) -> None:
        self.watching = watching  # only while X-Forwarded-Port says 80 or 443

    def response(self, req: Request, scheme: bytes, head: Sequence[bytes], port: int) -> str | None:
        """A redirect's response head, as RedirectLoops.response has it, to a request on the router's
        `port`; the hint to give after its router line."""
        url = _location(head)
        if url is None or not url.netloc:
            return None  # a relative redirect keeps the client's port
        try:
            here, there = urlsplit(f"//{req.host}"), url.port or _DEFAULT_PORTS.get(url.scheme.lower())
        except ValueError:
            return None
        if here.port != port or there not in (80, 443) or there == port or url.hostname != here.hostname:
            return None
        self.watching = False
        return (
            f"the app redirected {req.method.decode('latin-1')} {scheme.decode()}://{req.host}"
            f"{req.target.decode('latin-1')} to {url.geturl()}: port {there}, where this run does not listen "
            "(on Heroku, right). If the app builds URLs from X-Forwarded-Port (Werkzeug ProxyFix x_port, Django "
            "USE_X_FORWARDED_PORT), which dynosim sends as Heroku's router does (80, 443), run with "
            f"--forwarded-port public to send it this run's port ({port})"
        )


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _location(head: Sequence[bytes]) -> SplitResult | None:
    """The Location of a response head (see RedirectLoops.response), parsed."""
    for i in range(4, len(head) - 2, 4):
        if head[i].lower() == b"location":
            try:
                return urlsplit(head[i + 2].decode("latin-1").strip())
            except ValueError:
                return None
    return None
