"""`dynosim certs`: the local certificate authority the router's HTTPS and the TLS add-ons use."""

from __future__ import annotations

import click

from ..clikit import operate


@click.command("certs")
@operate
def certs() -> None:
    """Where dynosim's local certificate authority is, and how to trust it (made on first use)."""
    from ..ca import LocalCA, trust_instructions

    ca = LocalCA.load_or_create(say=lambda line: click.echo(line, err=True))
    ca.server_cert(say=lambda line: click.echo(line, err=True))
    click.echo(trust_instructions(ca))
