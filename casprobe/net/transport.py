"""The HTTP client of one probe: pinned resolution, TLS facts, phase timings, one exception map, a deadline.

Every probe gets its own :class:`ProbeClient` (its own connections), so that each measures a real connect,
TLS handshake and authentication; connection reuse within a probe is what NTLM needs (it authenticates a TCP
connection) and what a long-lived MAPI session does.

- Resolution: our :class:`~casprobe.net.resolve.Resolver`, timed, plugged in as an httpcore network backend;
  URL, Host and SNI keep the name.
- Timings: httpcore's ``trace`` extension (``connect_tcp``, ``start_tls``, request sent, response headers).
- Failures: :func:`classify` is the one place where library exceptions become an :class:`ErrorClass`. ::

    DnsFailure                                  → dns
    DeadlineExceeded, httpx.TimeoutException    → timeout
    ssl.SSLCertVerificationError, ssl.SSLError  → tls
    httpx.ConnectError (refused, unreachable)   → connect
    httpx.ReadError / WriteError (reset)        → connect
    httpx.RemoteProtocolError, MalformedHttp, UnsupportedProtocol, TooManyRedirects → protocol
    BodyTooLarge                                → content
    anything else                               → internal (a bug)
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from casprobe import __version__
from casprobe.model import ErrorClass, PhaseTimings, Target, TlsFacts
from casprobe.net.connections import PinnedBackend, ProbeTransport
from casprobe.net.resolve import DnsFailure, Resolver
from casprobe.net.tls import TlsOptions, facts_from_ssl_object, make_ssl_context

__all__ = [
    "BodyTooLarge",
    "DeadlineExceeded",
    "Exchange",
    "HttpClient",
    "MalformedHttp",
    "ProbeClient",
    "TransportOptions",
    "classify",
    "inflate",
]

USER_AGENT = f"casprobe/{__version__}"


class DeadlineExceeded(TimeoutError):
    """The probe's own deadline passed."""


class BodyTooLarge(Exception):
    """A response body passed the probe's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response body larger than {limit} bytes")


class MalformedHttp(Exception):
    """The server's bytes are not HTTP/1.1 as RFC 9112 has it (raised by :mod:`casprobe.net.wire`)."""


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """Attributes: tls: verification settings; timeout_s: cap of each network operation (connect, read);
    max_body: the largest response body read; user_agent."""

    tls: TlsOptions = field(default_factory=TlsOptions)
    timeout_s: float = 10.0
    max_body: int = 8 * 1024 * 1024
    user_agent: str = USER_AGENT


class _Trace:
    """Collects httpcore trace events of one exchange (all auth legs) as perf_counter marks."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, float]] = []

    def __call__(self, name: str, info: Mapping[str, Any]) -> None:
        self.marks.append((name, time.perf_counter()))

    def span(self, start: str, end: str, last: bool = False) -> float | None:
        starts = [t for n, t in self.marks if n == start]
        ends = [t for n, t in self.marks if n == end]
        if not starts or not ends:
            return None
        return (ends[-1] - starts[-1]) if last else (ends[0] - starts[0])


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request and its answer (after any authentication legs).

    Attributes: status, headers, body (read whole, within the limit); timings; address; tls (facts of the
    connection that answered); fe_server / be_server from Exchange's headers; url that was asked.
    """

    url: str
    status: int
    headers: httpx.Headers
    body: bytes
    timings: PhaseTimings
    address: str | None
    tls: TlsFacts | None
    fe_server: str | None
    be_server: str | None


class HttpClient(Protocol):
    """What a protocol session needs of an HTTP client: :class:`ProbeClient` (probes) and
    :class:`~casprobe.net.wire.WireClient` (load) both are one."""

    @property
    def options(self) -> TransportOptions: ...

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        max_body: int | None = None,
        auth: httpx.Auth | None = None,
        timeout_s: float | None = None,
        deadline: float | None = None,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> Exchange: ...

    def close(self) -> None: ...


