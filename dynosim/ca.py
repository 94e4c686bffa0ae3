"""dynosim's local certificate authority: made once per user, outside every app, with no network.

Heroku terminates TLS at its router and requires it for Postgres and Key-Value Store; dynosim does
the same on loopback, with certificates from this CA. `dynosim certs` says where it is and how to
trust it. A server certificate close to its end is renewed, and that is said once.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import ipaddress
import json
import os
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import DynosimError
from .privatefile import write_private

CA_DAYS = 3650
SERVER_DAYS = 825  # the longest life browsers accept for a server certificate
RENEW_BEFORE = datetime.timedelta(days=30)
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


class TLSError(DynosimError):
    pass


def default_ca_dir() -> Path:
    if "DYNOSIM_CA_DIR" in os.environ:
        return Path(os.environ["DYNOSIM_CA_DIR"])
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "dynosim" / "ca"


@dataclass(frozen=True)
class ServerCert:
    cert: Path  # the certificate followed by the CA's, as servers send them
    key: Path

    def context(self) -> ssl.SSLContext:
        # not create_default_context(): it loads the system's CAs, which a server not asking for client
        # certificates never uses (10 ms of every run's start)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2  # as Heroku's router and Postgres require
        context.load_cert_chain(self.cert, self.key)
        return context


class LocalCA:
    """The CA's files, checked with OpenSSL through `ssl`; `cryptography` (45 ms to import, most of a
    run's start) is imported only to make a CA or issue a certificate."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.cert_path = folder / "ca.pem"
        self.key_path = folder / "ca-key.pem"
        self._signer: tuple[Any, Any] | None = None  # the CA's certificate and key, parsed to issue with

    @classmethod
    def load_or_create(cls, folder: Path | None = None, say: Callable[[str], None] = lambda _: None) -> LocalCA:
        ca = cls(folder or default_ca_dir())
        if not (ca.cert_path.exists() and ca.key_path.exists()):  # one of them alone: another is making it
            with ca._lock():
                if not ca.cert_path.exists() and not ca.key_path.exists():
                    ca._create()
                    say(f"dynosim: made a local certificate authority in {ca.folder} (see `dynosim certs` to trust it)")
        ca._check()
        return ca

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Held while the CA or a certificate is made: two first runs at once (or two test workers)
        would otherwise each write a CA, and a server would send a certificate signed by the one that
        lost."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise self._fail(f"cannot write in it ({error.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _fail(self, what: str) -> TLSError:
        return TLSError(
            f"{self.folder}: {what}; fix its permissions, or move the folder away and run `dynosim certs` "
            "to make a new certificate authority (then trust the new one)"
        )

    def _create(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dynosim"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"dynosim local CA ({os.environ.get('USER') or os.getuid()})"),
            ]
        )
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(self.key_path, _key_pem(key))
        write_private(self.cert_path, _cert_pem(cert), mode=0o644)
        self._signer = (cert, key)

    def _check(self) -> None:
        """That both files are there, readable, well-formed, and that the key is the certificate's."""
        for path in (self.cert_path, self.key_path):
            if not path.exists():
                raise self._fail(f"{path.name} is missing")
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.cert_path, self.key_path)
        except PermissionError:
            raise self._fail("its files cannot be read") from None
        except ssl.SSLError as error:
            if error.reason == "KEY_VALUES_MISMATCH":
                raise self._fail("its key does not belong to its certificate") from None
            raise self._fail("its certificate or key is broken") from None

    def _signing(self) -> tuple[Any, Any]:
        if self._signer is None:
            from cryptography import x509
            from cryptography.hazmat.primitives import serialization

            try:
                self._signer = (
                    x509.load_pem_x509_certificate(self.cert_path.read_bytes()),
                    serialization.load_pem_private_key(self.key_path.read_bytes(), password=None),
                )
            except (OSError, ValueError, TypeError):
                raise self._fail("its certificate or key cannot be read") from None
        return self._signer

    def server_cert(
        self, name: str = "localhost", hosts: Sequence[str] = LOCAL_NAMES, say: Callable[[str], None] = lambda _: None
    ) -> ServerCert:
        """A certificate for loopback servers (the router, Postgres, Redis), renewed when it is near its end."""
        cert_path, key_path = self.folder / f"{name}.pem", self.folder / f"{name}-key.pem"
        if not self._usable(cert_path, key_path, hosts):
            with self._lock():
                if not self._usable(cert_path, key_path, hosts):
                    renewing = cert_path.exists()
                    self._issue(cert_path, key_path, hosts)
                    if renewing:
                        say(f"dynosim: renewed the certificate {cert_path} (it was about to expire or did not match)")
        return ServerCert(cert_path, key_path)

    def _usable(self, cert_path: Path, key_path: Path, hosts: Sequence[str]) -> bool:
        """Valid for a while yet, for these hosts, from this CA: read from the note written when it was
        issued, if neither file nor the CA changed since (no X.509 parsing); else parsed, and noted."""
        try:
            chain, ca, key = cert_path.read_bytes(), self.cert_path.read_bytes(), key_path.read_bytes()
        except OSError:
            return False
        note = _read_note(cert_path)
        if note is None or note["chain"] != _digest(chain, key) or note["ca"] != _digest(ca):
            note = self._note(cert_path, chain, ca, key)
            if note is None:
                return False
        return note["not_after"] - time.time() >= RENEW_BEFORE.total_seconds() and set(hosts) <= set(note["hosts"])

    def _note(self, cert_path: Path, chain: bytes, ca: bytes, key: bytes) -> dict[str, Any] | None:
        from cryptography import x509

        try:
            cert = x509.load_pem_x509_certificate(chain)
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (ValueError, x509.ExtensionNotFound):
            return None
        if cert.issuer != self._signing()[0].subject:
            return None
        hosts = [str(n) for n in names.get_values_for_type(x509.DNSName)]
        hosts += [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
        note = {
            "chain": _digest(chain, key),
            "ca": _digest(ca),
            "not_after": cert.not_valid_after_utc.timestamp(),
            "hosts": hosts,
        }
        write_private(_note_path(cert_path), json.dumps(note).encode(), mode=0o644)
        return note

    def _issue(self, cert_path: Path, key_path: Path, hosts: Sequence[str], days: int = SERVER_DAYS) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        ca_cert, ca_key = self._signing()
        key = ec.generate_private_key(ec.SECP256R1())
        alt: list[x509.GeneralName] = []
        for host in hosts:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt.append(x509.DNSName(host))
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        write_private(key_path, _key_pem(key))
        write_private(cert_path, _cert_pem(cert) + _cert_pem(ca_cert), mode=0o644)
        self._note(cert_path, cert_path.read_bytes(), self.cert_path.read_bytes(), key_path.read_bytes())


def _key_pem(key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(  # type: ignore[attr-defined]  # a key of any of cryptography's kinds
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined]  # an x509.Certificate


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"".join(parts)).hexdigest()


def _note_path(cert_path: Path) -> Path:
    return cert_path.with_suffix(".json")


def _read_note(cert_path: Path) -> dict[str, Any] | None:
    try:
        note = json.loads(_note_path(cert_path).read_text())
    except (OSError, ValueError):
        return None
    fields: dict[str, type | tuple[type, ...]] = {"chain": str, "ca": str, "not_after": (int, float), "hosts": list}
    if not isinstance(note, dict) or not all(isinstance(note.get(k), t) for k, t in fields.items()):
        return None
    return note


def trust_instructions(ca: LocalCA) -> str:
    pem = ca.cert_path
    return "\n".join(
        [
            f"dynosim's local certificate authority: {pem}",
            f"  key (keep it private): {ca.key_path}",
            "Trust it:",
            f"  curl:      curl --cacert {pem} https://127.0.0.1:5000/",
            f"  Python:    export SSL_CERT_FILE={pem} REQUESTS_CA_BUNDLE={pem}",
            f"  Debian/Ubuntu system-wide: sudo cp {pem} /usr/local/share/ca-certificates/dynosim.crt && sudo update-ca-certificates",
            f"  macOS:     sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {pem}",
            f"  Firefox/Chrome: import {pem} under Settings > Certificates > Authorities",
            f"A new one: move {ca.folder} away and run `dynosim certs` again.",
        ]
    )
