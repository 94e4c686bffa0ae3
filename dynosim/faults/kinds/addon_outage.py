"""addon-outage: an add-on's server stopped for a while, cleanly (Postgres' fast shutdown, Redis' SIGTERM),
so the app's clients get the real errors (psycopg's "connection refused", redis-py's ConnectionError),
then started again on the same port with the same data: nothing acknowledged is lost."""

from __future__ import annotations

import random

from dynosim.faults import Fault
from dynosim.faults.base import Platform, addon
from dynosim.faults.kinds.addon_server import AddonKind, start_server, stop_server


class AddonOutage(AddonKind):
    name = "addon-outage"
    summary = "stop an add-on's server (heroku-postgresql, heroku-redis) cleanly --for a while, same data after"
    by_chance = False

    async def start(self, fault: Fault, platform: Platform, rng: random.Random) -> None:
        await stop_server(fault, platform, addon(platform, fault.request.target))

    async def stop(self, fault: Fault, platform: Platform) -> None:
        await start_server(fault, platform, addon(platform, fault.request.target))
