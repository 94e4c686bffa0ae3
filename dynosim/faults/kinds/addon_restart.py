"""addon-restart: Heroku Postgres maintenance (or a Key-Value Store's), as the app sees it: every
connection dropped, the server back within a second or two on the same port with the same data. One
shot; given --for, once a second while it lasts."""

from __future__ import annotations

import random

from dynosim.faults import Fault
from dynosim.faults.base import Platform, addon
from dynosim.faults.kinds.addon_server import AddonKind, start_server, stop_server


class AddonRestart(AddonKind):
    name = "addon-restart"
    summary = "restart an add-on's server as Heroku's maintenance does: connections dropped, back in seconds"
    one_shot = True

    async def strike(self, fault: Fault, platform: Platform, rng: random.Random) -> None:
        if rng.random() >= fault.request.probability:
            return
        attachment = addon(platform, fault.request.target)
        if platform.addons.away(attachment.name) is not None:  # another fault has it down now
            return
        await stop_server(fault, platform, attachment)
        await start_server(fault, platform, attachment)
