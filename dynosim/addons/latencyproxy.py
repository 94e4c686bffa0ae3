"""A TCP proxy that adds latency, on 127.0.0.1: what `addon-latency` puts in front of an add-on's server
while the fault is on, so every query or command of every client is slower by the same amount.

Each connection is relayed byte for byte (TLS inside it, Postgres' SSL or rediss://, passes through
untouched), and whatever crosses it waits half the latency in each direction, so one round trip, a
`SELECT 1` or a `GET`, takes the whole latency more, as a far-away database would. The wait is a
deadline per chunk, not a pause of the stream: data keeps flowing at full speed behind it, in order.

It runs in the event loop of whoever starts it (the supervisor's, where faults are switched on and
off): it exists only while a latency fault is on, so nothing pays for it otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

HOST = "127.0.0.1"
CHUNK = 65536


class LatencyProxy:
    """A listening proxy: `close()` stops it and ends every connection it relays."""

    def __init__(self, server: asyncio.Server, relays: set[asyncio.Task[None]]) -> None:
        self.server = server
        self._relays = relays

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        self.server.close()
        for relay in list(self._relays):
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)
        await self.server.wait_closed()


async def start(
    port: int,
    target: tuple[str, int],
    latency: float,
    host: str = HOST,
    slowed: Callable[[], bool] = lambda: True,
) -> LatencyProxy:
    """Listens on host:port (0: a free port) and relays each connection to `target`, `latency` seconds
    slower per round trip for each connection `slowed()` picks as it arrives (the others at full speed).
    An OSError when the port is taken."""
    relays: set[asyncio.Task[None]] = set()

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        relays.add(task)
        delay = latency / 2 if slowed() else 0.0
        try:
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection(*target)
            except OSError:  # the server is down: the client sees its connection closed, as it would
                return
            try:
                await asyncio.gather(
                    _delayed(client_reader, upstream_writer, delay),
                    _delayed(upstream_reader, client_writer, delay),
                )
            finally:
                upstream_writer.close()
        finally:
            client_writer.close()
            relays.discard(task)

    server = await asyncio.start_server(relay, host, port, backlog=128, reuse_address=True)
    return LatencyProxy(server, relays)


async def _delayed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copies reader to writer, each chunk written `delay` seconds after it arrived, in order."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        try:
            while data := await reader.read(CHUNK):
                queue.put_nowait((time.monotonic() + delay, data))
        except OSError:
            pass
        queue.put_nowait((time.monotonic() + delay, b""))  # the end, delayed like the rest

    reading = asyncio.ensure_future(read())
    try:
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    with contextlib.suppress(OSError):
                        writer.write_eof()  # a half-close reaches the other side
                return
            writer.write(data)
            await writer.drain()
    except OSError:
        return
    finally:
        reading.cancel()
