"""One simulated server's listening socket and its power: on, off with resets, or off into a black hole.

- ``refuse``: the port is closed and every open connection is reset, as when a host is up but its service is
  stopped: clients get "connection refused" at once.
- ``blackhole``: as when the machine loses power: nothing answers any more. New connections time out in connect
  (a listening socket that never accepts, its one-entry backlog filled so the kernel drops further SYNs) and open
  connections stay open but silent, so clients time out reading. Power on resets those old connections.

Uses ``uvicorn.Server`` piecewise (``startup`` / ``main_loop`` / ``shutdown``) rather than ``serve()``, which would
install process-wide signal handlers for each of several servers in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from casprobe.errors import LabError
from casprobe.lab.servers import Gate

__all__ = ["ConnectionHook", "ServerHost", "tracking_protocol"]

#: Called with a TCP connection's key ``((peer_ip, peer_port), (local_ip, local_port))``, the same key the auth
#: middleware derives from the ASGI scope, when that connection opens and when it closes.
ConnectionHook = Callable[[Hashable], None]


def tracking_protocol(base: type[Any], hook: ConnectionHook | None) -> type[Any]:
    """Subclass uvicorn's HTTP protocol so the end of a TCP connection reaches ``hook`` (ASGI never says).

    The hook also runs when a connection *opens*: a new connection on a 4-tuple means whatever was recorded for the
    previous one is stale, even if its close was missed. Without this a record could outlive its connection and a
    later connection that happens to reuse the source port would inherit its NTLM identity.

    It also cancels uvicorn's keep-alive timer when the connection is lost *with an error* (a reset: HAProxy drops
    its idle server connections that way). uvicorn 0.54 cancels it only on a clean close, so the timer kept every
    reset connection, with asyncio's 256 KiB TLS buffer, alive for ``timeout_keep_alive`` (120 s here): through
    HAProxy the lab grew by about 300 KB per connection, a gigabyte within minutes of a load run.
    """

    class TrackingProtocol(base):  # type: ignore[misc]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            if hook is not None:
                _notify(hook, self)

        def connection_lost(self, exc: Exception | None) -> None:
            if hook is not None:
                _notify(hook, self)
            super().connection_lost(exc)
            unset = getattr(self, "_unset_keepalive_if_required", None)
            if callable(unset):
                unset()

    return TrackingProtocol


def _notify(hook: ConnectionHook, protocol: Any) -> None:
    client, server = getattr(protocol, "client", None), getattr(protocol, "server", None)
    if client:
        try:
            hook((tuple(client), tuple(server) if server else None))
        except Exception:  # a bookkeeping bug must never take a connection down
            log.exception("connection hook failed")


log = logging.getLogger(__name__)


def _listen(address: str, port: int, backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it: without it every response waits ~40 ms for the client's delayed ACK
    # (and [MS-OXCMAPIHTTP] 3.2.5.2 wants PROCESSING/PENDING flushed at once)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        hint = " (ports below 1024 need root; try --port 8443)" if exc.errno == 13 else ""
        raise LabError(f"cannot listen on {address}:{port}: {exc.strerror}{hint}") from exc
    sock.listen(backlog)
    return sock


class ServerHost:
    """Runs one server's ASGI app on its own address and switches its power."""

    def __init__(
        self,
        name: str,
        address: str,
        port: int,
        app: ASGIApp,
        cert: Path,
        key: Path,
        gate: Gate,
        on_connection: ConnectionHook | None = None,
    ) -> None:
        self.name, self.address, self.port = name, address, port
        self._on_connection = on_connection
        self._app, self._cert, self._key, self._gate = app, cert, key, gate
        self._server: uvicorn.Server | None = None
        self._sock: socket.socket | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._hole: list[socket.socket] = []
        self.power = "on"

    async def start(self) -> None:
        config = uvicorn.Config(
            self._app,
            ssl_certfile=str(self._cert),
            ssl_keyfile=str(self._key),
            proxy_headers=False,  # else X-Forwarded-For rewrites scope["client"] and breaks per-connection NTLM
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
            timeout_keep_alive=120,
            server_header=False,
            date_header=True,
            headers=[("Server", "Microsoft-IIS/10.0"), ("X-Powered-By", "ASP.NET")],
        )
        config.load()
        config.http_protocol_class = tracking_protocol(config.http_protocol_class, self._on_connection)
        self._sock = _listen(self.address, self.port, 1024)
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[self._sock])
        self._server = server
        self._loop_task = asyncio.create_task(server.main_loop(), name=f"uvicorn-{self.name}")
        self.power = "on"

    def _abort_connections(self) -> None:
        assert self._server is not None
        for connection in list(self._server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        for task in list(self._server.server_state.tasks):
            task.cancel()

    async def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.should_exit = True
        server.force_exit = True
        if self._loop_task is not None:
            await self._loop_task
        await server.shutdown(sockets=[self._sock] if self._sock else None)
        self._sock = None

    async def stop(self) -> None:
        """Stop for good (lab down)."""
        if self._server is not None:
            self._abort_connections()
        await self._stop_server()
        self._close_hole()
        self._gate.open()

    async def power_off(self, mode: str) -> None:
        if self.power != "on":
            raise LabError(f"{self.name} is already powered off ({self.power})")
        assert self._server is not None
        if mode == "refuse":
            for listener in self._server.servers:
                listener.close()
            self._abort_connections()
            await self._stop_server()
        elif mode == "blackhole":
            self._gate.close()
            for listener in self._server.servers:
                listener.close()
            if self._sock is not None:
                self._sock.close()
            await asyncio.sleep(0)
            self._open_hole()
        else:
            raise LabError(f"unknown power-off mode {mode!r} (refuse or blackhole)")
        self.power = mode

    async def power_on(self) -> None:
        if self.power == "on":
            raise LabError(f"{self.name} is already powered on")
        if self._server is not None:  # black-holed: its old connections die with the "reboot"
            self._abort_connections()
            await self._stop_server()
        self._close_hole()
        self._gate.open()
        await self.start()

    def _open_hole(self) -> None:
        hole = _listen(self.address, self.port, 0)
        self._hole = [hole]
        for _ in range(2):  # fill the accept queue so the kernel drops every further SYN
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError, OSError):
                filler.connect((self.address, self.port))
            self._hole.append(filler)

    def _close_hole(self) -> None:
        for sock in self._hole:
            sock.close()
        self._hole = []
