"""The dashboard's web server: aiohttp on the supervisor's own loop, 127.0.0.1 only.

It reads and changes the run only through the control socket's handlers (the ones `dynosim ps`,
`restart`, `ps:scale`, `maintenance`, `metrics`, `logs` use), so the page can do nothing the CLI
cannot. Every request needs a session: a one-time login token (in the URL printed at start, or a
fresh one from `dynosim dashboard`) is swapped for an HttpOnly, SameSite=Strict cookie and then
burned. The Host header must name loopback and this port (a DNS-rebinding page cannot reach it),
and a change is a JSON POST whose Origin is this dashboard's (a cross-site form cannot make one).

Live data goes out as server-sent events: one tick a second (the formation, maintenance, the
seconds of metrics closed since the last tick) and the log stream as `logs --tail` has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DynosimError
from ..metrics import to_csv

if TYPE_CHECKING:  # aiohttp (140 ms to import) is imported on a thread when the dashboard starts
    from aiohttp import web

Handler = Callable[[Mapping[str, Any]], Awaitable[Any]]
Tail = Callable[[Mapping[str, Any]], AsyncIterator[str]]

STATIC = Path(__file__).parent / "static"
TICK_SECONDS = 1.0
LOGIN_TOKENS_KEPT = 16  # unused login links a run keeps: `dynosim dashboard` run often should not grow it
LOG_BACKLOG = 200  # lines a new log view starts with
FORBIDDEN = "Forbidden"


class Dashboard:
    def __init__(self, handlers: Mapping[str, Handler], tail: Tail, port: int, host: str = "127.0.0.1") -> None:
        self.handlers = handlers
        self.tail = tail
        self.host = host
        self.port = port
        self._logins: OrderedDict[str, None] = OrderedDict()
        self._sessions: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._streams: set[web.StreamResponse] = set()

    @property
    def cookie(self) -> str:
        return f"dynosim_dashboard_{self.port}"  # one per port: two apps' dashboards keep their own

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def login_url(self) -> str:
        """A new one-time link: it opens a session in the browser that follows it, then stops working."""
        token = secrets.token_urlsafe(24)
        self._logins[token] = None
        while len(self._logins) > LOGIN_TOKENS_KEPT:
            self._logins.popitem(last=False)
        return f"{self.base_url}?token={token}"

    async def start(self) -> None:
        """Listening, or OSError (the port taken) with nothing left behind."""
        aiohttp_web = await asyncio.to_thread(_import_web)

        @aiohttp_web.middleware
        async def guard(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            return await self._guard(request, handler)

        app = aiohttp_web.Application(middlewares=[guard])
        app.add_routes(
            [
                aiohttp_web.get("/", self._index),
                aiohttp_web.static("/static", STATIC),
                aiohttp_web.get("/api/ps", self._ps),
                aiohttp_web.get("/api/dynos/{name}", self._dyno),
                aiohttp_web.get("/api/metrics", self._metrics),
                aiohttp_web.get("/api/metrics.csv", self._metrics_csv),
                aiohttp_web.get("/api/ledger", self._ledger),
                aiohttp_web.get("/api/releases", self._plain("releases")),
                aiohttp_web.get("/api/addons", self._plain("addons")),
                aiohttp_web.get("/api/config", self._config),
                aiohttp_web.get("/api/live", self._live),
                aiohttp_web.get("/api/logs", self._logs),
                aiohttp_web.post("/api/restart", self._restart),
                aiohttp_web.post("/api/scale", self._scale),
                aiohttp_web.post("/api/maintenance", self._maintenance),
            ]
        )
        runner = aiohttp_web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        # SO_REUSEADDR: the last run's connections in TIME_WAIT must not keep the port (on Linux it
        # never lets two servers listen on one port)
        site = aiohttp_web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]  # the one the system chose, for --dashboard-port 0

    async def stop(self) -> None:
        if self._runner is not None:
            for stream in list(self._streams):  # a tab left open would hold the shutdown for its timeout
                with contextlib.suppress(Exception):
                    stream.force_close()
            await self._runner.cleanup()
            self._runner = None

    # -- the guard: host, session, origin --------------------------------------------------------------

    @property
    def _hosts(self) -> set[str]:
        return {f"127.0.0.1:{self.port}", f"localhost:{self.port}", f"{self.host}:{self.port}"}

    def _session(self, request: web.Request) -> bool:
        value = request.cookies.get(self.cookie, "")
        return any(hmac.compare_digest(value, session) for session in self._sessions)

    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        from aiohttp import web

        if request.host not in self._hosts:
            return web.Response(status=403, text=FORBIDDEN)
        token = request.query.get("token")
        if request.method == "GET" and request.path == "/" and token is not None:
            if token not in self._logins:  # never issued, or used already
                return web.Response(status=403, text=FORBIDDEN)
            del self._logins[token]
            session = secrets.token_urlsafe(32)
            self._sessions.add(session)
            # the token leaves the address bar and the history
            response = web.Response(status=303, headers={"Location": "/"})
            response.set_cookie(self.cookie, session, httponly=True, samesite="Strict", path="/")
            return response
        if not self._session(request):
            return web.Response(status=403, text=FORBIDDEN)
        if request.method != "GET":
            origin = request.headers.get("Origin", "")
            if origin not in {f"http://{host}" for host in self._hosts} or request.content_type != "application/json":
                return web.Response(status=403, text="Forbidden: a change needs this dashboard's Origin and JSON")
        try:
            return await handler(request)
        except DynosimError as error:
            return web.json_response({"error": str(error)}, status=400)

    # -- pages and reads -------------------------------------------------------------------------------

    async def _index(self, _: web.Request) -> web.StreamResponse:
        from aiohttp import web

        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def _call(self, name: str, **request: Any) -> Any:
        return await self.handlers[name](request)

    async def _ps(self, _: web.Request) -> web.StreamResponse:
        from aiohttp import web

        return web.json_response({"dynos": await self._call("ps"), "maintenance": await self._call("maintenance")})

    async def _dyno(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        name = request.match_info["name"]
        rows = [row for row in await self._call("ps") if row["name"] == name]
        if not rows:
            return web.json_response(
                {"error": f"no dyno {name} is running; the formation table (or `dynosim ps`) lists them"}, status=404
            )
        ledger = await self._call("ledger")
        return web.json_response(
            {
                "dyno": rows[0],
                "pending": [loss for loss in ledger["pending"] if loss["dyno"] == name],
                "logs": await self._call("logs", dyno=name, n=LOG_BACKLOG),
            }
        )

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        return web.json_response(await self._series(request))

    async def _metrics_csv(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        series = await self._series(request)
        return web.Response(
            text=to_csv(series["points"]),
            content_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="dynosim-metrics.csv"'},
        )

    async def _series(self, request: web.Request) -> dict[str, Any]:
        since, window = _number(request, "since"), _number(request, "window")
        series: dict[str, Any] = await self._call("metrics", since=since, window=window)
        return series

    async def _ledger(self, _: web.Request) -> web.StreamResponse:
        from aiohttp import web

        return web.json_response(await self._call("ledger"))

    def _plain(self, name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def read(_: web.Request) -> web.StreamResponse:
            from aiohttp import web

            return web.json_response(await self._call(name))

        return read

    async def _config(self, request: web.Request) -> web.StreamResponse:
        """Names only, until a value is asked for (`?reveal=NAME`), as the Dashboard's Reveal Config Vars."""
        from aiohttp import web

        config: dict[str, str] = await self._call("config")
        wanted = request.query.get("reveal")
        if wanted is None:
            return web.json_response({"names": sorted(config)})
        if wanted not in config:
            return web.json_response({"error": f"no config var {wanted} in the current release"}, status=404)
        return web.json_response({"name": wanted, "value": config[wanted]})

    # -- live ------------------------------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await response.prepare(request)
        self._streams.add(response)
        return response

    async def _live(self, request: web.Request) -> web.StreamResponse:
        """A tick a second: the formation, maintenance, and the metrics' seconds closed since the last."""
        response = await self._events(request)
        since = _number(request, "since")
        try:
            while True:
                tick: dict[str, Any] = {"dynos": await self._call("ps"), "maintenance": await self._call("maintenance")}
                try:
                    points = (await self._call("metrics", since=since))["points"]
                except DynosimError:  # --no-metrics: the formation still ticks
                    points = []
                if points:
                    since = points[-1]["time"] + 1
                tick["points"] = points
                await response.write(f"data: {json.dumps(tick)}\n\n".encode())
                await asyncio.sleep(TICK_SECONDS)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the tab closed, or the run is stopping
        finally:
            self._streams.discard(response)
        return response

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        """The log stream as `logs --tail [-s SOURCE] [-d DYNO]` has it, one event a line."""
        response = await self._events(request)
        query = {key: request.query[key] for key in ("dyno", "source") if request.query.get(key)}
        try:
            async for line in self.tail({**query, "n": LOG_BACKLOG}):
                await response.write(f"data: {json.dumps(line)}\n\n".encode())
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._streams.discard(response)
        return response

    # -- changes: the CLI's verbs ------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise DynosimError("the request's body is not JSON") from None
        if not isinstance(body, dict):
            raise DynosimError("the request's body is not a JSON object")
        return body

    async def _restart(self, request: web.Request) -> web.StreamResponse:
        """`dynosim restart [DYNO|TYPE]`."""
        from aiohttp import web

        target = (await self._body(request)).get("target") or None
        if target is not None and not any(target in (row["name"], row["type"]) for row in await self._call("ps")):
            return web.json_response(
                {"error": f"no dyno or process type {target} is running; the formation table lists them"}, status=404
            )
        return web.json_response({"restarted": await self._call("restart", target=target)})

    async def _scale(self, request: web.Request) -> web.StreamResponse:
        """`dynosim ps:scale TYPE=N`."""
        from aiohttp import web

        counts = (await self._body(request)).get("counts")
        if not isinstance(counts, dict) or not all(isinstance(n, int) for n in counts.values()):
            raise DynosimError('ps:scale takes {"counts": {"web": 2}}')
        return web.json_response({"formation": await self._call("ps:scale", counts=counts)})

    async def _maintenance(self, request: web.Request) -> web.StreamResponse:
        """`dynosim maintenance:on` / `:off`."""
        from aiohttp import web

        on = (await self._body(request)).get("on")
        if not isinstance(on, bool):
            raise DynosimError('maintenance takes {"on": true} or {"on": false}')
        return web.json_response({"maintenance": await self._call("maintenance", on=on)})


def _import_web() -> Any:
    from aiohttp import web

    return web


def _number(request: web.Request, name: str) -> float | None:
    value = request.query.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise DynosimError(f"?{name}= takes a number of seconds, not {value!r}") from None
