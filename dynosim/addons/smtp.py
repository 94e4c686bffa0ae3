"""The SMTP sink behind the mailgun and sendgrid add-ons: it takes every message and keeps it, sends none.

aiosmtpd on 127.0.0.1 and the add-on's port, as a child process of dynosim (like the search stand-in;
services/smtp.py starts it, and sets the add-on's config vars):

    python -m dynosim.addons.smtp --folder DIR --port N [--cert PEM --key PEM]

It asks for AUTH PLAIN or LOGIN with the add-on's login and password (from $DYNOSIM_SMTP_LOGINS, a JSON
list of [login, password] pairs, never the command line), as Mailgun and SendGrid do, so an app set up as
in production works and a wrong password is refused. STARTTLS is offered with a certificate from
dynosim's local CA when there is one; it is never required.

Each message is a file `<folder>/mail/<UTC time>-<id>.eml`: what the app sent, after a Return-Path and
an X-Dynosim-Envelope-To header (Bcc recipients are only in the envelope). It is written to a scratch
name and renamed, so `dynosim mail` never reads half a message. The files are the add-on's data: they
stay until `dynosim addons:destroy`.
"""

from __future__ import annotations

import argparse
import email.policy
import email.utils
import errno
import hmac
import json
import os
import re
import secrets
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from pathlib import Path
from typing import Any

from dynosim.errors import AddonError
from dynosim.privatefile import write_private

LOGINS_VAR = "DYNOSIM_SMTP_LOGINS"  # the (login, password) pairs it accepts: never on its command line
MAIL = "mail"  # the folder, in the add-on's folder, it keeps mail in

_NAME = re.compile(r"^(\d{8}T\d{6}\.\d{6}Z)-([0-9a-f]+)\.eml$")
_STAMP = "%Y%m%dT%H%M%S.%fZ"


# --- the mailbox: what `dynosim mail` reads ---------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    """One captured message, as listed."""

    id: str  # "3f9c0a1b2d"
    time: datetime  # when the sink took it, UTC
    addon: str  # the add-on's name: "mailgun-curly-12345"
    sender: str  # the From header (the envelope sender when there is none)
    to: str  # the To header (the envelope recipients when there is none)
    subject: str
    size: int  # bytes
    path: Path

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time.isoformat().replace("+00:00", "Z"),
            "addon": self.addon,
            "from": self.sender,
            "to": self.to,
            "subject": self.subject,
            "size": self.size,
            "file": str(self.path),
        }


def mail_files(state_dir: Path) -> list[Path]:
    """Every captured message of the app, oldest first (their names sort by time)."""
    files = [p for p in (Path(state_dir) / "addons").glob(f"*/{MAIL}/*.eml") if _NAME.match(p.name)]
    return sorted(files, key=lambda p: p.name)


def read_mail(path: Path) -> Mail:
    match = _NAME.match(path.name)
    if match is None:
        raise AddonError(f"{path}: not a message dynosim captured")
    with open(path, "rb") as f:
        headers = BytesHeaderParser(policy=email.policy.default).parse(f)
    envelope_to = str(headers.get("X-Dynosim-Envelope-To", ""))
    envelope_from = str(headers.get("Return-Path", "")).strip("<>")
    return Mail(
        id=match[2],
        time=datetime.strptime(match[1], _STAMP).replace(tzinfo=UTC),
        addon=path.parent.parent.name,
        sender=_header(headers, "From") or envelope_from,
        to=_header(headers, "To") or envelope_to,
        subject=_header(headers, "Subject"),
        size=path.stat().st_size,
        path=path,
    )


def list_mail(state_dir: Path, limit: int | None = None) -> list[Mail]:
    """The newest `limit` messages (all when None), newest first."""
    files = mail_files(state_dir)
    if limit is not None:
        files = files[-limit:] if limit > 0 else []
    return [read_mail(path) for path in reversed(files)]


def find_mail(state_dir: Path, wanted: str) -> Mail:
    """A message by its id, a prefix of it, or its file name."""
    wanted = wanted.strip().removesuffix(".eml")
    files = mail_files(state_dir)
    hits = [p for p in files if p.stem == wanted or _NAME.match(p.name)[2].startswith(wanted.lower())]  # type: ignore[index]
    if not wanted or not hits:
        where = Path(state_dir) / "addons"
        raise AddonError(
            f'no captured message "{wanted}" in {where}; `dynosim mail` lists them'
            if files
            else f"no mail captured yet (in {where}); an app sends it through its mailgun or sendgrid add-on"
        )
    if len(hits) > 1:
        ids = ", ".join(_NAME.match(p.name)[2] for p in hits[:5])  # type: ignore[index]
        raise AddonError(f'"{wanted}" matches {len(hits)} messages ({ids}…); give more of the id')
    return read_mail(hits[0])


def message(mail: Mail) -> EmailMessage:
    with open(mail.path, "rb") as f:
        parsed = BytesParser(policy=email.policy.default).parse(f)
    assert isinstance(parsed, EmailMessage)
    return parsed


