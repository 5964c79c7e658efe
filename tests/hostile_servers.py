"""Scriptable hostile HTTP(S) servers on loopback, for tests of any probe (Autodiscover, MAPI, EWS, TLS).

A :class:`HostileServer` listens on a loopback address (port 0 = a free one), serves each connection in a thread,
and answers every request with what a *handler* returns: a :class:`Reply` (fixed answer, endless / trickling /
huge body, redirect, silence, abrupt close, raw bytes). The same port speaks TLS and plain HTTP (the first byte of
a connection decides), so one server can be an https candidate and an http redirector at once. Certificates come
from a :class:`CertKit`: trusted for the right names, for a wrong name, expired, or self-signed; its CA file is what
clients trust (``TlsOptions(ca_file=kit.ca_file)``). :class:`LoopbackResolver` resolves only pinned test names,
so a test never sends a DNS query anywhere. ::

    kit = CertKit(tmp_path)
    with HostileServer(route({"/autodiscover/": xml(BODY)}), kit, names=["outlook.example.test"]) as server:
        resolver = LoopbackResolver([server.pin("outlook.example.test")])
        ...  # probe https://outlook.example.test:<server.port>/…

Everything is bounded: request heads 64 KiB, request bodies 4 MiB, idle connections 10 s; :meth:`HostileServer.close`
cuts every connection, so endless writers stop at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from casprobe.net.resolve import DnsFailure, Pin, Resolved, Resolver

__all__ = [
    "CertKind",
    "CertKit",
    "Handler",
    "HostileServer",
    "LoopbackResolver",
    "Reply",
    "Request",
    "always",
    "bad_ntlm_challenge",
    "close",
    "endless",
    "fixed",
    "huge",
    "next_address",
    "raw",
    "redirect",
    "route",
    "sequence",
    "silent",
    "trickle",
    "xml",
]

CertKind = Literal["trusted", "wrong_name", "expired", "self_signed"]
_MAX_HEAD = 64 * 1024
_MAX_BODY = 4 * 1024 * 1024
_IDLE_S = 10.0
_addresses = itertools.count()


def next_address() -> str:
    """A fresh loopback address in 127.1.0.0/16 (clear of the labs' 127.0.N.x), one per server."""
    n = next(_addresses)
    return f"127.1.{n // 250 % 250}.{n % 250 + 2}"


# --- requests and replies -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """A request as the server read it.

    Attributes: method; target (path and query); headers (lower-case names, in order); body; tls (came over TLS).
    """

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    tls: bool

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    def header(self, name: str) -> str | None:
        """The last value of a header (case-insensitive), or None."""
        name = name.lower()
        return next((v for k, v in reversed(self.headers) if k == name), None)


Mode = Literal["fixed", "endless", "trickle", "huge", "silent", "close", "raw"]


@dataclass(frozen=True)
class Reply:
    """What to answer.

    Attributes:
        status, headers, body: the answer (``fixed``; headers also for the streamed modes).
        mode: ``fixed``; ``endless`` (chunked, never ends); ``trickle`` (``size`` bytes declared, one byte every
            ``interval_s``); ``huge`` (``size`` bytes declared and sent); ``silent`` (never answers); ``close``
            (closes without answering); ``raw`` (``body`` written as is, then close).
        size, interval_s: for trickle / huge.
        keep_alive: keep the connection for another request (fixed replies only).
    """

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    mode: Mode = "fixed"
    size: int = 0
    interval_s: float = 0.0
    keep_alive: bool = True


Handler = Callable[[Request], Reply]


def fixed(
    status: int = 200, body: bytes = b"", headers: Iterable[tuple[str, str]] = (), *, keep_alive: bool = True
) -> Reply:
    """A complete answer with Content-Length."""
    return Reply(status, tuple(headers), body, keep_alive=keep_alive)


def xml(body: bytes | str, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Reply:
    """An XML answer (``text/xml; charset=utf-8``)."""
    data = body.encode() if isinstance(body, str) else body
    return Reply(status, (("Content-Type", "text/xml; charset=utf-8"), *headers), data)


def endless(content_type: str = "text/xml", piece: bytes = b"<a>" * 1024) -> Reply:
    """200 with a chunked body that never ends."""
    return Reply(200, (("Content-Type", content_type),), piece, mode="endless")


def trickle(interval_s: float = 0.05, size: int = 100_000, content_type: str = "text/xml") -> Reply:
    """200 declaring ``size`` bytes, then one byte every ``interval_s``."""
    return Reply(200, (("Content-Type", content_type),), b"<", mode="trickle", size=size, interval_s=interval_s)


def huge(size: int = 50 * 1024 * 1024, content_type: str = "text/xml") -> Reply:
    """200 with a body of ``size`` bytes (sent in 64 KiB pieces while the client reads)."""
    return Reply(200, (("Content-Type", content_type),), b"<", mode="huge", size=size)


def redirect(location: str, status: int = 302) -> Reply:
    """An HTTP redirect."""
    return Reply(status, (("Location", location),), b"")


def silent() -> Reply:
    """Read the request, never answer (until the client or the server closes)."""
    return Reply(mode="silent")


def close() -> Reply:
    """Close the connection without answering."""
    return Reply(mode="close")


def raw(data: bytes) -> Reply:
    """Write these bytes as the whole answer (not HTTP, or broken HTTP), then close."""
    return Reply(body=data, mode="raw")


def always(reply: Reply) -> Handler:
    """Answer every request the same."""
    return lambda _request: reply


def route(table: Mapping[str, Handler | Reply], default: Reply | None = None) -> Handler:
    """Dispatch on the path prefix (case-insensitive, longest first); 404 otherwise."""
    ordered = sorted(((k.lower(), v) for k, v in table.items()), key=lambda kv: -len(kv[0]))
    fallback = default or fixed(404, b"not found")

    def handle(request: Request) -> Reply:
        for prefix, target in ordered:
            if request.path.lower().startswith(prefix):
                return target(request) if callable(target) else target
        return fallback

    return handle


def sequence(*replies: Reply, then: Reply | None = None) -> Handler:
    """Answer the replies in order, then ``then`` (default: the last one) forever."""
    lock = threading.Lock()
    queue = list(replies)
    last = then or replies[-1]

    def handle(_request: Request) -> Reply:
        with lock:
            return queue.pop(0) if queue else last

    return handle


def bad_ntlm_challenge(garbage: str = "TlRMTVNTUAACAAAA/////w==", schemes: Sequence[str] = ("NTLM",)) -> Handler:
    """401 offering ``schemes``; to a request with Authorization, 401 with ``WWW-Authenticate: NTLM <garbage>``."""

    def handle(request: Request) -> Reply:
        if request.header("authorization") is None:
            return fixed(401, b"", [("WWW-Authenticate", s) for s in schemes])
        return fixed(401, b"", [("WWW-Authenticate", f"NTLM {garbage}")])

    return handle


# --- certificates -------------------------------------------------------------------------------------------


class CertKit:
    """A test CA (its PEM at :attr:`ca_file`) and the server certificates hostile tests need."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ca = trustme.CA()
        self.ca_file = folder / "hostile-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self._serial = itertools.count(1)

    def server_context(self, kind: CertKind, names: Sequence[str]) -> ssl.SSLContext:
        """A server-side TLS context presenting a certificate of this kind for ``names``."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        now = dt.datetime.now(dt.UTC)
        if kind == "trusted":
            self.ca.issue_cert(*names).configure_cert(context)
        elif kind == "wrong_name":
            self.ca.issue_cert("wrong-name.invalid").configure_cert(context)
        elif kind == "expired":
            leaf = self.ca.issue_cert(*names, not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(1))
            leaf.configure_cert(context)
        elif kind == "self_signed":
            self._self_signed(names, now, context)
        else:
            raise ValueError(f"unknown certificate kind {kind!r}")
        return context

    def _self_signed(self, names: Sequence[str], now: dt.datetime, context: ssl.SSLContext) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .sign(key, hashes.SHA256())
        )
        path = self.folder / f"self-signed-{next(self._serial)}.pem"
        pem = cert.public_bytes(serialization.Encoding.PEM)
        pem += key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.write_bytes(pem)
        context.load_cert_chain(str(path))


# --- resolution ---------------------------------------------------------------------------------------------


class LoopbackResolver(Resolver):
    """Resolves only its pins, all on 127.0.0.0/8; any other name fails at once as a DNS failure (no query)."""

    def __init__(self, pins: Iterable[Pin] = ()) -> None:
        pins = list(pins)
        for pin in pins:
            if not pin.address.startswith("127."):
                raise ValueError(f"{pin.name} pinned to {pin.address}: tests use loopback addresses only")
        super().__init__(pins)

    def resolve(self, name: str, port: int, timeout: float) -> Resolved:
        if self.pin_for(name) is None:
            raise DnsFailure(name, "not a test name (tests resolve only pinned loopback names)")
        return super().resolve(name, port, timeout)


# --- the server ---------------------------------------------------------------------------------------------


@dataclass
class _Conn:
    sock: socket.socket
    buffer: bytearray = field(default_factory=bytearray)


class HostileServer:
    """A threaded TLS (and plain HTTP) server on a loopback address, answering with ``handler``.

    Attributes: address, port; requests: every request read, in order; names: the names its certificate is for.
    """

    def __init__(
        self,
        handler: Handler,
        certs: CertKit | None,
        *,
        cert: CertKind = "trusted",
        names: Sequence[str] = ("hostile.test",),
        address: str | None = None,
        plain_http: bool = True,
    ) -> None:
        self.handler = handler
        self.names = tuple(names)
        self.context = certs.server_context(cert, self.names) if certs is not None else None
        self.plain_http = plain_http
        self.requests: list[Request] = []
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((address or next_address(), 0))
        self._listener.listen(64)
        self._listener.settimeout(0.2)  # accept() polls the stop flag (shutdown() also wakes it on Linux)
        self.address, self.port = self._listener.getsockname()[:2]
        self._thread = threading.Thread(target=self._accept, name=f"hostile-{self.port}", daemon=True)
        self._thread.start()

    # public helpers
    def pin(self, name: str) -> Pin:
        """A resolver pin sending ``name`` to this server (address and port)."""
        return Pin(name.lower(), self.address, self.port)

    def url(self, path: str = "/", host: str | None = None, scheme: str = "https") -> str:
        return f"{scheme}://{host or self.names[0]}:{self.port}{path}"

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        self._thread.join(timeout=2)

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # serving
    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(OSError):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # timings show the server, not Nagle
            with self._lock:
                self._conns.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            sock.settimeout(_IDLE_S)
            first = sock.recv(1, socket.MSG_PEEK)
            tls = first == b"\x16"
            if tls and self.context is not None:
                sock = self.context.wrap_socket(sock, server_side=True)
                with self._lock:
                    self._conns.append(sock)
            elif not first or tls or not self.plain_http:
                return
            conn = _Conn(sock)
            while not self._stop.is_set():
                request = self._read(conn, tls)
                if request is None:
                    return
                self.requests.append(request)
                if not self._write(conn, self.handler(request)):
                    return
        except (OSError, ssl.SSLError, ValueError):
            return
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def _read(self, conn: _Conn, tls: bool) -> Request | None:
        while b"\r\n\r\n" not in conn.buffer:
            if len(conn.buffer) > _MAX_HEAD:
                return None
            data = conn.sock.recv(65536)
            if not data:
                return None
            conn.buffer += data
        head, _, rest = bytes(conn.buffer).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = [*lines[0].split(" ", 2), "", ""][:3]
        headers = tuple((k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:]))
        length = min(int(dict(headers).get("content-length", "0") or 0), _MAX_BODY)
        body = bytearray(rest)
        while len(body) < length:
            data = conn.sock.recv(65536)
            if not data:
                return None
            body += data
        conn.buffer = bytearray(body[length:])
        return Request(method, target, headers, bytes(body[:length]), tls)

    def _head(self, reply: Reply, extra: Iterable[tuple[str, str]]) -> bytes:
        try:
            phrase = http.HTTPStatus(reply.status).phrase
        except ValueError:
            phrase = "Unknown"
        lines = [f"HTTP/1.1 {reply.status} {phrase}", *(f"{k}: {v}" for k, v in (*reply.headers, *extra))]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _write(self, conn: _Conn, reply: Reply) -> bool:
        """Send the reply; True when the connection may serve another request."""
        sock = conn.sock
        if reply.mode == "fixed":
            connection = "keep-alive" if reply.keep_alive else "close"
            extra = [("Content-Length", str(len(reply.body))), ("Connection", connection)]
            sock.sendall(self._head(reply, extra) + reply.body)
            return reply.keep_alive
        if reply.mode == "raw":
            sock.sendall(reply.body)
        elif reply.mode == "endless":
            sock.sendall(self._head(reply, [("Transfer-Encoding", "chunked")]))
            frame = f"{len(reply.body):x}\r\n".encode() + reply.body + b"\r\n"
            while not self._stop.is_set():
                sock.sendall(frame)
        elif reply.mode in ("trickle", "huge"):
            sock.sendall(self._head(reply, [("Content-Length", str(reply.size))]))
            piece = reply.body[:1] * (1 if reply.mode == "trickle" else 65536)
            sent = 0
            while sent < reply.size and not self._stop.is_set():
                sock.sendall(piece[: reply.size - sent])
                sent += len(piece)
                if reply.interval_s:
                    time.sleep(reply.interval_s)
        elif reply.mode == "silent":
            sock.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    if not sock.recv(65536):
                        break
                except TimeoutError:
                    continue
        return False
