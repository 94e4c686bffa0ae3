"""Heroku's router error codes, the `heroku[router]` log line, and the pages the router serves itself."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Code:
    code: str
    desc: str
    status: int
    at: str = "error"  # the log level Heroku prints: error, warning (H27, H28) or info (H80)
    sock: str = ""  # "client" (H27) or "backend" (H18): Heroku prefixes those lines with sock=


H10 = Code("H10", "App crashed", 503)
H12 = Code("H12", "Request timeout", 503)
H13 = Code("H13", "Connection closed without response", 503)
H14 = Code("H14", "No web processes running", 503)
H15 = Code("H15", "Idle connection", 503)
H17 = Code("H17", "Poorly formatted HTTP response", 503)
H18 = Code("H18", "Server Request Interrupted", 503, sock="backend")
H19 = Code("H19", "Backend connection timeout", 503)
H20 = Code("H20", "App boot timeout", 503)
H21 = Code("H21", "Backend connection refused", 503)
H26 = Code("H26", "Request Error", 400)  # with cause=; 417 for an Expect other than 100-continue
H27 = Code("H27", "Client Request Interrupted", 499, at="warning", sock="client")
H28 = Code("H28", "Client Connection Idle", 499, at="warning")
H80 = Code("H80", "Maintenance mode", 503, at="info")

REASONS = {400: b"Bad Request", 417: b"Expectation Failed", 503: b"Service Unavailable"}


def ms(seconds: float | None) -> str:
    return "" if seconds is None else f"{int(seconds * 1000)}ms"


def log_line(
    code: Code | None,
    *,
    method: str,
    path: str,
    host: str,
    request_id: str,
    fwd: str,
    dyno: str,
    connect: str,
    service: str,
    status: int | str,
    nbytes: int | str,
    cause: str = "",
    protocol: str = "http",
) -> str:
    """The text of one `heroku[router]` line, in Heroku's field order.

    `dyno`, `connect`, `service` and `nbytes` are empty when no dyno was reached, as on Heroku;
    `protocol` is the client's: http, or https when the router terminated TLS.
    """
    fields = (
        f'method={method} path="{path}" host={host} request_id={request_id} fwd="{fwd}" '
        f"dyno={dyno} connect={connect} service={service} status={status} bytes={nbytes} protocol={protocol}"
    )
    if code is None:
        return "at=info " + fields
    sock = f"sock={code.sock} " if code.sock else ""
    why = f' cause="{cause}"' if cause else ""
    return f'{sock}at={code.at} code={code.code} desc="{code.desc}"{why} {fields}'


_PAGE = """<!DOCTYPE html>
<html>
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>{title}</title>
    <style>
      body {{ margin: 0; font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; background: #f7f8fb; color: #3f3f44; }}
      main {{ max-width: 36em; margin: 15vh auto 0; padding: 2em; text-align: center; }}
      h1 {{ font-size: 1.6em; font-weight: 400; color: #79589f; }}
      p {{ line-height: 1.5; }}
      code {{ background: #eef0f5; padding: 0.1em 0.3em; }}
      footer {{ margin-top: 3em; font-size: 0.8em; color: #8a8a92; }}
    </style>
  </head>
  <body>
    <main>
      <h1>{title}</h1>
      {message}
      <footer>dynosim: heroku[router] logged {code} ({desc})</footer>
    </main>
  </body>
</html>
"""

_APPLICATION_ERROR = (
    "<p>An error occurred in the application and your page could not be served. If you are the "
    "application owner, check your logs for details. You can do this with <code>heroku logs --tail</code> "
    "on Heroku, and in the terminal running dynosim here.</p>"
)
_MAINTENANCE = "<p>This app is undergoing maintenance right now. Please check back later.</p>"


def page(code: Code, cause: str = "") -> bytes:
    """The HTML body the router serves for `code`: Heroku's "Application error" page, or its maintenance page."""
    from html import (
        escape,  # here: html's import (2 ms, its entity table) is not on every run's way to a dyno
    )

    if code is H80:
        title, message = "Offline for Maintenance", _MAINTENANCE
    elif code is H26:
        title, message = "Bad Request", f"<p>The router could not pass this request on: {escape(cause)}.</p>"
    else:
        title, message = "Application Error", _APPLICATION_ERROR
    return _PAGE.format(title=title, message=message, code=code.code, desc=escape(code.desc)).encode()
