"""The httpcore side of a probe's HTTP client: our resolver in front of the sockets, streams whose sockets the
client can cut at its deadline, and httpcore exceptions mapped to httpx's (most specific first, chained).

Only public httpcore/httpx interfaces are used: a custom :class:`httpcore.NetworkBackend` plugged into an
:class:`httpcore.ConnectionPool`, wrapped as an :class:`httpx.BaseTransport`.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import httpcore
import httpx

from casprobe.net.resolve import Resolver

__all__ = ["ClientHooks", "PinnedBackend", "ProbeTransport"]


class ClientHooks(Protocol):
    """What the backend tells the client about each connection it opens."""

    @property
    def connect_timeout(self) -> float: ...

    def note_resolved(self, address: str, duration: float) -> None: ...

    def note_socket(self, sock: object) -> None: ...


_EXC_MAP: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for source, target in _EXC_MAP:  # most specific first
            if isinstance(exc, source):
                raise target(str(exc) or exc.__class__.__name__) from exc
        raise


class PinnedBackend(httpcore.NetworkBackend):
    """httpcore's sync backend with our resolver in front of it."""

    def __init__(self, resolver: Resolver, client: ClientHooks) -> None:
        self._inner = httpcore.SyncBackend()
        self._resolver = resolver
        self._client = client

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        resolved = self._resolver.resolve(host, port, timeout or self._client.connect_timeout)
        pin = self._resolver.pin_for(host)
        self._client.note_resolved(resolved.address, resolved.duration)
        # no Nagle: a request's headers and body go in separate writes, and timings should show the server
        options = [*(socket_options or ()), (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        stream = self._inner.connect_tcp(
            resolved.address,
            pin.port if pin is not None and pin.port else port,
            timeout=timeout,
            local_address=local_address,
            socket_options=options,
        )
        return _NotedStream(stream, self._client)

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
        raise httpcore.ConnectError("unix sockets are not probed")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class _NotedStream(httpcore.NetworkStream):
    """A network stream whose sockets (plain, then TLS: ``wrap_socket`` detaches the first) the client knows,
    so that its deadline watchdog can shut them down."""

    def __init__(self, inner: httpcore.NetworkStream, client: ClientHooks) -> None:
        self._inner = inner
        self._client = client
        client.note_socket(inner.get_extra_info("socket"))

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _NotedStream(self._inner.start_tls(ssl_context, server_hostname, timeout), self._client)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Stream(httpx.SyncByteStream):
    def __init__(self, inner: Iterable[bytes]) -> None:
        self._inner = inner

    def __iter__(self) -> Iterator[bytes]:
        with _mapped():
            yield from self._inner

    def close(self) -> None:
        closer = getattr(self._inner, "close", None)
        if closer is not None:
            closer()


class ProbeTransport(httpx.BaseTransport):
    def __init__(self, backend: PinnedBackend, ssl_context: ssl.SSLContext) -> None:
        self._pool = httpcore.ConnectionPool(ssl_context=ssl_context, network_backend=backend, max_connections=8)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _mapped():
            response = self._pool.handle_request(core)
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Stream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()
