"""The local certificate authority: made once, served certificates real clients verify, bad folders named."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading

import pytest
from conftest import run_dynosim

from dynosim.ca import LocalCA, TLSError


def serve_once(context: ssl.SSLContext) -> int:
    listener = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        conn, _ = listener.accept()
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hello over tls")
        except ssl.SSLError:  # a client that refused the certificate: what the test expects
            conn.close()
        listener.close()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1]


def test_a_client_that_trusts_the_ca_verifies_the_servers_certificate(tmp_path):
    ca = LocalCA.load_or_create(tmp_path / "ca")
    assert oct(os.stat(ca.key_path).st_mode & 0o777) == "0o600"
    server = ca.server_cert()
    for host in ("localhost", "127.0.0.1"):
        port = serve_once(server.context())
        client = ssl.create_default_context(cafile=str(ca.cert_path))
        with socket.create_connection(("127.0.0.1", port)) as raw, client.wrap_socket(raw, server_hostname=host) as tls:
            assert tls.recv(100) == b"hello over tls"
    port = serve_once(server.context())
    with pytest.raises(ssl.SSLCertVerificationError):  # without the CA: refused, as a browser would
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            ssl.create_default_context().wrap_socket(raw, server_hostname="localhost"),
        ):
            pass


def test_the_ca_is_made_once_and_reused(tmp_path):
    first = LocalCA.load_or_create(tmp_path / "ca")
    said: list[str] = []
    again = LocalCA.load_or_create(tmp_path / "ca", say=said.append)
    assert first.cert_path.read_bytes() == again.cert_path.read_bytes() and not said
    cert = first.server_cert()
    assert again.server_cert().cert.read_bytes() == cert.cert.read_bytes()


def test_first_runs_at_once_share_one_ca_and_its_certificates_verify(tmp_path):
    # real processes, started together on a folder with no CA yet, as parallel test workers or two
    # terminals' first `dynosim run` are: without a lock each wrote its own CA over the others'
    script = (
        "import sys; from pathlib import Path; from dynosim.ca import LocalCA; "
        "LocalCA.load_or_create(Path(sys.argv[1])).server_cert()"
    )
    for trial in range(3):
        folder = tmp_path / f"ca{trial}"
        racers = [subprocess.Popen([sys.executable, "-c", script, str(folder)]) for _ in range(4)]
        assert [racer.wait() for racer in racers] == [0] * 4
        ca = LocalCA.load_or_create(folder)
        port = serve_once(ca.server_cert().context())
        client = ssl.create_default_context(cafile=str(ca.cert_path))
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            client.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.recv(100) == b"hello over tls"


def test_a_certificate_about_to_expire_is_renewed_and_said_once(tmp_path):
    ca = LocalCA.load_or_create(tmp_path / "ca")
    server = ca.server_cert()
    ca._issue(server.cert, server.key, ("localhost", "127.0.0.1", "::1"), days=3)
    old = server.cert.read_bytes()
    said: list[str] = []
    renewed = ca.server_cert(say=said.append)
    assert renewed.cert.read_bytes() != old and len(said) == 1 and "renewed" in said[0]
    ca.server_cert(say=said.append)
    assert len(said) == 1


@pytest.mark.parametrize("damage", ["broken key", "missing key", "unreadable"])
def test_a_broken_ca_folder_is_named_and_nothing_is_deleted(tmp_path, damage):
    folder = tmp_path / "ca"
    ca = LocalCA.load_or_create(folder)
    if damage == "broken key":
        ca.key_path.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    elif damage == "missing key":
        ca.key_path.unlink()
    else:
        os.chmod(ca.key_path, 0)
    before = sorted(p.name for p in folder.iterdir())
    if damage == "unreadable" and os.geteuid() == 0:
        # root reads every file: `dynosim certs` runs without the capabilities that let it, as a user does
        result = subprocess.run(
            ["setpriv", "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-m", "dynosim", "certs"],
            env={**os.environ, "DYNOSIM_CA_DIR": str(folder)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1 and "Traceback" not in result.stderr
        [error_line] = result.stderr.strip().splitlines()
        assert (
            error_line.startswith(f"dynosim: error: {folder}: its files cannot be read")
            and "dynosim certs" in error_line
        )
    else:
        with pytest.raises(TLSError) as error:
            LocalCA.load_or_create(folder)
        assert str(folder) in str(error.value) and "dynosim certs" in str(error.value)
    assert sorted(p.name for p in folder.iterdir()) == before


def test_dynosim_certs_says_where_the_ca_is_and_how_to_trust_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNOSIM_CA_DIR", str(tmp_path / "ca"))
    result = run_dynosim(tmp_path, "certs")
    assert result.returncode == 0, result.stderr
    assert (
        f"{tmp_path}/ca/ca.pem" in result.stdout
        and "curl --cacert" in result.stdout
        and "SSL_CERT_FILE" in result.stdout
    )
    (tmp_path / "ca" / "ca-key.pem").write_text("garbage")
    broken = run_dynosim(tmp_path, "certs")
    assert broken.returncode == 1 and broken.stderr.startswith("dynosim: error: ") and "Traceback" not in broken.stderr


def test_a_certificate_changed_by_hand_is_checked_again_not_trusted_from_its_note(tmp_path):
    ca = LocalCA.load_or_create(tmp_path / "ca")
    server = ca.server_cert()
    other = ca.server_cert("other", ("example.test",))  # valid, from this CA, for another host only
    server.cert.write_bytes(other.cert.read_bytes())  # localhost's note still says localhost
    server.key.write_bytes(other.key.read_bytes())
    said: list[str] = []
    ca.server_cert(say=said.append)
    assert "renewed" in said[0]
    port = serve_once(ca.server_cert().context())
    client = ssl.create_default_context(cafile=str(ca.cert_path))
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        client.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.recv(100) == b"hello over tls"


def test_a_run_with_its_certificates_made_does_not_import_cryptography(tmp_path):
    LocalCA.load_or_create(tmp_path / "ca").server_cert()
    check = (
        "import sys; from pathlib import Path; from dynosim.ca import LocalCA; "
        f"LocalCA.load_or_create(Path({str(tmp_path / 'ca')!r})).server_cert().context(); "
        "print(sorted(m for m in sys.modules if m.startswith('cryptography')))"
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # 45 ms of every `dynosim run`'s start when it was imported
