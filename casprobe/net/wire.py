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

import math
import socket
import ssl
import time
from collections.abc import Callable, Mapping

import httpx

from casprobe.model import PhaseTimings, Target, TlsFacts
from casprobe.net.resolve import Resolved, Resolver
from casprobe.net.tls import facts_from_ssl_object, make_ssl_context
from casprobe.net.transport import DeadlineExceeded, Exchange, TransportOptions
from casprobe.net.wire_read import MAX_HEADER_BYTES, MAX_HEADERS, Answer, Clock, Conn, read_answer, read_more

__all__ = ["MAX_HEADERS", "MAX_HEADER_BYTES", "WireClient"]

_CONNECTION_SCHEMES = ("ntlm", "negotiate")


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
        self._conn: Conn | None = None
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
        clock = Clock(self.options.timeout_s if timeout_s is None else timeout_s, until)
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
                # sent without Authorization, this 401 is the flow's first (anonymous) leg: not sent again
                replay = (answer, sent_at) if "Authorization" not in fields else None
                answer, sent_at, legs = self._flow(auth, method, path, fields, body, clock, limit, on_chunk, replay)
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
        clock: Clock,
        limit: int,
        on_chunk: Callable[[bytes], None] | None,
        replay: tuple[Answer, float] | None = None,
    ) -> tuple[Answer, float, tuple[float, ...]]:
        """Run ``auth``'s flow on this connection; the answer that ended it, when it was sent, each leg's time.

        ``replay``: an anonymous 401 this request already got, and when it was sent; it answers the flow's first
        leg if that leg carries no Authorization either.
        """
        fields.pop("Authorization", None)
        request = httpx.Request(method, self.url(path), headers=fields, content=body)
        flow = auth.sync_auth_flow(request)
        legs: list[float] = []
        try:
            leg = next(flow)
            while True:
                if replay is not None and "authorization" not in leg.headers:
                    answer, sent_at = replay
                else:
                    sent = {k: v for k, v in leg.headers.items() if k.lower() not in ("host", "content-length")}
                    answer, sent_at = self._exchange(method, path, sent, body, clock, limit, on_chunk)
                replay = None
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
        clock: Clock,
        limit: int,
        on_chunk: Callable[[bytes], None] | None,
    ) -> tuple[Answer, float]:
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
                first = read_more(conn, clock, eof_ok=reused and attempt == 1)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
                # TLS reports a write to a connection the server closed as SSLEOFError (a body larger than the
                # socket buffers meets the server's reset while it is being written)
                if not (reused and attempt == 1):
                    raise
                first = None
            if first is None:  # the server had closed the idle connection: send again on a new one
                self.close()
                continue
            answer = read_answer(conn, clock, limit, method, on_chunk, first)
            if not answer.keep_alive:  # an authentication leg's next request goes on a new connection
                conn.reusable = False
            return answer, sent_at
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self, clock: Clock) -> Conn:
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
        self._conn = Conn(sock, resolved.address)
        return self._conn
