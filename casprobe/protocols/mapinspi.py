"""MAPI/HTTP address book server endpoint (NSPI) bodies: Bind and Unbind, [MS-OXCMAPIHTTP] 2.2.5.1-2.2.5.2.

Bind carries an optional 36-byte STAT ([MS-OXNSPI] 2.2.8) kept as raw bytes; the Bind response's
ServerGuid is a Windows GUID (Data1-Data3 little-endian, i.e. :attr:`uuid.UUID.bytes_le`, as gromox's
``p_guid`` writes it). Response objects model the success and failure forms like the EMSMDB ones.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import ClassVar, Self

from casprobe.protocols.mapiwire import (
    Reader,
    ResponseMixin,
    check_aux,
    check_u32,
    decode_status_error_aux,
    sized_bytes,
    u32_bytes,
)

__all__ = [
    "BIND_FLAG_ANONYMOUS_LOGIN",
    "STAT_SIZE",
    "BindRequest",
    "BindResponse",
    "UnbindRequest",
    "UnbindResponse",
]

STAT_SIZE = 36  # [MS-OXNSPI] 2.2.8 STAT: nine 32-bit fields
BIND_FLAG_ANONYMOUS_LOGIN = 0x20  # the only Bind flag the server honours (2.2.5.1.1)


@dataclass(frozen=True, slots=True)
class BindRequest:
    """NSPI Bind request body, [MS-OXCMAPIHTTP] 2.2.5.1.1.

    ``state`` is the raw 36-byte STAT ([MS-OXNSPI] 2.2.8) or None; HasState is written as 0xFF when
    present (any nonzero value is read as "present").
    """

    flags: int = 0
    state: bytes | None = None
    aux: bytes = b""

    def __post_init__(self) -> None:
        check_u32(self, "flags")
        check_aux(self, "aux")
        if self.state is not None and len(self.state) != STAT_SIZE:
            raise ValueError(f"BindRequest.state must be {STAT_SIZE} bytes, got {len(self.state)}")

    def encode(self) -> bytes:
        has_state = b"\x00" if self.state is None else b"\xff" + self.state
        return u32_bytes(self.flags) + has_state + sized_bytes(self.aux)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data, "Bind request")
        flags = r.u32("Flags")
        state = r.raw(STAT_SIZE, "State") if r.u8("HasState") else None
        aux = r.sized("AuxiliaryBuffer")
        r.end()
        return cls(flags, state, aux)


_NIL_GUID = uuid.UUID(int=0)


@dataclass(frozen=True, slots=True)
class BindResponse(ResponseMixin):
    """NSPI Bind response body: success form 2.2.5.1.2 (ServerGuid as Windows little-endian GUID)."""

    _SUCCESS_FIELDS: ClassVar[tuple[str, ...]] = ("error_code", "server_guid")
    status_code: int = 0
    error_code: int = 0
    server_guid: uuid.UUID = _NIL_GUID
    aux: bytes = b""

    def __post_init__(self) -> None:
        check_u32(self, "status_code", "error_code")
        check_aux(self, "aux")
        self._check_form()

    def encode(self) -> bytes:
        if self.status_code != 0:
            return self._failure_bytes()
        return u32_bytes(0) + u32_bytes(self.error_code) + self.server_guid.bytes_le + sized_bytes(self.aux)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data, "Bind response")
        status = r.u32("StatusCode")
        if status != 0:
            aux = r.sized("AuxiliaryBuffer")
            r.end()
            return cls(status_code=status, aux=aux)
        error_code = r.u32("ErrorCode")
        guid = uuid.UUID(bytes_le=r.raw(16, "ServerGuid"))
        aux = r.sized("AuxiliaryBuffer")
        r.end()
        return cls(0, error_code, guid, aux)


@dataclass(frozen=True, slots=True)
class UnbindRequest:
    """NSPI Unbind request body, [MS-OXCMAPIHTTP] 2.2.5.2.1 (Reserved u32 = 0)."""

    reserved: int = 0
    aux: bytes = b""

    def __post_init__(self) -> None:
        check_u32(self, "reserved")
        check_aux(self, "aux")

    def encode(self) -> bytes:
        return u32_bytes(self.reserved) + sized_bytes(self.aux)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data, "Unbind request")
        reserved = r.u32("Reserved")
        aux = r.sized("AuxiliaryBuffer")
        r.end()
        return cls(reserved, aux)


@dataclass(frozen=True, slots=True)
class UnbindResponse(ResponseMixin):
    """NSPI Unbind response body, [MS-OXCMAPIHTTP] 2.2.5.2.2 (success) / failure form."""

    _SUCCESS_FIELDS: ClassVar[tuple[str, ...]] = ("error_code",)
    status_code: int = 0
    error_code: int = 0
    aux: bytes = b""

    def __post_init__(self) -> None:
        check_u32(self, "status_code", "error_code")
        check_aux(self, "aux")
        self._check_form()

    def encode(self) -> bytes:
        if self.status_code != 0:
            return self._failure_bytes()
        return u32_bytes(0) + u32_bytes(self.error_code) + sized_bytes(self.aux)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        return cls(*decode_status_error_aux(data, "Unbind response"))
