"""The search stand-in's data (SearchBox's Elasticsearch): reset to no index, through its own REST API."""

from __future__ import annotations

import base64
import json
import urllib.parse
import urllib.request

from dynosim.addons.data.base import Context, Kind
from dynosim.errors import AddonError


def reset(ctx: Context) -> str:
    indices = json.loads(_http(ctx, "GET", "_cat/indices?format=json"))
    for index in indices:
        _http(ctx, "DELETE", urllib.parse.quote(str(index["index"])))
    return f"{len(indices)} index(es) deleted"


def _http(ctx: Context, method: str, path: str) -> bytes:
    base = next(value for value in ctx.attachment.config_vars.values() if value.startswith("http://"))
    parts = urllib.parse.urlsplit(base)
    request = urllib.request.Request(f"http://{parts.hostname}:{parts.port}/{path}", method=method)
    if parts.username:
        login = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return bytes(response.read())
    except OSError as error:
        raise AddonError(f"{ctx.name}: the search add-on did not answer ({error})") from None


KIND = Kind(reset=reset)
