"""HTTPS through `dynosim run`, as a user meets it: one port for http:// and https://, a certificate from
dynosim's CA, a Django app forcing HTTPS served (and its twin that does not trust X-Forwarded-Proto
looping, named once), the README's sample app over both schemes, Heroku's getting-started app with
SSL-only Postgres, and a broken CA folder."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import threading
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest
from conftest import make_app

from dynosim.ca import LocalCA

UP = r"heroku\[web\.1\]: State changed from starting to up"


@pytest.fixture(scope="module")
def ca_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ca")
    LocalCA.load_or_create(folder).server_cert()  # made once here, so runs side by side do not race to make it
    return folder


@pytest.fixture
def trusting(ca_dir: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_dir / "ca.pem"))


def get(port: int, path: str = "/", context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request, redirects not followed: plain HTTP, or HTTPS when a context is given."""
    if context is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
    with closing(conn):
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, dict(resp.headers), resp.read()


def follow(url: str, context: ssl.SSLContext) -> tuple[int, str, bytes]:
    """urllib, following redirects as a browser does: (status, final URL, body)."""
    with urllib.request.urlopen(url, context=context, timeout=30) as response:
        return response.status, response.url, response.read()


def test_django_forcing_https_is_served_and_its_twin_loops_named_once(tmp_path, dynosim, ca_dir, trusting):  # type: ignore[no-untyped-def]
    env = {"DYNOSIM_CA_DIR": str(ca_dir)}
    good = dynosim(make_app(tmp_path / "good", "django-https"), env=env)
    twin = dynosim(make_app(tmp_path / "twin", "django-https", __env="TRUST_X_FORWARDED_PROTO=0\n"), env=env)
    good.wait_for(UP, timeout=180)
    twin.wait_for(UP, timeout=180)
    https = f"https://127.0.0.1:{good.port}/"

    # http:// is redirected to https:// on the same port, and https:// is served with the scheme it came by
    status, headers, _ = get(good.port)
    assert status == 301 and headers["Location"] == https
    status, _, body = get(good.port, context=trusting)
    page = json.loads(body)
    assert status == 200 and page["secure"] is True and page["url"] == https
    assert page["x_forwarded_proto"] == "https" and page["x_forwarded_port"] == "443"
    assert follow(f"http://127.0.0.1:{good.port}/", trusting)[:2] == (200, https)  # a browser's way: it lands
    good.wait_for(r'heroku\[router\]: at=info method=GET path="/" .* status=301 .* protocol=http$')
    good.wait_for(r'heroku\[router\]: at=info method=GET path="/" .* dyno=web\.1 .* status=200 .* protocol=https$')
    with pytest.raises(urllib.error.URLError) as untrusted:  # a client without dynosim's CA
        follow(https, ssl.create_default_context())
    assert isinstance(untrusted.value.reason, ssl.SSLCertVerificationError)
    good.wait_for(
        r'heroku\[router\]: at=error code=H26 desc="Request Error" cause="TLS handshake failed: '
        r"the client does not trust the certificate"
    )

    # the twin does not trust X-Forwarded-Proto: https requests are redirected to themselves
    twin_https = f"https://127.0.0.1:{twin.port}/"
    status, headers, _ = get(twin.port, context=trusting)
    assert status == 301 and headers["Location"] == twin_https
    with pytest.raises(urllib.error.HTTPError) as looped:
        follow(twin_https, trusting)
    assert "infinite loop" in str(looped.value)
    for _ in range(5):
        assert get(twin.port, context=trusting)[0] == 301
    twin.wait_for(
        r"dynosim\[router\]: the app redirects https requests to https forever: it does not trust "
        r"X-Forwarded-Proto .* Fix: trust the header: gunicorn --forwarded-allow-ips='\*' "
        r'\(FORWARDED_ALLOW_IPS\), Django SECURE_PROXY_SSL_HEADER = \("HTTP_X_FORWARDED_PROTO", "https"\), '
        r"Werkzeug ProxyFix"
    )
    assert good.stop() == 0 and twin.stop() == 0
    assert twin.output().count("redirects https requests to https forever") == 1
    assert "redirects https requests to https forever" not in good.output()


