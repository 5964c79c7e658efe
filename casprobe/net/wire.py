"""A lean HTTP/1.1 client over one keep-alive TLS connection, with :class:`ProbeClient`'s ``request`` interface.

For load generation (``locustfiles/``), where the cost per request is the measure: one simulated Outlook is one
TCP connection, as NTLM wants (it authenticates a connection), and every request on it goes through
:meth:`WireClient.request`, which returns the same :class:`~casprobe.net.transport.Exchange` as the probes' client,
so :class:`~casprobe.probes.mapisession.MapiSession` and the codecs run unchanged over either. It uses the plain
``socket`` and ``ssl`` modules only, so under gevent's monkey-patching (Locust) it is cooperative without importing
gevent.

What it does (RFC 9112):

- request: ``Host`` (with the port when not 443), ``Content-Length``, ``User-Agent``; never ``Expect``;
- response: status line and header block within :data:`MAX_HEADER_BYTES` and :data:`MAX_HEADERS` lines; 1xx
  answers skipped; body by ``Transfer-Encoding: chunked`` (sizes, extensions and trailers bounded), by
  ``Content-Length``, or to the end of the connection; none for HEAD, 204 and 304; gzip/deflate undone within
  the body limit; anything else is :class:`~casprobe.net.transport.MalformedHttp` (class ``protocol``);
- keep-alive unless either side says ``Connection: close``; a request that finds its reused connection closed
  before any byte of the answer is sent again once on a new connection, as WinHTTP does;
- deadlines: every socket operation gets ``min(per-operation timeout, time left)``, and the deadline is checked
  between reads, so a server trickling bytes cannot hold a request past it (no watchdog thread);
- authentication: ``auth`` is any of casprobe's ``httpx.Auth`` flows (NTLM/Negotiate with channel binding from this
  connection's certificate, Basic, Bearer), driven with ``httpx.Request``/``Response`` objects only while a flow
  runs. A connection that NTLM or Negotiate authenticated then carries requests without ``Authorization`` (as
  IIS expects) until a 401 starts a new flow; Basic and Bearer headers are repeated on each request.

Failures raise the exceptions :func:`~casprobe.net.transport.classify` maps (``OSError`` family, ``ssl`` errors,
DnsFailure, DeadlineExceeded, BodyTooLarge, MalformedHttp); the connection is then closed.
"""

from __future__ import annotations

import contextlib
import math
import socket
import ssl
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from casprobe.model import PhaseTimings, Target, TlsFacts
from casprobe.net.resolve import Resolved, Resolver
from casprobe.net.tls import facts_from_ssl_object, make_ssl_context
from casprobe.net.transport import BodyTooLarge, DeadlineExceeded, Exchange, MalformedHttp, TransportOptions

__all__ = ["MAX_HEADERS", "MAX_HEADER_BYTES", "WireClient"]

MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 200
_MAX_CHUNK_LINE = 4096
_HEXDIG = frozenset(b"0123456789abcdefABCDEF")
_READ = 65536
_NO_BODY_STATUS = (204, 304)
_CONNECTION_SCHEMES = ("ntlm", "negotiate")


class _Stream:
    """What casprobe's auth flows ask a response for (``network_stream.get_extra_info``): this connection's TLS."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._sock = sock

    def get_extra_info(self, info: str) -> Any:
        return self._sock if info == "ssl_object" else self._sock if info == "socket" else None


class _Conn:
    """One TLS connection and its unread bytes."""

    def __init__(self, sock: ssl.SSLSocket, address: str) -> None:
        self.sock = sock
        self.address = address
        self.buffer = bytearray()
        self.stream = _Stream(sock)
        self.used = False
        self.reusable = True  # False once an answer said ``Connection: close`` (RFC 9112 §9.6: send no more)
        self.authenticated: object | None = None  # the auth flow that authenticated this connection

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class _Clock:
    """One request's limits: per-operation timeout and the deadline (monotonic)."""

    def __init__(self, op_timeout: float, until: float) -> None:
        self.op_timeout = op_timeout
        self.until = until

    def arm(self, sock: socket.socket) -> None:
        left = self.until - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the deadline passed before the answer was complete")
        sock.settimeout(min(self.op_timeout, left))


class _Answer:
    """A response as read off the wire."""

    __slots__ = ("body", "first_byte", "headers", "keep_alive", "status")

    def __init__(
        self, status: int, headers: list[tuple[str, str]], body: bytes, keep_alive: bool, first: float
    ) -> None:
        self.status, self.headers, self.body, self.keep_alive, self.first_byte = (
            status,
            headers,
            body,
            keep_alive,
            first,
        )


