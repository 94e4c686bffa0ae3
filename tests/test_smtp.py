"""The SMTP sink behind mailgun and sendgrid: an app sends mail with smtplib, set up from the add-on's
config vars as in production, and `dynosim mail` lists what it sent. Real server, real client."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
import textwrap
import time
from email.message import EmailMessage
from pathlib import Path

import psutil
import pytest
from conftest import make_app, run_dynosim

from dynosim.addons import AddonRequest, Addons
from dynosim.addons.processes import accepts

pytestmark = pytest.mark.timeout(120)

MAILGUN = AddonRequest("mailgun")
SENDGRID = AddonRequest("sendgrid")


@pytest.fixture
def app(tmp_path: Path) -> Path:
    return make_app(tmp_path)


def quiet(_: str) -> None:
    pass


def letter(subject: str, to: str = "customer@example.com", body: str = "Thanks for signing up.") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Dynolab <hello@dynolab.example>"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def mail_json(app: Path) -> list[dict]:
    result = run_dynosim(app, "mail", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_mailgun_vars_login_and_capture(app: Path) -> None:
    with Addons(app / ".dynosim", [MAILGUN], backend="native", say=quiet) as addons:
        [mailgun] = addons.start()
        env = mailgun.config_vars
        assert (mailgun.service, mailgun.backend) == ("smtp", "embedded")
        assert sorted(env) == [
            "MAILGUN_API_KEY", "MAILGUN_DOMAIN", "MAILGUN_SMTP_LOGIN", "MAILGUN_SMTP_PASSWORD",
            "MAILGUN_SMTP_PORT", "MAILGUN_SMTP_SERVER",
        ]  # fmt: skip
        assert env["MAILGUN_SMTP_SERVER"] == "127.0.0.1"
        assert env["MAILGUN_DOMAIN"].endswith(".mailgun.org")
        assert env["MAILGUN_SMTP_LOGIN"] == f"postmaster@{env['MAILGUN_DOMAIN']}"

        # An app configured as for smtp.mailgun.org: AUTH LOGIN with the add-on's login.
        with smtplib.SMTP(env["MAILGUN_SMTP_SERVER"], int(env["MAILGUN_SMTP_PORT"]), timeout=10) as smtp:
            smtp.ehlo()
            assert "LOGIN" in smtp.esmtp_features["auth"] and "PLAIN" in smtp.esmtp_features["auth"]
            smtp.user, smtp.password = env["MAILGUN_SMTP_LOGIN"], env["MAILGUN_SMTP_PASSWORD"]
            assert smtp.auth("LOGIN", smtp.auth_login)[0] == 235
            refused = smtp.send_message(
                letter("Welcome to Dynolab"), to_addrs=["customer@example.com", "audit@example.com"]
            )
            assert refused == {}

    [listed] = mail_json(app)  # no run, no server: read from the add-on's folder
    assert listed["from"] == "Dynolab <hello@dynolab.example>"
    assert listed["to"] == "customer@example.com"
    assert listed["subject"] == "Welcome to Dynolab"
    assert listed["addon"] == mailgun.name
    path = Path(listed["file"])
    assert path.parent == app / ".dynosim" / "addons" / mailgun.name / "mail"
    assert path.name.endswith(f"-{listed['id']}.eml") and path.stat().st_mode & 0o777 == 0o600

    shown = run_dynosim(app, "mail:show", listed["id"])
    assert shown.returncode == 0, shown.stderr
    assert "Subject:  Welcome to Dynolab" in shown.stdout
    assert "to customer@example.com, audit@example.com" in shown.stdout  # the envelope: Bcc recipients too
    assert "Thanks for signing up." in shown.stdout
    table = run_dynosim(app, "mail")
    assert listed["id"] in table.stdout and "Welcome to Dynolab" in table.stdout


def test_a_wrong_password_or_no_login_is_refused_and_nothing_kept(app: Path) -> None:
    with Addons(app / ".dynosim", [MAILGUN], backend="native", say=quiet) as addons:
        env = addons.start()[0].config_vars
        port = int(env["MAILGUN_SMTP_PORT"])
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
                smtp.login(env["MAILGUN_SMTP_LOGIN"], env["MAILGUN_SMTP_PASSWORD"] + "x")
            assert caught.value.smtp_code == 535
            with pytest.raises(smtplib.SMTPSenderRefused) as no_login:  # as Mailgun: log in first
                smtp.send_message(letter("never"))
            assert no_login.value.smtp_code == 530
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp, pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login("postmaster@elsewhere.example", env["MAILGUN_SMTP_PASSWORD"])
    assert mail_json(app) == []


def test_mail_persists_across_restarts_with_the_same_port_and_login(app: Path) -> None:
    state = app / ".dynosim"
    with Addons(state, [MAILGUN], backend="native", say=quiet) as addons:
        first = addons.start()[0].config_vars
        with smtplib.SMTP("127.0.0.1", int(first["MAILGUN_SMTP_PORT"]), timeout=10) as smtp:
            smtp.login(first["MAILGUN_SMTP_LOGIN"], first["MAILGUN_SMTP_PASSWORD"])  # AUTH PLAIN: smtplib's choice
            smtp.send_message(letter("first"))
    assert not accepts(int(first["MAILGUN_SMTP_PORT"]))  # stopped with the add-ons

    with Addons(state, [MAILGUN], backend="native", say=quiet) as addons:
        again = addons.start()[0].config_vars
        assert again == first
        with smtplib.SMTP("127.0.0.1", int(again["MAILGUN_SMTP_PORT"]), timeout=10) as smtp:
            smtp.login(again["MAILGUN_SMTP_LOGIN"], again["MAILGUN_SMTP_PASSWORD"])
            smtp.send_message(letter("second"))
        assert [m["subject"] for m in mail_json(app)] == ["second", "first"]  # newest first, while it runs too
    newest = run_dynosim(app, "mail", "--json", "-n", "1")
    assert [m["subject"] for m in json.loads(newest.stdout)] == ["second"]


def test_sendgrid_vars_and_both_of_its_logins(app: Path) -> None:
    with Addons(app / ".dynosim", [SENDGRID], backend="native", say=quiet) as addons:
        [sendgrid] = addons.start()
        env = sendgrid.config_vars
        # SendGrid's add-on sets no host or port: apps name smtp.sendgrid.net themselves (see the catalogue)
        assert sorted(env) == ["SENDGRID_API_KEY", "SENDGRID_PASSWORD", "SENDGRID_USERNAME"]
        assert env["SENDGRID_API_KEY"].startswith("SG.") and env["SENDGRID_USERNAME"].endswith("@heroku.com")
        port = int(sendgrid.endpoint.rsplit(":", 1)[1])
        for login, password in (
            (env["SENDGRID_USERNAME"], env["SENDGRID_PASSWORD"]),
            ("apikey", env["SENDGRID_API_KEY"]),
        ):
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
                smtp.login(login, password)
                smtp.send_message(letter(f"via {login}"))
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp, pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login("apikey", env["SENDGRID_PASSWORD"])
    assert sorted(m["subject"] for m in mail_json(app)) == sorted(["via apikey", f"via {env['SENDGRID_USERNAME']}"])


def test_starttls_is_offered_not_required(app: Path) -> None:
    with Addons(app / ".dynosim", [MAILGUN], backend="native", say=quiet) as addons:
        env = addons.start()[0].config_vars
        with smtplib.SMTP("127.0.0.1", int(env["MAILGUN_SMTP_PORT"]), timeout=10) as smtp:
            smtp.starttls()  # Django's EMAIL_USE_TLS, Flask-Mail's MAIL_USE_TLS
            smtp.login(env["MAILGUN_SMTP_LOGIN"], env["MAILGUN_SMTP_PASSWORD"])
            smtp.send_message(letter("over TLS"))
    assert [m["subject"] for m in mail_json(app)] == ["over TLS"]


def test_mail_show_errors_and_an_empty_mailbox(app: Path) -> None:
    empty = run_dynosim(app, "mail")
    assert empty.returncode == 0 and "No mail captured yet" in empty.stdout
    missing = run_dynosim(app, "mail:show", "abc")
    assert missing.returncode == 1
    assert missing.stderr.startswith("dynosim: error: no mail captured yet") and len(missing.stderr.splitlines()) == 1


def test_the_sink_dies_with_dynosim(app: Path) -> None:
    """SIGKILL of the process that started it: the sink goes too (parent-death signal), the mail stays."""
    script = textwrap.dedent(f"""
        import smtplib, sys, time
        from email.message import EmailMessage
        from dynosim.addons import AddonRequest, Addons
        addons = Addons({str(app / ".dynosim")!r}, [AddonRequest("mailgun")], backend="native", say=lambda _: None)
        env = addons.start()[0].config_vars
        with smtplib.SMTP("127.0.0.1", int(env["MAILGUN_SMTP_PORT"])) as smtp:
            smtp.login(env["MAILGUN_SMTP_LOGIN"], env["MAILGUN_SMTP_PASSWORD"])
            msg = EmailMessage(); msg["Subject"] = "before the crash"; msg["From"] = "a@b.example"; msg["To"] = "c@d.example"
            smtp.send_message(msg)
        print(env["MAILGUN_SMTP_PORT"], flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        sink = next(c for c in psutil.Process(proc.pid).children() if "dynosim.addons.smtp" in " ".join(c.cmdline()))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        sink.wait(10)
        deadline = time.monotonic() + 5
        while accepts(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not accepts(port)
    finally:
        proc.kill()
    assert [m["subject"] for m in mail_json(app)] == ["before the crash"]


def test_under_the_docker_backend_the_sink_still_runs_natively(app: Path) -> None:
    """No official image exists for it: `--addons docker` runs it as a child all the same."""
    pytest.importorskip("docker")
    from dynosim.addons.backends.docker import NoEngine, probe

    try:
        probe()[0].close()
    except NoEngine as error:
        pytest.skip(f"no Docker engine: {error.reason}")
    lines: list[str] = []
    with Addons(app / ".dynosim", [MAILGUN], backend="docker", say=lines.append) as addons:
        [mailgun] = addons.start()
        assert mailgun.backend == "embedded"
        env = mailgun.config_vars
        with smtplib.SMTP("127.0.0.1", int(env["MAILGUN_SMTP_PORT"]), timeout=10) as smtp:
            smtp.login(env["MAILGUN_SMTP_LOGIN"], env["MAILGUN_SMTP_PASSWORD"])
    records = json.loads((app / ".dynosim" / "addons.json").read_text())["addons"]
    assert [r["backend"] for r in records] == ["embedded"]
    assert any("SMTP sink (embedded" in line for line in lines), lines
