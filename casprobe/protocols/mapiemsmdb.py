"""MAPI/HTTP mailbox server endpoint (EMSMDB) bodies, [MS-OXCMAPIHTTP] 2.2.4 (no I/O).

Connect (2.2.4.1), Execute (2.2.4.2), Disconnect (2.2.4.3) and NotificationWait (2.2.4.4) request
bodies and both response forms: success (StatusCode 0, ErrorCode, fields, aux) and failure
(StatusCode != 0, aux only). A response object with ``status_code != 0`` must keep every success-only
field at its default; ``decode`` picks the form from the StatusCode it reads. Decoders are strict and
raise :class:`~casprobe.protocols.mapiwire.MapiCodecError`. PING has no body (2.2.6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

from casprobe.protocols.mapiwire import (
    MapiCodecError,
    Reader,
    ResponseMixin,
    check_aux,
    check_str8,
    check_u32,
    check_wstr,
    decode_status_error_aux,
    sized_bytes,
    str8_bytes,
    u32_bytes,
    wstr_bytes,
)

__all__ = [
    "EXECUTE_FLAG_CHAIN",
    "EXECUTE_FLAG_NO_COMPRESSION",
    "EXECUTE_FLAG_NO_XOR_MAGIC",
    "ConnectRequest",
    "ConnectResponse",
    "DisconnectRequest",
    "DisconnectResponse",
    "ExecuteRequest",
    "ExecuteResponse",
    "NotificationWaitRequest",
    "NotificationWaitResponse",
]


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """Connect request body, [MS-OXCMAPIHTTP] 2.2.4.1.1 (LcidSort precedes LcidString)."""

    user_dn: str
    flags: int = 0
    default_code_page: int = 1252
    lcid_sort: int = 1033
    lcid_string: int = 1033
    aux: bytes = b""

    def __post_init__(self) -> None:
        check_str8(self, "user_dn")
        check_u32(self, "flags", "default_code_page", "lcid_sort", "lcid_string")
        check_aux(self, "aux")

    def encode(self) -> bytes:
        return b"".join(
            (
                str8_bytes(self.user_dn),
                u32_bytes(self.flags),
                u32_bytes(self.default_code_page),
                u32_bytes(self.lcid_sort),
                u32_bytes(self.lcid_string),
                sized_bytes(self.aux),
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data, "Connect request")
        user_dn = r.str8("UserDn")
        flags = r.u32("Flags")
        code_page = r.u32("DefaultCodePage")
        lcid_sort = r.u32("LcidSort")
        lcid_string = r.u32("LcidString")
        aux = r.sized("AuxiliaryBuffer")
        r.end()
        return cls(user_dn, flags, code_page, lcid_sort, lcid_string, aux)


@dataclass(frozen=True, slots=True)
class ConnectResponse(ResponseMixin):
    """Connect response body: success form 2.2.4.1.2, failure form 2.2.4.1.3."""

    _SUCCESS_FIELDS: ClassVar[tuple[str, ...]] = (
        "error_code",
        "polls_max",
        "retry_count",
        "retry_delay",
        "dn_prefix",
        "display_name",
    )
    status_code: int = 0
    error_code: int = 0
    polls_max: int = 0
    retry_count: int = 0
    retry_delay: int = 0
    dn_prefix: str = ""
    display_name: str = ""
    aux: bytes = b""

    def __post_init__(self) -> None:
        check_u32(self, "status_code", "error_code", "polls_max", "retry_count", "retry_delay")
        check_str8(self, "dn_prefix")
        check_wstr(self, "display_name")
        check_aux(self, "aux")
        self._check_form()

    def encode(self) -> bytes:
        if self.status_code != 0:
            return self._failure_bytes()
        return b"".join(
            (
                u32_bytes(0),
                u32_bytes(self.error_code),
                u32_bytes(self.polls_max),
                u32_bytes(self.retry_count),
                u32_bytes(self.retry_delay),
                str8_bytes(self.dn_prefix),
                wstr_bytes(self.display_name),
                sized_bytes(self.aux),
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data, "Connect response")
        status = r.u32("StatusCode")
        if status != 0:
            aux = r.sized("AuxiliaryBuffer")
            r.end()
            return cls(status_code=status, aux=aux)
        error_code = r.u32("ErrorCode")
        polls_max = r.u32("PollsMax")
        retry_count = r.u32("RetryCount")
        retry_delay = r.u32("RetryDelay")
        dn_prefix = r.str8("DnPrefix")
        display_name = r.wstr("DisplayName")
        aux = r.sized("AuxiliaryBuffer")
        r.end()
        return cls(0, error_code, polls_max, retry_count, retry_delay, dn_prefix, display_name, aux)


# --------------------------------------------------------------------------- EMSMDB Execute

EXECUTE_FLAG_NO_COMPRESSION = 0x1
EXECUTE_FLAG_NO_XOR_MAGIC = 0x2
EXECUTE_FLAG_CHAIN = 0x4


@dataclass(frozen=True, slots=True)
class ExecuteRequest:
    """Execute request body, [MS-OXCMAPIHTTP] 2.2.4.2.1.

    ``flags`` defaults to 0x3 (no compression, no XOR obfuscation of the response RopBuffer) and
    ``max_rop_out`` to 0x10008, as Microsoft's own test client sends.
    """

    rop_buffer: bytes
    flags: int = EXECUTE_FLAG_NO_COMPRESSION | EXECUTE_FLAG_NO_XOR_MAGIC
    max_rop_out: int = 0x10008
    aux: bytes = b""

    def __post_init__(self) -> None:
        check_u32(self, "flags", "max_rop_out")
        check_aux(self, "rop_buffer", "aux")

    def encode(self) -> bytes:
        return b"".join(
            (u32_bytes(self.flags), sized_bytes(self.rop_buffer), u32_bytes(self.max_rop_out), sized_bytes(self.aux))
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data, "Execute request")
        flags = r.u32("Flags")
        rop_buffer = r.sized("RopBuffer")
        max_rop_out = r.u32("MaxRopOut")
        aux = r.sized("AuxiliaryBuffer")
        r.end()
        return cls(rop_buffer, flags, max_rop_out, aux)


@dataclass(frozen=True, slots=True)
class ExecuteResponse(ResponseMixin):
    """Execute response body: success form 2.2.4.2.2, failure form 2.2.4.2.3."""

    _SUCCESS_FIELDS: ClassVar[tuple[str, ...]] = ("error_code", "flags", "rop_buffer")
    status_code: int = 0
    error_code: int = 0
    flags: int = 0
    rop_buffer: bytes = b""
    aux: bytes = b""

    def __post_init__(self) -> None:
        check_u32(self, "status_code", "error_code", "flags")
        check_aux(self, "rop_buffer", "aux")
        self._check_form()

    def encode(self) -> bytes:
        if self.status_code != 0:
            return self._failure_bytes()
        return b"".join(
            (
                u32_bytes(0),
                u32_bytes(self.error_code),
                u32_bytes(self.flags),
                sized_bytes(self.rop_buffer),
                sized_bytes(self.aux),
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data, "Execute response")
        status = r.u32("StatusCode")
        if status != 0:
            aux = r.sized("AuxiliaryBuffer")
            r.end()
            return cls(status_code=status, aux=aux)
        error_code = r.u32("ErrorCode")
        flags = r.u32("Flags")
        rop_buffer = r.sized("RopBuffer")
        aux = r.sized("AuxiliaryBuffer")
        r.end()
        return cls(0, error_code, flags, rop_buffer, aux)


# --------------------------------------------------------------------------- EMSMDB Disconnect


@dataclass(frozen=True, slots=True)
class DisconnectRequest:
    """Disconnect request body, [MS-OXCMAPIHTTP] 2.2.4.3.1 (auxiliary buffer only)."""

    aux: bytes = b""

    def __post_init__(self) -> None:
        check_aux(self, "aux")

    def encode(self) -> bytes:
        return sized_bytes(self.aux)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data, "Disconnect request")
        aux = r.sized("AuxiliaryBuffer")
        r.end()
        return cls(aux)


@dataclass(frozen=True, slots=True)
class DisconnectResponse(ResponseMixin):
    """Disconnect response body: success form 2.2.4.3.2, failure form 2.2.4.3.3."""

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
        return cls(*decode_status_error_aux(data, "Disconnect response"))


# --------------------------------------------------------------------------- EMSMDB NotificationWait


@dataclass(frozen=True, slots=True)
class NotificationWaitRequest:
    """NotificationWait request body, [MS-OXCMAPIHTTP] 2.2.4.4.1 (Flags is reserved, 0)."""

    flags: int = 0
    aux: bytes = b""

    def __post_init__(self) -> None:
        check_u32(self, "flags")
        check_aux(self, "aux")

    def encode(self) -> bytes:
        return u32_bytes(self.flags) + sized_bytes(self.aux)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data, "NotificationWait request")
        flags = r.u32("Flags")
        aux = r.sized("AuxiliaryBuffer")
        r.end()
        return cls(flags, aux)


@dataclass(frozen=True, slots=True)
class NotificationWaitResponse(ResponseMixin):
    """NotificationWait response body: success 2.2.4.4.2 (EventPending 0 or 1), failure 2.2.4.4.3."""

    _SUCCESS_FIELDS: ClassVar[tuple[str, ...]] = ("error_code", "event_pending")
    status_code: int = 0
    error_code: int = 0
    event_pending: bool = False
    aux: bytes = b""

    def __post_init__(self) -> None:
        check_u32(self, "status_code", "error_code")
        check_aux(self, "aux")
        self._check_form()

    def encode(self) -> bytes:
        if self.status_code != 0:
            return self._failure_bytes()
        return u32_bytes(0) + u32_bytes(self.error_code) + u32_bytes(int(self.event_pending)) + sized_bytes(self.aux)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = Reader(data, "NotificationWait response")
        status = r.u32("StatusCode")
        if status != 0:
            aux = r.sized("AuxiliaryBuffer")
            r.end()
            return cls(status_code=status, aux=aux)
        error_code = r.u32("ErrorCode")
        pending = r.u32("EventPending")
        if pending not in (0, 1):
            raise MapiCodecError(f"NotificationWait response: EventPending must be 0 or 1, got {pending}")
        aux = r.sized("AuxiliaryBuffer")
        r.end()
        return cls(0, error_code, pending == 1, aux)
