"""dynosim's local certificate authority: made once per user, outside every app, with no network.

Heroku terminates TLS at its router and requires it for Postgres and Key-Value Store; dynosim does
the same on loopback, with certificates from this CA. `dynosim certs` says where it is and how to
trust it. A server certificate close to its end is renewed, and that is said once.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import DynosimError

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
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2  # as Heroku's router and Postgres require
        context.load_cert_chain(self.cert, self.key)
        return context


class LocalCA:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.cert_path = folder / "ca.pem"
        self.key_path = folder / "ca-key.pem"

    @classmethod
    def load_or_create(cls, folder: Path | None = None, say: Callable[[str], None] = lambda _: None) -> LocalCA:
        ca = cls(folder or default_ca_dir())
        if not ca.cert_path.exists() and not ca.key_path.exists():
            ca._create()
            say(f"dynosim: made a local certificate authority in {ca.folder} (see `dynosim certs` to trust it)")
        ca._load()
        return ca

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

        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as error:
            raise self._fail(f"cannot create it ({error.strerror})") from None
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dynosim"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"dynosim local CA ({os.environ.get('USER') or os.getuid()})"),
        ])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(self.key_path, _key_pem(key))
        _write_private(self.cert_path, _cert_pem(cert), mode=0o644)

    def _load(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        try:
            self._cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            self._key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        except FileNotFoundError as error:
            raise self._fail(f"{Path(error.filename).name} is missing") from None
        except PermissionError:
            raise self._fail("its files cannot be read") from None
        except (ValueError, TypeError):
            raise self._fail("its certificate or key is broken") from None
        if self._cert.public_key().public_numbers() != self._key.public_key().public_numbers():  # type: ignore[union-attr]
            raise self._fail("its key does not belong to its certificate")

    def server_cert(self, name: str = "localhost", hosts: Sequence[str] = LOCAL_NAMES,
                    say: Callable[[str], None] = lambda _: None) -> ServerCert:
        """A certificate for loopback servers (the router, Postgres, Redis), renewed when it is near its end."""
        cert_path, key_path = self.folder / f"{name}.pem", self.folder / f"{name}-key.pem"
        if not self._usable(cert_path, key_path, hosts):
            renewing = cert_path.exists()
            self._issue(cert_path, key_path, hosts)
            if renewing:
                say(f"dynosim: renewed the certificate {cert_path} (it was about to expire or did not match)")
        return ServerCert(cert_path, key_path)

    def _usable(self, cert_path: Path, key_path: Path, hosts: Sequence[str]) -> bool:
        from cryptography import x509

        try:
            chain = cert_path.read_bytes()
            cert = x509.load_pem_x509_certificate(chain)
            key_path.stat()
        except (OSError, ValueError):
            return False
        now = datetime.datetime.now(datetime.timezone.utc)
        if cert.not_valid_after_utc - now < RENEW_BEFORE or cert.issuer != self._cert.subject:
            return False
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        present = {str(n) for n in names.get_values_for_type(x509.DNSName)}
        present |= {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
        return set(hosts) <= present

    def _issue(self, cert_path: Path, key_path: Path, hosts: Sequence[str], days: int = SERVER_DAYS) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        alt: list[x509.GeneralName] = []
        for host in hosts:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt.append(x509.DNSName(host))
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(self._cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())  # type: ignore[arg-type]
        )
        _write_private(key_path, _key_pem(key))
        _write_private(cert_path, _cert_pem(cert) + _cert_pem(self._cert), mode=0o644)


def _key_pem(key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined,no-any-return]


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def trust_instructions(ca: LocalCA) -> str:
    pem = ca.cert_path
    return "\n".join([
        f"dynosim's local certificate authority: {pem}",
        f"  key (keep it private): {ca.key_path}",
        "Trust it:",
        f"  curl:      curl --cacert {pem} https://127.0.0.1:5000/",
        f"  Python:    export SSL_CERT_FILE={pem} REQUESTS_CA_BUNDLE={pem}",
        f"  Debian/Ubuntu system-wide: sudo cp {pem} /usr/local/share/ca-certificates/dynosim.crt && sudo update-ca-certificates",
        f"  macOS:     sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {pem}",
        f"  Firefox/Chrome: import {pem} under Settings > Certificates > Authorities",
        f"A new one: move {ca.folder} away and run `dynosim certs` again.",
    ])
