"""MAPI/HTTP response framing: meta-tags, additional headers and body of the inner stream (no I/O).

Follows [MS-OXCMAPIHTTP] v20181211 section 2.2.7 (meta-tags PROCESSING, PENDING, DONE), 3.2.5.2 (server:
PROCESSING at once, PENDING per keep-alive period, then DONE + additional headers + body), 3.1.5.6 (client:
parse the de-chunked stream independently of chunk boundaries) and the section 4.1, 4.2 and 4.4 examples::

    PROCESSING\\r\\n
    PENDING\\r\\n                       (0..n times)
    DONE\\r\\n
    X-ResponseCode: 0\\r\\n             (additional headers: X-ResponseCode, X-ElapsedTime, X-StartTime)
    X-ElapsedTime: <ms>\\r\\n
    X-StartTime: <RFC 1123 date>\\r\\n
    \\r\\n
    <request-type response body>

The input of :class:`FramedResponseParser` is the HTTP body *after* transfer decoding (httpx and Starlette
de-chunk for us). The parser is incremental and bounded: meta-tag and header lines, the number of PENDING
tags and header lines, and the body size are capped; every violation raises :class:`MapiCodecError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from enum import Enum

from casprobe.protocols.mapiwire import MapiCodecError

__all__ = [
    "DONE",
    "PENDING",
    "PROCESSING",
    "FramedResponse",
    "FramedResponseParser",
    "build_done_block",
    "build_framed_response",
    "parse_framed",
]

PROCESSING = b"PROCESSING\r\n"
PENDING = b"PENDING\r\n"
DONE = b"DONE\r\n"
_TAGS = {b"PROCESSING": "PROCESSING", b"PENDING": "PENDING", b"DONE": "DONE"}

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CRLF = b"\r\n"


def _check_header(name: str, value: str) -> None:
    if not _TOKEN_RE.fullmatch(name):
        raise ValueError(f"invalid header name {name!r}")
    if not value.isascii() or any(c in value for c in "\r\n\x00"):
        raise ValueError(f"invalid value for header {name!r}")


def build_done_block(
    body: bytes,
    *,
    response_code: int = 0,
    elapsed_ms: int = 0,
    start_time: datetime | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """The final part of a response: ``DONE``, the additional headers, an empty line and ``body``.

    ``start_time`` (default: now) must be timezone-aware; it is written as an RFC 1123 GMT date.
    """
    if response_code < 0 or elapsed_ms < 0:
        raise ValueError("response_code and elapsed_ms must not be negative")
    when = datetime.now(UTC) if start_time is None else start_time
    if when.tzinfo is None:
        raise ValueError("start_time must be timezone-aware")
    headers = [
        ("X-ResponseCode", str(response_code)),
        ("X-ElapsedTime", str(elapsed_ms)),
        ("X-StartTime", format_datetime(when.astimezone(UTC), usegmt=True)),
        *extra_headers,
    ]
    lines = []
    for name, value in headers:
        _check_header(name, value)
        lines.append(f"{name}: {value}\r\n".encode("ascii"))
    return DONE + b"".join(lines) + _CRLF + body


def build_framed_response(
    body: bytes,
    *,
    pending: int = 0,
    response_code: int = 0,
    elapsed_ms: int = 0,
    start_time: datetime | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A whole inner stream at once: PROCESSING, ``pending`` PENDING tags, then :func:`build_done_block`."""
    if pending < 0:
        raise ValueError("pending must not be negative")
    done = build_done_block(
        body,
        response_code=response_code,
        elapsed_ms=elapsed_ms,
        start_time=start_time,
        extra_headers=extra_headers,
    )
    return PROCESSING + PENDING * pending + done


@dataclass(frozen=True, slots=True)
class FramedResponse:
    """A parsed inner stream: the meta-tags in order, the additional headers and the raw body."""

    meta_tags: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first additional header called ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    @property
    def pending_count(self) -> int:
        """How many PENDING keep-alives preceded DONE."""
        return self.meta_tags.count("PENDING")


class _State(Enum):
    META = 1
    HEADERS = 2
    BODY = 3
    FINISHED = 4


