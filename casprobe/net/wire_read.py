"""The reading half of :mod:`casprobe.net.wire`: one connection's buffer, the request's clock, and an HTTP/1.1
response read off the wire within bounds (RFC 9112: status line, header block, 1xx, chunked / Content-Length /
to-the-close bodies, gzip/deflate). See :mod:`casprobe.net.wire` for what it is for.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any

from casprobe.net.transport import BodyTooLarge, DeadlineExceeded, MalformedHttp, inflate

__all__ = [
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "Answer",
    "Clock",
    "Conn",
    "Stream",
    "decoded",
    "read_answer",
    "read_more",
]

MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 200
_MAX_CHUNK_LINE = 4096
_READ = 65536
_NO_BODY_STATUS = (204, 304)
_HEXDIG = frozenset(b"0123456789abcdefABCDEF")


class Stream:
    """What casprobe's auth flows ask a response for (``network_stream.get_extra_info``): this connection's TLS."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._sock = sock

    def get_extra_info(self, info: str) -> Any:
        return self._sock if info == "ssl_object" else self._sock if info == "socket" else None


class Conn:
    """One TLS connection and its unread bytes."""

    def __init__(self, sock: ssl.SSLSocket, address: str) -> None:
        self.sock = sock
        self.address = address
        self.buffer = bytearray()
        self.stream = Stream(sock)
        self.used = False
        self.reusable = True  # False once an answer said ``Connection: close`` (RFC 9112 §9.6: send no more)
        self.authenticated: object | None = None  # the auth flow that authenticated this connection

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Clock:
    """One request's limits: per-operation timeout and the deadline (monotonic)."""

    def __init__(self, op_timeout: float, until: float) -> None:
        self.op_timeout = op_timeout
        self.until = until

    def arm(self, sock: socket.socket) -> None:
        left = self.until - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the deadline passed before the answer was complete")
        sock.settimeout(min(self.op_timeout, left))


class Answer:
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


def read_more(conn: Conn, clock: Clock, *, eof_ok: bool = False) -> float | None:
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


def read_answer(
    conn: Conn,
    clock: Clock,
    limit: int,
    method: str,
    on_chunk: Callable[[bytes], None] | None,
    first: float,
) -> Answer:
    while True:
        status, headers = read_head(conn, clock)
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
        raw = read_chunked(conn, clock, limit, sink)
        close = close or "content-length" in values  # RFC 9112 §6.3 (3): ambiguous framing, do not reuse
    elif "content-length" in values:
        text = values["content-length"].strip()
        if not text.isdigit() or len(text) > 18:
            raise MalformedHttp(f"bad Content-Length {text[:40]!r}")
        size = int(text)
        if size > limit:
            raise BodyTooLarge(limit)
        raw = read_exact(conn, clock, size, sink)
    else:
        raw = read_to_close(conn, clock, limit, sink)
        close = True
    return Answer(status, headers, decoded(values.get("content-encoding", ""), raw, limit), not close, first)


def read_head(conn: Conn, clock: Clock) -> tuple[int, list[tuple[str, str]]]:
    while (end := conn.buffer.find(b"\r\n\r\n")) < 0:
        if len(conn.buffer) > MAX_HEADER_BYTES:
            raise MalformedHttp(f"response header block larger than {MAX_HEADER_BYTES} bytes")
        read_more(conn, clock)
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


def read_exact(conn: Conn, clock: Clock, size: int, sink: Callable[[bytes], None] | None) -> bytes:
    parts: list[bytes] = []
    left = size
    while left:
        if not conn.buffer:
            read_more(conn, clock)
        piece = bytes(conn.buffer[:left])
        del conn.buffer[:left]
        left -= len(piece)
        parts.append(piece)
        if sink is not None:
            sink(piece)
    return b"".join(parts)


def read_line(conn: Conn, clock: Clock) -> bytes:
    while (end := conn.buffer.find(b"\r\n")) < 0:
        if len(conn.buffer) > _MAX_CHUNK_LINE:
            raise MalformedHttp("chunk size line too long")
        read_more(conn, clock)
    if end > _MAX_CHUNK_LINE:
        raise MalformedHttp("chunk size line too long")
    line = bytes(conn.buffer[:end])
    del conn.buffer[: end + 2]
    return line


def read_chunked(conn: Conn, clock: Clock, limit: int, sink: Callable[[bytes], None] | None) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_text = read_line(conn, clock).partition(b";")[0].strip(b" \t")
        # chunk-size = 1*HEXDIG (§7.1): int() alone would also take "0x5", "+5", "1_0" or " 5"
        if not size_text or len(size_text) > 16 or not _HEXDIG.issuperset(size_text):
            raise MalformedHttp(f"bad chunk size {size_text[:20]!r}")
        size = int(size_text, 16)
        if size == 0:
            break
        total += size
        if total > limit:
            raise BodyTooLarge(limit)
        parts.append(read_exact(conn, clock, size, sink))
        if read_line(conn, clock):
            raise MalformedHttp("chunk not followed by CRLF")
    trailers = 0
    while read_line(conn, clock):  # trailer fields, ignored but bounded
        trailers += 1
        if trailers > MAX_HEADERS:
            raise MalformedHttp(f"more than {MAX_HEADERS} trailer lines")
    return b"".join(parts)


def read_to_close(conn: Conn, clock: Clock, limit: int, sink: Callable[[bytes], None] | None) -> bytes:
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
        if read_more(conn, clock, eof_ok=True) is None:
            return b"".join(parts)


def decoded(encoding: str, raw: bytes, limit: int) -> bytes:
    """Undo gzip/deflate within ``limit`` (:func:`~casprobe.net.transport.inflate`); identity as is; any other
    encoding, or a compressed stream cut short, is malformed (we never asked for it)."""
    if encoding.strip().lower() in ("", "identity") or not raw:  # no body (HEAD, 204, 304, an empty 401)
        return raw
    inflated = inflate(encoding, raw, limit)
    if inflated is None:
        raise MalformedHttp(f"unsupported Content-Encoding {encoding.strip().lower()[:40]!r}")
    out, ended = inflated
    if not ended:  # all input consumed below the limit, yet the stream did not end (no gzip trailer)
        raise MalformedHttp(f"truncated {encoding.strip().lower()} body")
    return out
