"""The ASGI application each simulated mailbox server runs (Starlette; one route module per protocol).

Layers, outside in:

1. :class:`FrontEnd` — what IIS and the Client Access proxy do before any protocol code: paths are matched
   case-insensitively (IIS), every response carries ``X-FEServer`` (the server that answered, as Exchange sends
   it) and a ``request-id``; a virtual directory whose component is Inactive (maintenance) answers 503; a server
   that is black-holed (powered off, ``--mode blackhole``) never answers at all.
2. :class:`casprobe.lab.ntlm.AuthMiddleware` — NTLM / Negotiate / Basic, IIS-like per connection; only
   healthcheck.htm and the v2 JSON Autodiscover are anonymous.
3. The routes: health here, the protocols in :mod:`casprobe.lab.routes`.

The lab's choice where protocols.md 7.5 says nothing is official: a server in maintenance answers 503 both on
its health check pages and on the protocol endpoints of its inactive components.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from casprobe.lab.components import VDIR_COMPONENT
from casprobe.lab.world import LabWorld

__all__ = ["FrontEnd", "Gate", "RouteFactory", "build_server_app", "health_routes", "is_anonymous_path"]

RouteFactory = Callable[[LabWorld, str], Sequence[BaseRoute]]


class Gate:
    """Holds requests and responses while a server is black-holed (powered off without a reset)."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()

    @property
    def closed(self) -> bool:
        return not self._open.is_set()

    def close(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    async def hold(self) -> None:
        """Wait while the gate is closed; afterwards the connection is dead (the server "rebooted")."""
        if self._open.is_set():
            return
        await self._open.wait()
        raise ConnectionAbortedError("the server was powered off while this request was in flight")


def is_anonymous_path(path: str) -> bool:
    """What IIS serves without authentication in Exchange: healthcheck.htm and Autodiscover v2 JSON."""
    p = path.lower()
    return p.endswith("/healthcheck.htm") or p.startswith("/autodiscover/autodiscover.json")


class FrontEnd:
    """IIS + Client Access front end behaviour common to every protocol (see the module docstring)."""

    def __init__(self, app: ASGIApp, world: LabWorld, server: str, gate: Gate) -> None:
        self.app = app
        self.world = world
        self.server = server
        self.netbios = world.org.server(server).netbios
        self.gate = gate
        self.delay = world.config.response_delay_ms / 1000

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.gate.hold()
        scope = dict(scope)
        scope["path"] = scope["path"].lower()
        vdir = scope["path"].strip("/").partition("/")[0]
        request_id = str(uuid.uuid4())

        async def send_with_headers(message: Message) -> None:
            await self.gate.hold()
            if message["type"] == "http.response.start":
                if self.delay:
                    await asyncio.sleep(self.delay)
                headers = list(message.get("headers", []))
                headers.append((b"x-feserver", self.netbios.encode()))
                headers.append((b"request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        if (
            vdir in VDIR_COMPONENT
            and not scope["path"].endswith("/healthcheck.htm")
            and not self.world.vdir_active(self.server, vdir)
        ):
            response = PlainTextResponse("Service Unavailable", status_code=503, media_type="text/html")
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def health_routes(world: LabWorld, server: str) -> list[BaseRoute]:
    """``/<vdir>/healthcheck.htm``: 200 ``200 OK<br/><fqdn>`` while the vdir's component is active, else 503."""
    fqdn = world.org.server(server).fqdn

    async def healthcheck(request: Request) -> Response:
        vdir = request.path_params["vdir"]
        if vdir not in VDIR_COMPONENT:
            return PlainTextResponse("Not Found", status_code=404, media_type="text/html")
        if world.vdir_active(server, vdir):
            return PlainTextResponse(f"200 OK<br/>{fqdn}", media_type="text/html")
        return PlainTextResponse(f"503 Service Unavailable<br/>{fqdn}", status_code=503, media_type="text/html")

    return [Route("/{vdir}/healthcheck.htm", healthcheck, methods=["GET", "HEAD"])]


async def _not_found(request: Request, exc: Exception) -> Response:
    return PlainTextResponse("404 - File or directory not found.", status_code=404, media_type="text/html")


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return PlainTextResponse("405 - Method not allowed.", status_code=405, media_type="text/html")


def build_server_app(
    world: LabWorld,
    server: str,
    *,
    gate: Gate,
    route_factories: Sequence[RouteFactory],
    auth: Callable[[ASGIApp], ASGIApp] | None,
) -> ASGIApp:
    """The full application of one server: front end, authentication, routes."""
    routes: list[BaseRoute] = list(health_routes(world, server))
    for factory in route_factories:
        routes.extend(factory(world, server))
    app: ASGIApp = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _method_not_allowed})
    if auth is not None:
        app = auth(app)
    return FrontEnd(app, world, server, gate)
