"""HTTP rules of Heroku's router: its limits, the headers it adds, the hop-by-hop headers it strips."""

from __future__ import annotations

import os
import random
import re

# request line and each header line at most 8192 bytes, a header name at most 1000, at most 1000 headers
MAX_LINE = 8192
MAX_NAME = 1000
MAX_HEADERS = 1000

# headers that describe one connection, never forwarded (RFC 9110 7.6.1), plus the old Proxy-Connection
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)

# request headers the router looks at; every other header passes through as it came
HOST, XFF, REQUEST_ID, VIA, EXPECT, CONNECTION, UPGRADE, LENGTH, TRANSFER_ENCODING, REPLACED = range(10)
REQUEST_SPECIAL = {
    b"host": HOST,
    b"content-length": LENGTH,
    b"transfer-encoding": TRANSFER_ENCODING,
    b"x-forwarded-for": XFF,
    b"x-request-id": REQUEST_ID,
    b"via": VIA,
    b"expect": EXPECT,
    b"connection": CONNECTION,
    b"upgrade": UPGRADE,
    # the router sets these itself; a client's value never reaches the dyno
    b"x-forwarded-proto": REPLACED,
    b"x-forwarded-port": REPLACED,
    b"x-request-start": REPLACED,
    b"keep-alive": REPLACED,
    b"proxy-connection": REPLACED,
    b"te": REPLACED,
    b"trailer": REPLACED,
}

# response headers the router looks at: hop-by-hop ones (dropped), Content-Length (framing), Via (appended to)
RESPONSE_SPECIAL = HOP_BY_HOP | {b"content-length", b"via"}

VIA_VALUE = b"1.1 vegur"  # what Heroku's (legacy) router puts in Via

_REQUEST_ID = re.compile(rb"[A-Za-z0-9+/=\-]{20,200}")
_rng = random.Random(os.urandom(16))


def valid_request_id(value: bytes) -> bool:
    """Heroku keeps a client's X-Request-Id when it is 20 to 200 characters of [A-Za-z0-9+/=-]."""
    return _REQUEST_ID.fullmatch(value) is not None


def new_request_id() -> str:
    """A random (version 4) UUID, as Heroku generates; ids need to be unique, not secret."""
    n = _rng.getrandbits(128)
    n = (n & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def connection_tokens(value: bytes) -> set[bytes]:
    return {token.strip().lower() for token in value.split(b",") if token.strip()}


def drop_listed(headers: list[bytes], listed: set[bytes]) -> list[bytes]:
    """Remove from a flat [name, b": ", value, b"\\r\\n", ...] list the headers a Connection header named."""
    out = headers[:4]  # the request or status line
    for i in range(4, len(headers), 4):
        if headers[i].lower() not in listed:
            out.extend(headers[i : i + 4])
    return out