class ProbeClient:
    """The HTTP client of one probe of one target, bounded by the probe's deadline."""

    def __init__(
        self,
        target: Target,
        *,
        resolver: Resolver,
        options: TransportOptions,
        deadline: float,
        auth: httpx.Auth | None = None,
    ) -> None:
        self.target = target
        self.options = options
        self.deadline = deadline
        pins = [] if target.address is None else [(target.name, target.address)]
        self.resolver = resolver if not pins else _with_pin(resolver, target)
        self.address: str | None = None
        self._resolve_time: float | None = None
        self.tls: TlsFacts | None = None
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._client = httpx.Client(
            transport=ProbeTransport(PinnedBackend(self.resolver, self), make_ssl_context(options.tls)),
            auth=auth,
            trust_env=False,
            follow_redirects=False,
            headers={"User-Agent": options.user_agent},
        )

    @property
    def connect_timeout(self) -> float:
        return self.options.timeout_s

    def note_resolved(self, address: str, duration: float) -> None:
        self.address = address
        self._resolve_time = duration

    def note_socket(self, sock: object) -> None:
        if isinstance(sock, socket.socket):
            with self._lock:
                self._sockets = [s for s in self._sockets if s.fileno() != -1]
                self._sockets.append(sock)

    def _cut(self) -> None:
        """The watchdog: shut every socket of this client down, so that a blocked read or connect ends now."""
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _timeout(self, deadline: float | None = None, timeout_s: float | None = None) -> httpx.Timeout:
        remaining = min(self.deadline, deadline if deadline is not None else self.deadline) - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded("the probe's deadline passed")
        cap = min(remaining, self.options.timeout_s if timeout_s is None else timeout_s)
        return httpx.Timeout(cap, pool=cap)

    def url(self, path: str) -> str:
        return path if path.startswith(("https://", "http://")) else self.target.origin() + path

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        max_body: int | None = None,
        auth: httpx.Auth | None = None,
        timeout_s: float | None = None,
        deadline: float | None = None,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> Exchange:
        """Send one request (authenticating if needed) and read the whole answer within limits and deadline.

        For long-held answers (a MAPI/HTTP NotificationWait): ``timeout_s`` replaces the per-operation cap for this
        request, ``deadline`` (monotonic) ends it before the probe's own deadline (DeadlineExceeded either way), and
        ``on_chunk`` sees each piece of the body as it arrives (raw: before any Content-Encoding is undone).
        """
        url = self.url(path)
        until = self.deadline if deadline is None else min(deadline, self.deadline)
        trace = _Trace()
        limit = self.options.max_body if max_body is None else max_body
        self._resolve_time = None
        started = time.perf_counter()
        kwargs: dict[str, Any] = {}
        if auth is not None:
            kwargs["auth"] = auth
        # httpx's timeouts bound each read, not the request: a watchdog enforces the deadline itself, so that a
        # body (or headers) trickling in slower than the read timeout still ends on time
        watchdog = threading.Timer(max(0.0, until - time.monotonic()), self._cut)
        watchdog.daemon = True
        watchdog.start()
        try:
            with self._client.stream(
                method,
                url,
                headers=headers,
                content=content,
                timeout=self._timeout(until, timeout_s),
                extensions={"trace": trace},
                **kwargs,
            ) as response:
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_raw():
                    size += len(chunk)
                    if size > limit:
                        raise BodyTooLarge(limit)
                    chunks.append(chunk)
                    if on_chunk is not None:
                        on_chunk(chunk)
                    if time.monotonic() > until:
                        raise DeadlineExceeded("the deadline passed while the body was still arriving")
                body = _decode(response, b"".join(chunks), limit)
                if self.tls is None:
                    self.tls = _tls_facts(response, self.target.name, self.options.tls)
        except (httpx.HTTPError, OSError) as exc:
            if time.monotonic() >= until - 0.001:
                raise DeadlineExceeded("the deadline passed before the answer was complete") from exc
            raise
        finally:
            watchdog.cancel()
        total = time.perf_counter() - started
        timings = PhaseTimings(
            resolve=self._resolve_time,
            connect=trace.span("connection.connect_tcp.started", "connection.connect_tcp.complete"),
            tls=trace.span("connection.start_tls.started", "connection.start_tls.complete"),
            auth=_legs(trace),
            first_byte=trace.span(
                "http11.send_request_body.complete", "http11.receive_response_headers.complete", last=True
            ),
            total=total,
        )
        return Exchange(
            url=url,
            status=response.status_code,
            headers=response.headers,
            body=body,
            timings=timings,
            address=self.address,
            tls=self.tls,
            fe_server=response.headers.get("x-feserver"),
            be_server=response.headers.get("x-calculatedbetarget") or response.headers.get("x-beserver"),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ProbeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _with_pin(resolver: Resolver, target: Target) -> Resolver:
    from casprobe.net.resolve import Pin

    assert target.address is not None
    return _Chained(Pin(target.name, target.address), resolver)


class _Chained(Resolver):
    def __init__(self, pin: Any, fallback: Resolver) -> None:
        super().__init__([pin])
        self._fallback = fallback

    def pin_for(self, name: str) -> Any:
        return super().pin_for(name) or self._fallback.pin_for(name)

    def resolve(self, name: str, port: int, timeout: float) -> Any:
        if super().pin_for(name) is not None:
            return super().resolve(name, port, timeout)
        return self._fallback.resolve(name, port, timeout)


def inflate(encoding: str, raw: bytes, limit: int) -> tuple[bytes, bool] | None:
    """Undo a gzip / deflate Content-Encoding, never inflating past ``limit`` (a compression bomb is a
    BodyTooLarge, not an exhausted memory): the bytes and whether the compressed stream ended; None for any other
    encoding (identity included). A body that is not what its encoding says is :class:`MalformedHttp`."""
    import zlib

    encoding = encoding.strip().lower()
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding)
    if wbits is None:
        return None
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error:
        raise MalformedHttp(f"bad {encoding} body") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge(limit)
    return out, inflater.eof


