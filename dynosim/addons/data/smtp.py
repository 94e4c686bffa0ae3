"""The SMTP sink's data (Mailgun, SendGrid): the messages it captured; reset to none."""

from __future__ import annotations

from dynosim.addons.data.base import Context, Kind
from dynosim.addons.smtp import mail_files


def reset(ctx: Context) -> str:
    messages = [path for path in mail_files(ctx.state_dir) if path.parent.parent.name == ctx.name]
    for path in messages:
        path.unlink(missing_ok=True)
    return f"{len(messages)} captured message(s) deleted"


KIND = Kind(reset=reset)
