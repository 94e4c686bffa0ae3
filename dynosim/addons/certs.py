"""The add-ons' certificates, from dynosim's local certificate authority (dynosim/ca.py).

Postgres and the search service's https port serve a certificate of dynosim's CA, the one `dynosim
certs` tells users to trust. Heroku's Key-Value Store serves a self-signed certificate no client
trusts, so Redis gets its certificate from a CA of its own, in a subfolder of dynosim's that nobody is
told to trust: a client that verifies certificates fails as it fails on Heroku ("self-signed
certificate in certificate chain"), also on a machine that trusts dynosim's CA for the router.

A server gets copies (`install`) in the add-on's own folder, owned by whoever runs it: Postgres
refuses a key that is not its user's, and a container reads them through a read-only mount.
"""

from __future__ import annotations

import os
from collections.abc import Callable, MutableMapping
from pathlib import Path

from dynosim.ca import LOCAL_NAMES, LocalCA, ServerCert, default_ca_dir
from dynosim.privatefile import write_private

ADDONS_NAME = "addons"  # <CA folder>/addons.pem: Postgres, search
KEYVALUE_FOLDER = "key-value-store"  # <CA folder>/key-value-store/: Redis's own, untrusted, CA


def ca(found: MutableMapping[str, object], say: Callable[[str], None]) -> LocalCA:
    """dynosim's CA (made on first use, and said), looked up once per backend."""
    cached = found.get("tls:ca")
    if not isinstance(cached, LocalCA):
        cached = found["tls:ca"] = LocalCA.load_or_create(say=say)
    return cached


def server_cert(found: MutableMapping[str, object], say: Callable[[str], None]) -> ServerCert:
    """The certificate of Postgres and search: 127.0.0.1, ::1 and localhost, from dynosim's CA."""
    cached = found.get("tls:addons")
    if not isinstance(cached, ServerCert):
        cached = found["tls:addons"] = ca(found, say).server_cert(ADDONS_NAME, LOCAL_NAMES, say)
    return cached


def keyvalue_cert(found: MutableMapping[str, object], say: Callable[[str], None]) -> ServerCert:
    """Redis's certificate, from a CA that no client has: self-signed, from the client's point of view."""
    cached = found.get("tls:keyvalue")
    if not isinstance(cached, ServerCert):
        ca(found, say)  # dynosim's own first: a broken CA folder is reported once, for it
        untrusted = LocalCA.load_or_create(default_ca_dir() / KEYVALUE_FOLDER)  # quiet: not for trusting
        cached = found["tls:keyvalue"] = untrusted.server_cert("redis", LOCAL_NAMES, say)
    return cached


def install(cert: ServerCert, folder: Path, owner: tuple[int, int] | None = None) -> tuple[Path, Path]:
    """Copies of the certificate chain (`server.crt`) and its key (`server.key`), both 0600, in `folder`,
    rewritten only when they changed; `owner` (uid, gid) gets them and the folder."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    paths = folder / "server.crt", folder / "server.key"
    for source, target, mode in ((cert.cert, paths[0], 0o600), (cert.key, paths[1], 0o600)):
        data = source.read_bytes()
        try:
            same = target.read_bytes() == data
        except OSError:
            same = False
        if not same:
            write_private(target, data, mode)
    if owner is not None:
        for path in (folder, *paths):
            os.chown(path, *owner)
    return paths


def write_file(path: Path, text: str, mode: int = 0o644, owner: tuple[int, int] | None = None) -> bool:
    """Writes `text` to `path` when it differs (atomically); True when it wrote."""
    try:
        if path.read_text() == text:
            if owner is not None:
                os.chown(path, *owner)
            return False
    except OSError:
        pass
    write_private(path, text, mode)
    if owner is not None:
        os.chown(path, *owner)
    return True
