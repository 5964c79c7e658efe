"""Shared wire primitives of the MAPI/HTTP body codecs (no I/O).

Little-endian integers, "str8" (NUL-terminated ASCII) and "wstr" (NUL-terminated UTF-16LE) strings and
the AuxiliaryBufferSize + AuxiliaryBuffer pair used by every body of [MS-OXCMAPIHTTP] 2.2.4 and 2.2.5,
plus the success/failure response-form logic those sections share (a response whose StatusCode is not 0
carries only StatusCode and the auxiliary buffer, e.g. 2.2.4.1.3).

Everything a decoder rejects raises :class:`MapiCodecError`; reads never allocate beyond the input.
"""

from __future__ import annotations

import struct
from dataclasses import fields
from typing import Any, ClassVar

__all__ = [
    "MapiCodecError",
    "Reader",
    "ResponseMixin",
    "RopCodecError",
    "check_aux",
    "check_str8",
    "check_u32",
    "check_wstr",
    "decode_status_error_aux",
    "sized_bytes",
    "str8_bytes",
    "u32_bytes",
    "wstr_bytes",
]


class MapiCodecError(ValueError):
    """Malformed or hostile MAPI/HTTP data (body, framing or header value)."""


class RopCodecError(MapiCodecError):
    """Malformed RPC_HEADER_EXT, ROP buffer or ROP (casprobe.protocols.rops / roplogon)."""


# --------------------------------------------------------------------------- primitives

_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
_U32_MAX = 0xFFFFFFFF


class Reader:
    """Bounds-checked little-endian reader over one body; every failure is a MapiCodecError."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._what = what

    def _need(self, n: int, field: str) -> None:
        if n > len(self._data) - self._pos:
            raise MapiCodecError(
                f"{self._what}: truncated in {field} at offset {self._pos} "
                f"(need {n} bytes, {len(self._data) - self._pos} left)"
            )

    def u8(self, field: str) -> int:
        self._need(1, field)
        (value,) = _U8.unpack_from(self._data, self._pos)
        self._pos += 1
        return int(value)

    def u32(self, field: str) -> int:
        self._need(4, field)
        (value,) = _U32.unpack_from(self._data, self._pos)
        self._pos += 4
        return int(value)

    def raw(self, n: int, field: str) -> bytes:
        self._need(n, field)
        value = self._data[self._pos : self._pos + n]
        self._pos += n
        return value

    def sized(self, field: str) -> bytes:
        """A u32 size followed by that many bytes; the size may not exceed what is left."""
        size = self.u32(f"{field}Size")
        left = len(self._data) - self._pos
        if size > left:
            raise MapiCodecError(f"{self._what}: declared {field}Size {size} exceeds the {left} bytes left")
        return self.raw(size, field)

    def str8(self, field: str) -> str:
        end = self._data.find(b"\x00", self._pos)
        if end < 0:
            raise MapiCodecError(f"{self._what}: {field} has no NUL terminator")
        raw = self._data[self._pos : end]
        self._pos = end + 1
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise MapiCodecError(f"{self._what}: {field} is not ASCII") from exc

    def wstr(self, field: str) -> str:
        end = self._pos
        while True:
            end = self._data.find(b"\x00\x00", end)
            if end < 0:
                raise MapiCodecError(f"{self._what}: {field} has no UTF-16 NUL terminator")
            if (end - self._pos) % 2 == 0:
                break
            end += 1
        raw = self._data[self._pos : end]
        self._pos = end + 2
        try:
            return raw.decode("utf-16-le")
        except UnicodeDecodeError as exc:
            raise MapiCodecError(f"{self._what}: {field} is not valid UTF-16LE") from exc

    def end(self) -> None:
        if self._pos != len(self._data):
            raise MapiCodecError(
                f"{self._what}: {len(self._data) - self._pos} trailing bytes after the auxiliary buffer"
            )


def u32_bytes(value: int) -> bytes:
    return _U32.pack(value)


def sized_bytes(value: bytes) -> bytes:
    return _U32.pack(len(value)) + value


def str8_bytes(value: str) -> bytes:
    return value.encode("ascii") + b"\x00"


def wstr_bytes(value: str) -> bytes:
    return value.encode("utf-16-le") + b"\x00\x00"


def check_u32(owner: object, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if not isinstance(value, int) or not 0 <= value <= _U32_MAX:
            raise ValueError(f"{type(owner).__name__}.{name} must be a u32, got {value!r}")


def check_str8(owner: object, name: str) -> None:
    value = getattr(owner, name)
    if not value.isascii() or "\x00" in value:
        raise ValueError(f"{type(owner).__name__}.{name} must be ASCII without NUL")


def check_wstr(owner: object, name: str) -> None:
    value = getattr(owner, name)
    if "\x00" in value:
        raise ValueError(f"{type(owner).__name__}.{name} must not contain NUL")
    try:
        value.encode("utf-16-le")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{type(owner).__name__}.{name} is not encodable as UTF-16") from exc


def check_aux(owner: object, *names: str) -> None:
    for name in names:
        if len(getattr(owner, name)) > _U32_MAX:
            raise ValueError(f"{type(owner).__name__}.{name} is larger than a u32 size allows")


class ResponseMixin:
    """Success/failure forms shared by every response body (StatusCode first, aux last)."""

    __slots__ = ()
    _SUCCESS_FIELDS: ClassVar[tuple[str, ...]] = ()
    status_code: int
    aux: bytes

    @property
    def is_success(self) -> bool:
        """True for the success form (StatusCode 0)."""
        return self.status_code == 0

    def _check_form(self) -> None:
        if self.status_code == 0:
            return
        defaults: dict[str, Any] = {f.name: f.default for f in fields(self)}  # type: ignore[arg-type]
        for name in self._SUCCESS_FIELDS:
            if getattr(self, name) != defaults[name]:
                raise ValueError(f"{type(self).__name__}: {name} is not sent when status_code != 0 (failure form)")

    def _failure_bytes(self) -> bytes:
        return u32_bytes(self.status_code) + sized_bytes(self.aux)


def decode_status_error_aux(data: bytes, what: str) -> tuple[int, int, bytes]:
    """Decode StatusCode [ErrorCode] aux: the whole body of Disconnect/Unbind responses (both forms)."""
    r = Reader(data, what)
    status = r.u32("StatusCode")
    error_code = r.u32("ErrorCode") if status == 0 else 0
    aux = r.sized("AuxiliaryBuffer")
    r.end()
    return status, error_code, aux
