"""addon-failover: an HA failover, as Heroku does it: the primary is gone and a standby is promoted, a
server at another address with the same data and the same credentials (a standby is a copy of the
primary, its roles and passwords included). Heroku then changes the add-on's config vars ("The value of
your DATABASE_URL and HEROKU_POSTGRESQL_*_URL config vars may change on a failover event", Dev Center's
heroku-postgres-ha; the Key-Value Store's HA plans the same for REDIS_URL), which makes a new release
and restarts every dyno. Here every server is on 127.0.0.1, so the new address is a new port: the
add-on's record gets it, the run makes the add-on's release, and a process that cached the old URL
keeps getting "connection refused" where nothing listens any more."""

from __future__ import annotations

import asyncio
import random

from dynosim.faults import Fault
from dynosim.faults.base import Platform
from dynosim.faults.kinds.addon_server import AddonKind, label, start_server, struck_down


class AddonFailover(AddonKind):
    name = "addon-failover"
    summary = "fail an add-on over to a standby: a new port, its config vars changed, every dyno restarted"
    one_shot = True

    async def strike(self, fault: Fault, platform: Platform, rng: random.Random) -> None:
        attachment = await struck_down(fault, platform, rng)
        if attachment is None:
            return
        port = await asyncio.to_thread(platform.addons.move_server, attachment.name)
        platform.logs.hint("faults", f"{fault.id}: {label(attachment)}: a standby is promoted, on port {port}")
        await start_server(fault, platform, attachment)
        addon_name = attachment.plan.partition(":")[0]
        as_name = next(iter(attachment.config_vars)).removesuffix("_URL")  # DATABASE, REDIS
        await platform.addon_changed(
            attachment.name, f"Update {as_name} by {addon_name}", f"{addon_name}@addons.heroku.com"
        )