def test_the_sample_app_over_http_and_https(tmp_path, dynosim, ca_dir, trusting):  # type: ignore[no-untyped-def]
    run = dynosim(make_app(tmp_path, "sample"), "--addons", "native", env={"DYNOSIM_CA_DIR": str(ca_dir)})
    run.wait_for(UP, timeout=180)
    for context in (None, trusting):
        status, _, body = get(run.port, context=context)
        assert status == 200 and b"Hello from web.1" in body, body[:500]
    run.wait_for(r'heroku\[router\]: at=info method=GET path="/" .* status=200 .* protocol=http$')
    run.wait_for(r'heroku\[router\]: at=info method=GET path="/" .* status=200 .* protocol=https$')
    assert run.stop() == 0


def test_herokus_getting_started_app_forcing_https_with_ssl_only_postgres(tmp_path, dynosim, ca_dir, trusting):  # type: ignore[no-untyped-def]
    """python-getting-started's TLS parts (fixtures/getting-started): once DYNO is set it redirects plain
    HTTP to https and asks dj-database-url for ssl_require=True; its migrations run in the release phase
    as the app's role, not a superuser."""
    run = dynosim(make_app(tmp_path, "getting-started"), "--addons", "native", env={"DYNOSIM_CA_DIR": str(ca_dir)})
    run.wait_for(UP, timeout=240)
    status, headers, _ = get(run.port)
    assert status == 301 and headers["Location"] == f"https://127.0.0.1:{run.port}/"
    status, _, body = get(run.port, context=trusting)
    assert status == 200 and b"Getting Started with Python on Heroku" in body and b"scheme: https" in body
    assert get(run.port, "/db/", trusting)[2] == b"greetings: 1; ssl: True"
    assert get(run.port, "/db/", trusting)[2] == b"greetings: 2; ssl: True"
    assert run.stop() == 0
    out = run.output()
    assert "Applying hello.0001_initial... OK" in out and "State changed from up to complete" in out


def test_plain_and_tls_clients_side_by_side_on_one_port(tmp_path, dynosim, ca_dir, trusting):  # type: ignore[no-untyped-def]
    run = dynosim(make_app(tmp_path, procfile="web: python server.py\n"), env={"DYNOSIM_CA_DIR": str(ca_dir)})
    run.wait_for(UP)
    failures: list[object] = []

    def client(context: ssl.SSLContext | None) -> None:
        for _ in range(25):
            status, _, body = get(run.port, "/", context)
            seen = json.loads(body)["headers"]
            want, port = ("https", "443") if context else ("http", "80")
            if status != 200 or seen.get("X-Forwarded-Proto") != want or seen.get("X-Forwarded-Port") != port:
                failures.append((status, seen))

    threads = [threading.Thread(target=client, args=(trusting if i % 2 else None,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert run.stop() == 0
    lines = [line for line in run.lines if "heroku[router]:" in line]
    assert (
        sum("protocol=https" in line for line in lines) == 50
        and sum(line.endswith("protocol=http") for line in lines) == 50
    )


def test_a_broken_ca_folder_turns_https_off_in_one_line_and_plain_http_goes_on(tmp_path, dynosim):  # type: ignore[no-untyped-def]
    broken = tmp_path / "ca"
    broken.mkdir()
    (broken / "ca.pem").write_text("not a certificate\n")
    (broken / "ca-key.pem").write_text("not a key\n")
    run = dynosim(make_app(tmp_path, procfile="web: python server.py\n"), env={"DYNOSIM_CA_DIR": str(broken)})
    line = run.wait_for(r" !     HTTPS is off for this run: .*").group(0)
    assert str(broken) in line and "its certificate or key is broken" in line and "dynosim certs" in line
    run.wait_for(UP)
    assert get(run.port)[0] == 200
    assert run.stop() == 0
    assert sorted(os.listdir(broken)) == ["ca-key.pem", "ca.pem"]  # nothing deleted, nothing made
    assert (broken / "ca.pem").read_text() == "not a certificate\n"
    assert sum("HTTPS is off" in line for line in run.lines) == 1
