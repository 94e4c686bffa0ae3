"""addon-restart: Heroku Postgres maintenance (or a Key-Value Store's), as the app sees it: every
connection dropped, the server back within a second or two on the same port with the same data. One
shot; given --for, once a second while it lasts."""

from __future__ import annotations

import random

from dynosim.faults import Fault
from dynosim.faults.base import Platform
from dynosim.faults.kinds.addon_server import AddonKind, start_server, struck_down


class AddonRestart(AddonKind):
    name = "addon-restart"
    summary = "restart an add-on's server as Heroku's maintenance does: connections dropped, back in seconds"
    one_shot = True

    async def strike(self, fault: Fault, platform: Platform, rng: random.Random) -> None:
        attachment = await struck_down(fault, platform, rng)
        if attachment is not None:
            await start_server(fault, platform, attachment)