def _decode(response: httpx.Response, raw: bytes, limit: int) -> bytes:
    """The body with gzip/deflate undone (:func:`inflate`); raw bytes for any other encoding."""
    inflated = inflate(response.headers.get("content-encoding", ""), raw, limit)
    return raw if inflated is None else inflated[0]


def _legs(trace: _Trace) -> tuple[float, ...]:
    """Duration of each request/response round trip of the exchange (one per auth leg, plus the final one)."""
    sends = [t for n, t in trace.marks if n == "http11.send_request_headers.started"]
    dones = [t for n, t in trace.marks if n == "http11.receive_response_headers.complete"]
    if len(sends) < 2:
        return ()
    return tuple(done - send for send, done in zip(sends, dones, strict=False))


def _tls_facts(response: httpx.Response, host: str, options: TlsOptions) -> TlsFacts | None:
    stream = response.extensions.get("network_stream")
    if stream is None:
        return None
    ssl_object = stream.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    return facts_from_ssl_object(ssl_object, host, options)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def classify(exc: BaseException) -> tuple[ErrorClass, str]:
    """The error class and a one-line description of a failure of a request (see the module docstring)."""
    chain = list(_chain(exc))
    for item in chain:
        if isinstance(item, DnsFailure):
            return ErrorClass.DNS, str(item)
    for item in chain:
        if isinstance(item, ssl.SSLCertVerificationError):
            return ErrorClass.TLS, f"certificate not trusted: {item.verify_message or item.reason}"
    for item in chain:
        if isinstance(item, DeadlineExceeded):
            return ErrorClass.TIMEOUT, str(item)
        if isinstance(item, httpx.ConnectTimeout):
            return ErrorClass.TIMEOUT, "no answer to the TCP/TLS connection attempt (connect timeout)"
        if isinstance(item, httpx.TimeoutException | TimeoutError | socket.timeout):
            return ErrorClass.TIMEOUT, "the server stopped answering (read timeout)"
    for item in chain:
        if isinstance(item, ssl.SSLError):
            return ErrorClass.TLS, f"TLS handshake failed: {item.reason or item}"
    for item in chain:
        if isinstance(item, ConnectionRefusedError):
            return ErrorClass.CONNECT, "connection refused"
    for item in chain:
        if isinstance(item, BodyTooLarge):
            return ErrorClass.CONTENT, str(item)
        if isinstance(item, httpx.ConnectError):
            return ErrorClass.CONNECT, f"cannot connect: {item}"
        if isinstance(item, httpx.ReadError | httpx.WriteError | ConnectionResetError):
            return ErrorClass.CONNECT, f"connection reset or closed by the server ({item})"
        if isinstance(item, httpx.TooManyRedirects):
            return ErrorClass.PROTOCOL, "too many redirects"
        if isinstance(item, httpx.UnsupportedProtocol):
            return ErrorClass.PROTOCOL, f"unsupported URL scheme: {item}"
        if isinstance(item, httpx.RemoteProtocolError | httpx.LocalProtocolError | httpx.DecodingError | MalformedHttp):
            return ErrorClass.PROTOCOL, f"malformed HTTP from the server: {item}"
        if isinstance(item, httpx.HTTPError):
            return ErrorClass.CONNECT, str(item)
    return ErrorClass.INTERNAL, f"{exc.__class__.__name__}: {exc}"
