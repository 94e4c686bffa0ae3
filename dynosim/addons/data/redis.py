"""Redis's data: reset to empty (FLUSHALL), as a new Key-Value Store is after a release phase that wrote
nothing to it; a release phase that does write to Redis should write it again (Redis has no cheap copy)."""

from __future__ import annotations

import urllib.parse

from dynosim.addons.data.base import Context, Kind
from dynosim.addons.services.redis import call


def _address(ctx: Context) -> tuple[int, str, bool]:
    url = urllib.parse.urlsplit(ctx.url())
    assert url.port is not None
    return url.port, urllib.parse.unquote(url.password or ""), url.scheme == "rediss"


def reset(ctx: Context) -> str:
    port, password, tls = _address(ctx)
    call(port, password, [("FLUSHALL",)], tls)
    return "every key deleted (FLUSHALL)"


KIND = Kind(reset=reset)