def readable(mail: Mail) -> dict[str, Any]:
    """The message as `mail:show` shows it: its headers, its text, and its attachments' names."""
    parsed = message(mail)
    body = parsed.get_body(preferencelist=("plain", "html"))
    text = ""
    if body is not None:
        try:
            text = body.get_content()
        except (LookupError, ValueError):  # an unknown charset, a broken encoding: show the bytes as they are
            payload = body.get_payload(decode=True)
            text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    attachments = [
        {
            "filename": part.get_filename() or "",
            "content_type": part.get_content_type(),
            "size": len(part.get_payload(decode=True) or b""),
        }
        for part in parsed.iter_attachments()
    ]
    return {
        **mail.as_json(),
        "envelope_from": str(parsed.get("Return-Path", "")).strip("<>"),
        "envelope_to": [a.strip() for a in str(parsed.get("X-Dynosim-Envelope-To", "")).split(",") if a.strip()],
        "cc": _header(parsed, "Cc"),
        "date": _header(parsed, "Date"),
        "content_type": body.get_content_type() if body is not None else "",
        "body": text,
        "attachments": attachments,
    }


def _header(headers: Any, name: str) -> str:
    try:
        value = headers.get(name)
    except (ValueError, IndexError):  # a header the parser cannot make sense of
        value = None
    return " ".join(str(value).split()) if value is not None else ""


# --- the server (this module run as a process) ------------------------------------------------------


class Sink:
    """aiosmtpd's handler: every message goes to a file in the mail folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import asyncio

        mail_id = await asyncio.to_thread(
            self.keep, envelope.mail_from or "", list(envelope.rcpt_tos), envelope.content, session
        )
        return f"250 2.0.0 Ok: queued as {mail_id}"

    def keep(self, sender: str, recipients: list[str], content: bytes, session: Any) -> str:
        mail_id = secrets.token_hex(5)
        now = datetime.now(UTC)
        newline = b"\r\n" if b"\r\n" in content[:4096] else b"\n"
        peer = session.peer[0] if session.peer else "?"
        trace = [
            f"Return-Path: <{sender}>",
            f"X-Dynosim-Envelope-To: {', '.join(recipients)}",
            f"Received: from {session.host_name or '?'} ({peer}) by dynosim-smtp-sink with ESMTP id {mail_id}; "
            + email.utils.format_datetime(now),
        ]
        data = newline.join(line.encode("utf-8", "replace") for line in trace) + newline + content
        name = f"{now.strftime(_STAMP)}-{mail_id}.eml"
        write_private(self.folder / name, data)  # synced: "250 Ok" promises the message is kept
        print(f"captured {name} from <{sender}> to {', '.join(recipients)}", flush=True)
        return mail_id


class Logins:
    """aiosmtpd's authenticator: PLAIN and LOGIN with one of the add-on's (login, password) pairs."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        self.pairs = [(login.encode(), password.encode()) for login, password in pairs]

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = False
        for login, password in self.pairs:  # compare them all: the time taken says nothing
            ok |= hmac.compare_digest(auth_data.login, login) & hmac.compare_digest(auth_data.password, password)
        return AuthResult(success=ok, handled=False)


async def serve(folder: Path, host: str, port: int, logins: Sequence[tuple[str, str]], tls: Any) -> None:
    import asyncio
    import logging
    import warnings

    from aiosmtpd.smtp import SMTP

    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd logs every connection at INFO
    warnings.filterwarnings("ignore", message=".*AUTH.*TLS.*")  # AUTH without TLS: on purpose, on loopback
    mail = folder / MAIL
    mail.mkdir(mode=0o700, parents=True, exist_ok=True)
    for leftover in mail.glob(".*.part"):  # from a sink killed while it wrote: never acknowledged
        leftover.unlink(missing_ok=True)
    sink, authenticator = Sink(mail), Logins(logins)

    def session() -> SMTP:
        return SMTP(
            sink,
            hostname="localhost",  # not getfqdn(): a DNS lookup per connection
            ident="dynosim SMTP sink (mail is kept, never sent)",
            enable_SMTPUTF8=True,
            tls_context=tls,
            require_starttls=False,
            auth_required=True,  # Mailgun and SendGrid refuse mail from a client that did not log in
            auth_require_tls=False,
            authenticator=authenticator,
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(session, host, port)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"listening on smtp://{host}:{port}, keeping mail in {mail}", flush=True)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()


def main(argv: Sequence[str] | None = None) -> int:
    import asyncio
    import ssl

    parser = argparse.ArgumentParser(prog="python -m dynosim.addons.smtp", description="dynosim's SMTP sink")
    parser.add_argument("--folder", required=True, type=Path, help="the add-on's folder; mail goes to its mail/")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--cert", type=Path, help="certificate chain for STARTTLS (PEM)")
    parser.add_argument("--key", type=Path, help="its private key (PEM)")
    args = parser.parse_args(argv)
    try:
        logins = [(str(login), str(password)) for login, password in json.loads(os.environ.get(LOGINS_VAR, "[]"))]
    except (ValueError, TypeError):
        print(f"dynosim smtp: ${LOGINS_VAR} must be a JSON list of [login, password] pairs", file=sys.stderr)
        return 2
    tls = None
    if args.cert and args.key:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2
        tls.load_cert_chain(args.cert, args.key)
    try:
        asyncio.run(serve(args.folder, args.host, args.port, logins, tls))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            print(f"dynosim smtp: port {args.port} on {args.host} is taken", file=sys.stderr)
        else:
            print(f"dynosim smtp: cannot start on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