class WireClient:
    """One keep-alive HTTPS connection to one target (reopened when it closes), bounded by ``deadline``."""

    def __init__(
        self, target: Target, *, resolver: Resolver, options: TransportOptions, deadline: float = math.inf
    ) -> None:
        self.target = target
        self.options = options
        self.deadline = deadline
        self.resolver = resolver
        self.address: str | None = None
        self.tls: TlsFacts | None = None
        self._ssl = make_ssl_context(options.tls)
        self._conn: _Conn | None = None
        self._host = target.name if target.port == 443 else f"{target.name}:{target.port}"
        self._origin = f"https://{self._host}"
        self._preemptive: tuple[object, str] | None = None  # (auth flow, Authorization value) for Basic/Bearer
        self._setup: dict[str, float | None] = {}

    # ------------------------------------------------------------------------------------------------ public

    def url(self, path: str) -> str:
        return self._origin + path

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        """Send one request (authenticating if needed) and read its whole answer (see the module docstring)."""
        until = self.deadline if deadline is None else min(deadline, self.deadline)
        clock = _Clock(self.options.timeout_s if timeout_s is None else timeout_s, until)
        limit = self.options.max_body if max_body is None else max_body
        started = time.perf_counter()
        self._setup = {}
        fields = dict(headers or {})
        body = content or b""
        legs: tuple[float, ...] = ()
        try:
            conn = self._conn
            if auth is None or (conn is not None and conn.authenticated is auth):
                answer, sent_at = self._exchange(method, path, fields, body, clock, limit, on_chunk)
            elif self._preemptive is not None and self._preemptive[0] is auth:
                fields["Authorization"] = self._preemptive[1]
                answer, sent_at = self._exchange(method, path, fields, body, clock, limit, on_chunk)
            else:
                answer, sent_at, legs = self._flow(auth, method, path, fields, body, clock, limit, on_chunk)
                auth = None  # the flow has run; a 401 at its end is the answer
            if answer.status == 401 and auth is not None:
                answer, sent_at, legs = self._flow(auth, method, path, fields, body, clock, limit, on_chunk)
        except BaseException:
            self.close()
            raise
        if not answer.keep_alive:
            self.close()
        response_headers = httpx.Headers(answer.headers)
        return Exchange(
            url=self.url(path),
            status=answer.status,
            headers=response_headers,
            body=answer.body,
            timings=PhaseTimings(
                resolve=self._setup.get("resolve"),
                connect=self._setup.get("connect"),
                tls=self._setup.get("tls"),
                auth=legs,
                first_byte=answer.first_byte - sent_at,
                total=time.perf_counter() - started,
            ),
            address=self.address,
            tls=self.tls,
            fe_server=response_headers.get("x-feserver"),
            be_server=response_headers.get("x-calculatedbetarget") or response_headers.get("x-beserver"),
        )

    # ------------------------------------------------------------------------------------------------ auth

    def _flow(
        self,
        auth: httpx.Auth,
        method: str,
        path: str,
        fields: dict[str, str],
        body: bytes,
        clock: _Clock,
        limit: int,
        on_chunk: Callable[[bytes], None] | None,
    ) -> tuple[_Answer, float, tuple[float, ...]]:
        """Run ``auth``'s flow on this connection; the answer that ended it, when it was sent, each leg's time."""
        fields.pop("Authorization", None)
        request = httpx.Request(method, self.url(path), headers=fields, content=body)
        flow = auth.sync_auth_flow(request)
        legs: list[float] = []
        try:
            leg = next(flow)
            while True:
                leg_fields = {k: v for k, v in leg.headers.items() if k.lower() not in ("host", "content-length")}
                answer, sent_at = self._exchange(method, path, leg_fields, body, clock, limit, on_chunk)
                legs.append(time.perf_counter() - sent_at)
                conn = self._conn
                response = httpx.Response(
                    answer.status,
                    headers=answer.headers,
                    content=answer.body,
                    request=leg,
                    extensions={"network_stream": conn.stream} if conn is not None else {},
                )
                try:
                    leg = flow.send(response)
                except StopIteration:
                    break
        finally:
            flow.close()
        if answer.status != 401:
            scheme = leg.headers.get("authorization", "").partition(" ")[0].lower()
            if scheme in _CONNECTION_SCHEMES and self._conn is not None:
                self._conn.authenticated = auth
                self._preemptive = None
            elif scheme:
                self._preemptive = (auth, leg.headers["authorization"])
        return answer, sent_at, tuple(legs) if len(legs) > 1 else ()

    # ------------------------------------------------------------------------------------------------ wire

    def _exchange(
        self,
        method: str,
        path: str,
        fields: Mapping[str, str],
        body: bytes,
        clock: _Clock,
        limit: int,
        on_chunk: Callable[[bytes], None] | None,
    ) -> tuple[_Answer, float]:
        head = [f"{method} {path} HTTP/1.1", f"Host: {self._host}", f"User-Agent: {self.options.user_agent}"]
        head += [f"{name}: {value}" for name, value in fields.items() if name.lower() != "user-agent"]
        if body or method not in ("GET", "HEAD"):
            head.append(f"Content-Length: {len(body)}")
        payload = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        for attempt in (1, 2):
            conn = self._connection(clock)
            reused = conn.used
            conn.used = True
            sent_at = time.perf_counter()
            try:
                clock.arm(conn.sock)
                conn.sock.sendall(payload)
                first = self._read_more(conn, clock, eof_ok=reused and attempt == 1)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
                # TLS reports a write to a connection the server closed as SSLEOFError (a body larger than the
                # socket buffers meets the server's reset while it is being written)
                if not (reused and attempt == 1):
                    raise
                first = None
            if first is None:  # the server had closed the idle connection: send again on a new one
                self.close()
                continue
            answer = self._read_answer(conn, clock, limit, method, on_chunk, first)
            if not answer.keep_alive:  # an authentication leg's next request goes on a new connection
                conn.reusable = False
            return answer, sent_at
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self, clock: _Clock) -> _Conn:
        if self._conn is not None:
            if self._conn.reusable:
                return self._conn
            self.close()
        target = self.target
        if target.address is not None:  # pinned by the target itself, as ProbeClient does
            resolved, port = Resolved(target.address, 0.0, True), target.port
        else:
            resolved = self.resolver.resolve(target.name, target.port, max(0.001, clock.until - time.monotonic()))
            pin = self.resolver.pin_for(target.name)
            port = pin.port if pin is not None and pin.port else target.port
        self.address = resolved.address
        self._setup["resolve"] = resolved.duration
        if clock.until - time.monotonic() <= 0:
            raise DeadlineExceeded("the deadline passed before the connection was made")
        started = time.perf_counter()
        left = min(self.options.timeout_s, clock.until - time.monotonic())
        raw = socket.create_connection((resolved.address, port), timeout=max(left, 0.001))
        self._setup["connect"] = time.perf_counter() - started
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            clock.arm(raw)
            started = time.perf_counter()
            sock = self._ssl.wrap_socket(raw, server_hostname=target.name)
        except BaseException:
            raw.close()
            raise
        self._setup["tls"] = time.perf_counter() - started
        if self.tls is None:
            self.tls = facts_from_ssl_object(sock, target.name, self.options.tls)
        self._conn = _Conn(sock, resolved.address)
        return self._conn

    def _read_more(self, conn: _Conn, clock: _Clock, *, eof_ok: bool = False) -> float | None:
        """Append what the socket has to the buffer; the time it came, or None at a tolerated end of stream."""
        clock.arm(conn.sock)
        try:
            data = conn.sock.recv(_READ)
        except TimeoutError:
            if time.monotonic() >= clock.until - 0.001:
                raise DeadlineExceeded("the deadline passed before the answer was complete") from None
            raise
        except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
            if eof_ok:
                return None
            raise ConnectionResetError(f"the server closed the connection ({exc.__class__.__name__})") from None
        if not data:
            if eof_ok:
                return None
            raise ConnectionResetError("the server closed the connection before the answer was complete")
        conn.buffer += data
        return time.perf_counter()

    def _read_answer(
        self,
        conn: _Conn,
        clock: _Clock,
        limit: int,
        method: str,
        on_chunk: Callable[[bytes], None] | None,
        first: float,
    ) -> _Answer:
        while True:
            status, headers = self._read_head(conn, clock)
            if not 100 <= status < 200:
                break
            if status == 101:
                raise MalformedHttp("the server switched protocols unasked (101)")
        values: dict[str, str] = {}
        for name, value in headers:
            key = name.lower()
            values[key] = f"{values[key]}, {value}" if key in values else value
        close = "close" in values.get("connection", "").lower()
        # a 401's body is part of an authentication leg: only the answer that ends the exchange is streamed out
        sink = on_chunk if status != 401 else None
        if method == "HEAD" or status in _NO_BODY_STATUS:
            raw = b""
        elif "transfer-encoding" in values:
            if values["transfer-encoding"].strip().lower() != "chunked":
                raise MalformedHttp(f"unsupported Transfer-Encoding {values['transfer-encoding'][:40]!r}")
            raw = self._read_chunked(conn, clock, limit, sink)
            close = close or "content-length" in values  # RFC 9112 §6.3 (3): ambiguous framing, do not reuse
        elif "content-length" in values:
            text = values["content-length"].strip()
            if not text.isdigit() or len(text) > 18:
                raise MalformedHttp(f"bad Content-Length {text[:40]!r}")
            size = int(text)
            if size > limit:
                raise BodyTooLarge(limit)
            raw = self._read_exact(conn, clock, size, sink)
        else:
            raw = self._read_to_close(conn, clock, limit, sink)
            close = True
        return _Answer(status, headers, _decoded(values.get("content-encoding", ""), raw, limit), not close, first)

    def _read_head(self, conn: _Conn, clock: _Clock) -> tuple[int, list[tuple[str, str]]]:
        while (end := conn.buffer.find(b"\r\n\r\n")) < 0:
            if len(conn.buffer) > MAX_HEADER_BYTES:
                raise MalformedHttp(f"response header block larger than {MAX_HEADER_BYTES} bytes")
            self._read_more(conn, clock)
        if end > MAX_HEADER_BYTES:
            raise MalformedHttp(f"response header block larger than {MAX_HEADER_BYTES} bytes")
        block = bytes(conn.buffer[:end])
        del conn.buffer[: end + 4]
        lines = block.split(b"\r\n")
        if len(lines) > MAX_HEADERS + 1:
            raise MalformedHttp(f"more than {MAX_HEADERS} response header lines")
        version, _, rest = lines[0].partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit() or rest[3:4] not in (b"", b" "):
            raise MalformedHttp(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip() or b" " in name:
                raise MalformedHttp(f"malformed header line {line[:60]!r}")
            headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        return int(code), headers

    def _read_exact(self, conn: _Conn, clock: _Clock, size: int, sink: Callable[[bytes], None] | None) -> bytes:
        parts: list[bytes] = []
        left = size
        while left:
            if not conn.buffer:
                self._read_more(conn, clock)
            piece = bytes(conn.buffer[:left])
            del conn.buffer[:left]
            left -= len(piece)
            parts.append(piece)
            if sink is not None:
                sink(piece)
        return b"".join(parts)

    def _read_line(self, conn: _Conn, clock: _Clock) -> bytes:
        while (end := conn.buffer.find(b"\r\n")) < 0:
            if len(conn.buffer) > _MAX_CHUNK_LINE:
                raise MalformedHttp("chunk size line too long")
            self._read_more(conn, clock)
        if end > _MAX_CHUNK_LINE:
            raise MalformedHttp("chunk size line too long")
        line = bytes(conn.buffer[:end])
        del conn.buffer[: end + 2]
        return line

    def _read_chunked(self, conn: _Conn, clock: _Clock, limit: int, sink: Callable[[bytes], None] | None) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_text = self._read_line(conn, clock).partition(b";")[0].strip(b" \t")
            # chunk-size = 1*HEXDIG (§7.1): int() alone would also take "0x5", "+5", "1_0" or " 5"
            if not size_text or len(size_text) > 16 or not _HEXDIG.issuperset(size_text):
                raise MalformedHttp(f"bad chunk size {size_text[:20]!r}")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > limit:
                raise BodyTooLarge(limit)
            parts.append(self._read_exact(conn, clock, size, sink))
            if self._read_line(conn, clock):
                raise MalformedHttp("chunk not followed by CRLF")
        trailers = 0
        while self._read_line(conn, clock):  # trailer fields, ignored but bounded
            trailers += 1
            if trailers > MAX_HEADERS:
                raise MalformedHttp(f"more than {MAX_HEADERS} trailer lines")
        return b"".join(parts)

    def _read_to_close(self, conn: _Conn, clock: _Clock, limit: int, sink: Callable[[bytes], None] | None) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            if conn.buffer:
                piece = bytes(conn.buffer)
                conn.buffer.clear()
                total += len(piece)
                if total > limit:
                    raise BodyTooLarge(limit)
                parts.append(piece)
                if sink is not None:
                    sink(piece)
            if self._read_more(conn, clock, eof_ok=True) is None:
                return b"".join(parts)


def _decoded(encoding: str, raw: bytes, limit: int) -> bytes:
    """Undo gzip/deflate within ``limit``; identity as is; anything else is malformed (we never asked for it)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding)
    if wbits is None:
        raise MalformedHttp(f"unsupported Content-Encoding {encoding[:40]!r}")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error:
        raise MalformedHttp(f"bad {encoding} body") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge(limit)
    return out