class FramedResponseParser:
    """Incremental parser of the inner response stream; chunk boundaries do not matter.

    Call :meth:`feed` with each piece of de-chunked data (it returns the meta-tags completed by that
    piece, so a probe can time keep-alives), then :meth:`finish` at end of stream. ``require_processing``
    enforces that PROCESSING comes first, as 3.2.5.2 prescribes; PENDING may repeat; DONE ends the tags.
    """

    def __init__(
        self,
        *,
        max_pending: int = 10_000,
        max_meta_line: int = 64,
        max_header_lines: int = 32,
        max_header_line: int = 1024,
        max_body: int = 16 * 1024 * 1024,
        require_processing: bool = True,
    ) -> None:
        self._max_pending = max_pending
        self._max_meta_line = max_meta_line
        self._max_header_lines = max_header_lines
        self._max_header_line = max_header_line
        self._max_body = max_body
        self._require_processing = require_processing
        self._state = _State.META
        self._buf = bytearray()
        self._tags: list[str] = []
        self._headers: list[tuple[str, str]] = []
        self._body = bytearray()

    @property
    def meta_tags(self) -> tuple[str, ...]:
        """The meta-tags seen so far."""
        return tuple(self._tags)

    @property
    def done(self) -> bool:
        """True once DONE and the additional headers have been read (the body may still grow)."""
        return self._state in (_State.BODY, _State.FINISHED)

    def feed(self, data: bytes) -> tuple[str, ...]:
        """Consume ``data``; return the meta-tags it completed. Raises MapiCodecError on bad input."""
        if self._state is _State.FINISHED:
            raise MapiCodecError("data fed after finish()")
        new_tags: list[str] = []
        if self._state is _State.BODY:
            self._add_body(data)
            return ()
        self._buf += data
        while self._state in (_State.META, _State.HEADERS):
            limit = self._max_meta_line if self._state is _State.META else self._max_header_line
            end = self._buf.find(_CRLF, 0, limit + 2)
            if end < 0:
                if len(self._buf) > limit + 1 or (len(self._buf) == limit + 1 and self._buf[-1:] != b"\r"):
                    what = "meta-tag" if self._state is _State.META else "additional header"
                    raise MapiCodecError(f"{what} line longer than {limit} bytes")
                return tuple(new_tags)
            line = bytes(self._buf[:end])
            del self._buf[: end + 2]
            if self._state is _State.META:
                new_tags.append(self._meta_line(line))
            else:
                self._header_line(line)
        rest = bytes(self._buf)
        self._buf.clear()
        self._add_body(rest)
        return tuple(new_tags)

    def finish(self) -> FramedResponse:
        """Signal end of stream and return the result; raises if DONE or its header block is missing."""
        if self._state in (_State.META, _State.HEADERS):
            where = "before DONE" if self._state is _State.META else "in the additional headers"
            raise MapiCodecError(f"truncated response: stream ended {where}")
        self._state = _State.FINISHED
        return FramedResponse(tuple(self._tags), tuple(self._headers), bytes(self._body))

    def _meta_line(self, line: bytes) -> str:
        tag = _TAGS.get(line)
        if tag is None:
            raise MapiCodecError(f"unknown meta-tag {line[:32]!r}")
        if self._require_processing and not self._tags and tag != "PROCESSING":
            raise MapiCodecError(f"first meta-tag must be PROCESSING, got {tag}")
        if tag == "PROCESSING" and self._tags:
            raise MapiCodecError("PROCESSING repeated or after PENDING")
        if tag == "PENDING" and self._tags.count("PENDING") >= self._max_pending:
            raise MapiCodecError(f"more than {self._max_pending} PENDING meta-tags")
        self._tags.append(tag)
        if tag == "DONE":
            self._state = _State.HEADERS
        return tag

    def _header_line(self, line: bytes) -> None:
        if not line:
            self._state = _State.BODY
            return
        if len(self._headers) >= self._max_header_lines:
            raise MapiCodecError(f"more than {self._max_header_lines} additional header lines")
        name, sep, value = line.partition(b":")
        try:
            name_text = name.decode("ascii")
            value_text = value.decode("ascii").strip(" \t")
        except UnicodeDecodeError as exc:
            raise MapiCodecError("non-ASCII additional header line") from exc
        if not sep or not _TOKEN_RE.fullmatch(name_text):
            raise MapiCodecError(f"malformed additional header line {line[:64]!r}")
        if any(c in value_text for c in "\r\n\x00"):
            raise MapiCodecError(f"control character in additional header {name_text!r}")
        self._headers.append((name_text, value_text))

    def _add_body(self, data: bytes) -> None:
        if len(self._body) + len(data) > self._max_body:
            raise MapiCodecError(f"response body larger than {self._max_body} bytes")
        self._body += data


def parse_framed(
    data: bytes,
    *,
    max_pending: int = 10_000,
    max_body: int = 16 * 1024 * 1024,
    require_processing: bool = True,
) -> FramedResponse:
    """Parse a complete inner stream (convenience wrapper around :class:`FramedResponseParser`)."""
    parser = FramedResponseParser(max_pending=max_pending, max_body=max_body, require_processing=require_processing)
    parser.feed(data)
    return parser.finish()
