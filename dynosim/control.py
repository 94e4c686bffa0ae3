"""The control socket: how `dynosim ps`, `logs`, `restart`, `config:set`, `ps:scale` reach a running
`dynosim run` from another terminal.

A Unix socket in the app's `.dynosim/` (a folder only its user can open; the socket itself is
0600). One JSON object per line each way. `logs --tail` keeps the connection open and streams
lines; a feed (`dynosim exec`'s one-off dyno) keeps it open the other way, the client sending
what its dyno does until it closes. A client that vanishes, sends garbage or floods only ends its
own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from .errors import DynosimError

SOCKET_NAME = "control.sock"
MAX_ADDRESS = 108  # sun_path's size on Linux, its final NUL included
MAX_REQUEST = 1 << 16

Handler = Callable[[Mapping[str, Any]], Awaitable[Any]]


class Listener(Protocol):
    """Where a feed's messages go, until the client closes the connection (or vanishes)."""

    def receive(self, message: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


Feed = Callable[[Mapping[str, Any]], Awaitable[Listener]]  # DynosimError refuses the feed


class NoRunError(DynosimError):
    exit_code = 2


class ControlServer:
    def __init__(
        self,
        state_dir: Path,
        handlers: Mapping[str, Handler],
        tail: Callable[[Mapping[str, Any]], Any],
        feeds: Mapping[str, Feed] | None = None,
    ) -> None:
        self.path = state_dir / SOCKET_NAME
        self.handlers = handlers
        self.tail = tail  # (request) -> async iterator of JSON-able lines
        self.feeds = feeds or {}
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        # only called once this app's run lock is ours, so a socket file left here is stale
        self.path.unlink(missing_ok=True)
        # no umask games (the process-wide umask would hit files other tasks create meanwhile): the
        # socket is born inside .dynosim/, which only this user can enter, and then made 0600
        with _address(self.path) as address:
            self._server = await asyncio.start_unix_server(self._serve, path=address, limit=MAX_REQUEST)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)
            self._server = None
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            while True:
                try:
                    raw = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError, ConnectionError):
                    await _send(writer, {"ok": False, "error": "request too long"})
                    return
                if not raw:
                    return
                try:
                    request = json.loads(raw)
                    if not isinstance(request, dict) or not isinstance(request.get("command"), str):
                        raise ValueError("not a request")
                except ValueError:
                    await _send(writer, {"ok": False, "error": "not a dynosim request"})
                    return
                if request["command"] == "logs:tail":
                    async for line in self.tail(request):
                        await _send(writer, line)
                    return
                feed = self.feeds.get(request["command"])
                if feed is not None:
                    await self._feed(feed, request, reader, writer)
                    return
                handler = self.handlers.get(request["command"])
                if handler is None:
                    await _send(writer, {"ok": False, "error": f"unknown command {request['command']!r}"})
                    continue
                try:
                    await _send(writer, {"ok": True, "result": await handler(request)})
                except DynosimError as error:
                    await _send(writer, {"ok": False, "error": str(error)})
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _feed(
        self, feed: Feed, request: Mapping[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            listener = await feed(request)
        except DynosimError as error:
            await _send(writer, {"ok": False, "error": str(error)})
            return
        try:
            await _send(writer, {"ok": True, "result": None})
            async for message in _messages(reader):
                listener.receive(message)
        finally:
            listener.close()


async def _messages(reader: asyncio.StreamReader) -> AsyncIterator[Mapping[str, Any]]:
    """A feed's JSON objects, until the client closes, or sends something else."""
    while True:
        try:
            raw = await reader.readline()
            message = json.loads(raw) if raw else None
        except (ValueError, asyncio.LimitOverrunError, ConnectionError):
            return
        if not isinstance(message, dict):
            return
        yield message


async def _send(writer: asyncio.StreamWriter, payload: object) -> None:
    writer.write(json.dumps(payload).encode() + b"\n")
    await writer.drain()


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    """The socket's address: its path, or, when that is longer than a socket address may be (108 bytes
    on Linux: an app folder deep in a home directory), the same file reached through a descriptor of
    its folder, which the kernel resolves as it binds or connects."""
    if len(os.fsencode(path)) < MAX_ADDRESS:
        yield str(path)
        return
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{folder}/{path.name}"
    finally:
        os.close(folder)


def _connect(state_dir: Path) -> socket.socket:
    path = state_dir / SOCKET_NAME
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _address(path) as address:
            sock.connect(address)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise NoRunError(f"no dynosim run is active in {state_dir.parent}; start one with `dynosim run`") from None
    except PermissionError:
        sock.close()
        raise DynosimError(f"{path}: permission denied; the run belongs to another user") from None
    return sock


def request(state_dir: Path, command: str, **arguments: object) -> Any:
    """One request to the running supervisor; its result, or DynosimError with its message."""
    with _connect(state_dir) as sock, sock.makefile("rwb") as stream:
        stream.write(json.dumps({"command": command, **arguments}).encode() + b"\n")
        stream.flush()
        line = stream.readline()
    if not line:
        raise DynosimError("the dynosim run closed the control connection; is it stopping?")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise DynosimError(reply.get("error", "the request failed"))
    return reply["result"]


def stream(state_dir: Path, command: str, **arguments: object) -> Iterator[Any]:
    """Lines streamed by the running supervisor, until it stops sending."""
    with _connect(state_dir) as sock, sock.makefile("rwb") as lines:
        lines.write(json.dumps({"command": command, **arguments}).encode() + b"\n")
        lines.flush()
        for line in lines:
            yield json.loads(line)


class FeedConnection:
    """A feed to the running supervisor, from an event loop: what is sent is buffered, never waited for,
    and dropped once the supervisor has gone (the client's own work goes on without it)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def send(self, payload: object) -> None:
        if not self._writer.is_closing():
            self._writer.write(json.dumps(payload).encode() + b"\n")

    async def close(self) -> None:
        with contextlib.suppress(ConnectionError):
            if not self._writer.is_closing():
                await self._writer.drain()
            self._writer.close()
            await self._writer.wait_closed()


async def open_feed(state_dir: Path, command: str, **arguments: object) -> FeedConnection:
    """A feed the running supervisor accepted; NoRunError when none runs, DynosimError when it refuses."""
    sock = _connect(state_dir)
    sock.setblocking(False)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    writer.write(json.dumps({"command": command, **arguments}).encode() + b"\n")
    line = await reader.readline()
    reply = json.loads(line) if line else {"error": "the dynosim run closed the control connection; is it stopping?"}
    if not reply.get("ok"):
        writer.close()
        raise DynosimError(reply.get("error", "the request failed"))
    return FeedConnection(writer)
