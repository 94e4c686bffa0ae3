"""addon-latency: every connection to an add-on (or, with --probability, that share of them, picked by
the seeded rng as they open) slower by --latency per round trip, through a proxy in front of its server
(addons/latencyproxy.py) while the fault is on, and never otherwise.

The app's config vars name the add-on's port, and dynos that are up hold connections to it, so the proxy
must answer on that port: the server is restarted on a free internal port (same data, same credentials)
and the proxy takes its own, then at the end the proxy goes and the server comes back to its port. Each
switch drops the connections open then, as a restart does; the other ways in (moving the app to another
URL, which restarts every dyno; tc/netem or iptables, which need root and slow the whole loopback) change
more than a slow database does. The add-on's record and config vars never change."""

from __future__ import annotations

import random

from dynosim.addons.latencyproxy import HOST, LatencyProxy
from dynosim.addons.latencyproxy import start as start_proxy
from dynosim.errors import FaultError
from dynosim.faults import Fault, FaultRequest
from dynosim.faults.base import Platform, addon
from dynosim.faults.kinds.addon_server import AddonKind, address, label, start_server, stop_server
from dynosim.runtime.ports import free_port


class AddonLatency(AddonKind):
    name = "addon-latency"
    summary = "add --latency to every round trip to an add-on (heroku-postgresql, heroku-redis), through a proxy"

    def __init__(self) -> None:
        self._proxies: dict[str, LatencyProxy] = {}  # fault id → its proxy

    def check(self, request: FaultRequest, platform: Platform) -> None:
        super().check(request, platform)
        if not request.latency:
            raise FaultError(f"{self.name} needs --latency, like --latency 200ms")

    async def start(self, fault: Fault, platform: Platform, rng: random.Random) -> None:
        attachment = addon(platform, fault.request.target)
        own, _, _ = address(attachment)
        internal = free_port({own})
        latency = fault.request.latency or 0.0
        await stop_server(fault, platform, attachment)
        await start_server(fault, platform, attachment, internal)
        try:
            self._proxies[fault.id] = await start_proxy(
                own, (HOST, internal), latency, slowed=lambda: rng.random() < fault.request.probability
            )
        except OSError as error:  # its port was taken meanwhile: the server goes back, the fault fails
            await stop_server(fault, platform, attachment)
            await start_server(fault, platform, attachment)
            raise FaultError(f"{label(attachment)}: cannot put the latency proxy on port {own}: {error}") from None
        platform.logs.hint(
            "faults",
            f"{fault.id}: {label(attachment)}: a proxy on port {own} adds {latency * 1000:.0f} ms per round trip",
        )

    async def stop(self, fault: Fault, platform: Platform) -> None:
        attachment = addon(platform, fault.request.target)
        proxy = self._proxies.pop(fault.id, None)
        if proxy is not None:
            await proxy.close()
        await stop_server(fault, platform, attachment)
        await start_server(fault, platform, attachment)
