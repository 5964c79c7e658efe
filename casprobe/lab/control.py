"""The control API a running lab answers on ``control.sock`` in its folder, and the client the CLI uses.

JSON over HTTP on a Unix socket (only the lab's owner can reach it). Errors come back as
``{"error": "<message>"}`` with 400 (bad request) or 409 (the lab refused: already in maintenance, …).

- ``GET /status`` — servers (power, maintenance, components), databases (active copy), users, HAProxy's view
- ``GET /events?since=N`` — the event log after sequence N
- ``POST /maintenance/{server}/start|stop``
- ``POST /power/{server}/off?mode=refuse|blackhole`` and ``/power/{server}/on``
- ``POST /switchover/{db}?to=SERVER``
- ``POST /haproxy/restart`` — restart the load balancer
- ``POST /shutdown`` — ``lab down``
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from casprobe.errors import ConfigError, LabError, LabNotRunning
from casprobe.lab.ops import LabOperations

__all__ = ["LabClient", "build_control_app"]


def build_control_app(
    ops: LabOperations,
    *,
    lb_status: Callable[[], dict[str, Any]],
    ready: Callable[[], bool],
    shutdown: asyncio.Event,
) -> Starlette:
    """The control application served by the lab process."""

    async def guarded(action: Awaitable[dict[str, Any]]) -> JSONResponse:
        try:
            return JSONResponse(await action)
        except ConfigError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except LabError as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)

    async def status(request: Request) -> JSONResponse:
        body = ops.status()
        body["haproxy"] = lb_status()
        body["ready"] = ready()
        return JSONResponse(body)

    async def events(request: Request) -> JSONResponse:
        try:
            since = int(request.query_params.get("since", "0"))
        except ValueError:
            return JSONResponse({"error": "since must be an integer"}, status_code=400)
        return JSONResponse([e.to_json() for e in ops.world.events.since(since)])

    async def maintenance(request: Request) -> JSONResponse:
        server, action = request.path_params["server"], request.path_params["action"]
        if action == "start":
            return await guarded(ops.maintenance_start(server))
        if action == "stop":
            return await guarded(ops.maintenance_stop(server))
        return JSONResponse({"error": f"unknown maintenance action {action!r}"}, status_code=400)

    async def power(request: Request) -> JSONResponse:
        server, action = request.path_params["server"], request.path_params["action"]
        if action == "off":
            return await guarded(ops.power_off(server, request.query_params.get("mode", "refuse")))
        if action == "on":
            return await guarded(ops.power_on(server))
        return JSONResponse({"error": f"unknown power action {action!r}"}, status_code=400)

    async def switchover(request: Request) -> JSONResponse:
        target = request.query_params.get("to")
        if not target:
            return JSONResponse({"error": "switchover needs ?to=SERVER"}, status_code=400)
        return await guarded(ops.switchover(request.path_params["db"], target))

    async def restart_lb(request: Request) -> JSONResponse:
        return await guarded(ops.restart_lb())

    async def stop(request: Request) -> JSONResponse:
        shutdown.set()
        return JSONResponse({"stopping": True})

    return Starlette(
        routes=[
            Route("/status", status),
            Route("/events", events),
            Route("/maintenance/{server}/{action}", maintenance, methods=["POST"]),
            Route("/power/{server}/{action}", power, methods=["POST"]),
            Route("/switchover/{db}", switchover, methods=["POST"]),
            Route("/haproxy/restart", restart_lb, methods=["POST"]),
            Route("/shutdown", stop, methods=["POST"]),
        ]
    )


class LabClient:
    """Talks to a running lab through its control socket."""

    def __init__(self, folder: Path, timeout: float = 120.0) -> None:
        self.folder = folder
        self.socket = folder / "control.sock"
        self._client = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://lab", timeout=timeout
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> LabClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **params: str | int) -> Any:
        if not self.socket.exists():
            raise LabNotRunning(f"no lab is running in {self.folder} (start one with 'casprobe lab up')")
        try:
            response = self._client.request(method, path, params=params)
        except httpx.TransportError as exc:
            raise LabNotRunning(f"the lab in {self.folder} does not answer ({exc.__class__.__name__})") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise LabError(f"the lab answered {response.status_code} with something that is not JSON") from exc
        if response.status_code == 400:
            raise ConfigError(str(body.get("error", body)))
        if response.status_code >= 400:
            raise LabError(str(body.get("error", body)))
        return body

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/status")
        return result

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/events", since=since)
        return result

    def maintenance(self, server: str, action: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/maintenance/{server}/{action}")
        return result

    def power(self, server: str, action: str, mode: str = "refuse") -> dict[str, Any]:
        params = {"mode": mode} if action == "off" else {}
        result: dict[str, Any] = self._call("POST", f"/power/{server}/{action}", **params)
        return result

    def switchover(self, db: str, to: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/switchover/{db}", to=to)
        return result

    def restart_lb(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/haproxy/restart")
        return result

    def shutdown(self) -> None:
        self._call("POST", "/shutdown")
