"""The router: Heroku's HTTP front door on the public port, spreading requests over the web dynos that are up."""

from __future__ import annotations

import asyncio

from ..errors import PortError
from ..runtime.ports import claim_port
from .proxy import ClientConnection
from .state import RouterState
from .upstream import UpstreamPool


class Router(RouterState):
    """The router listening on its public port (`start`), until `stop`."""

    _server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.pool = UpstreamPool(self.loop)
        self.stopping = False
        try:
            self._server = await self.loop.create_server(
                lambda: ClientConnection(self), self.host, self._port, reuse_address=True, backlog=1024
            )
        except OSError as exc:
            claim_port(self._port, self.host)  # raises a PortError naming who holds the port
            raise PortError(
                f"cannot listen on {self.host}:{self._port}: {exc.strerror}; choose another with --port"
            ) from None
        self._port = self._server.sockets[0].getsockname()[1]

    def forget(self, port: int) -> None:
        """A web dyno is stopping: keep no idle connection open to it."""
        if self.pool is not None:
            self.pool.forget(port)

    async def stop(self) -> None:
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for task in list(self.handshakes):
            task.cancel()
        for conn in list(self.connections):
            conn.transport.abort()
        if self.pool is not None:
            self.pool.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        await asyncio.sleep(0)  # let the aborted connections run their connection_lost
        if self._publish is not None:
            self._publish.cancel()
        self._flush_log()
