"""RopLogon request and responses ([MS-OXCROPS] 2.2.3.1), the first ROP a MAPI client sends (no I/O).

Request (2.2.3.1.1; EssdnSize counts the terminating NUL), private-mailbox success response (2.2.3.1.2
with LogonTime 2.2.3.1.2.1), redirect response (2.2.3.1.4: ReturnValue ecWrongServer 0x478, LogonFlags,
ServerNameSize u8 counting the terminating NUL, ServerName) and the generic failure response (RopId,
OutputHandleIndex, ReturnValue). Flag values are from [MS-OXCSTOR] 2.2.1.1.1 and 2.2.1.1.3; GUIDs are
Windows GUIDs (``uuid.UUID.bytes_le``). The public-folder success form (2.2.3.1.3) is not implemented.
Errors raise :class:`~casprobe.protocols.mapiwire.RopCodecError`.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Self

from casprobe.protocols.mapierrors import EC_WRONG_SERVER, error_code_name
from casprobe.protocols.mapiwire import RopCodecError

__all__ = [
    "LOGON_FLAG_PRIVATE",
    "OPEN_FLAG_HOME_LOGON",
    "OPEN_FLAG_PUBLIC",
    "OPEN_FLAG_TAKE_OWNERSHIP",
    "OPEN_FLAG_USE_ADMIN_PRIVILEGE",
    "OPEN_FLAG_USE_PER_MDB_REPLID_MAPPING",
    "RESPONSE_FLAG_OOF",
    "RESPONSE_FLAG_OWNER_RIGHT",
    "RESPONSE_FLAG_RESERVED",
    "RESPONSE_FLAG_SEND_AS_RIGHT",
    "ROP_ID_LOGON",
    "LogonError",
    "LogonRedirect",
    "LogonResponse",
    "LogonSuccess",
    "LogonTime",
    "RopLogonRequest",
    "decode_rop_logon_response",
    "decode_rop_logon_response_from",
]

ROP_ID_LOGON = 0xFE
LOGON_FLAG_PRIVATE = 0x01
OPEN_FLAG_USE_ADMIN_PRIVILEGE = 0x00000001
OPEN_FLAG_PUBLIC = 0x00000002
OPEN_FLAG_HOME_LOGON = 0x00000004
OPEN_FLAG_TAKE_OWNERSHIP = 0x00000008
OPEN_FLAG_USE_PER_MDB_REPLID_MAPPING = 0x01000000
RESPONSE_FLAG_RESERVED = 0x01  # MUST be set ([MS-OXCSTOR] 2.2.1.1.3)
RESPONSE_FLAG_OWNER_RIGHT = 0x02
RESPONSE_FLAG_SEND_AS_RIGHT = 0x04
RESPONSE_FLAG_OOF = 0x10
_FOLDER_ID_COUNT = 13


class _Cursor:
    """Bounds-checked little-endian reads raising RopCodecError."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, pos: int, what: str) -> None:
        self.data = bytes(data)
        if not 0 <= pos <= len(self.data):
            raise RopCodecError(f"{what}: offset {pos} outside the {len(self.data)}-byte buffer")
        self.pos = pos
        self.what = what

    def take(self, n: int, field: str) -> bytes:
        if n > len(self.data) - self.pos:
            raise RopCodecError(f"{self.what}: truncated in {field} at offset {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "little")


def _check_uint(owner: object, size: int, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if not isinstance(value, int) or not 0 <= value < 1 << (8 * size):
            raise ValueError(f"{type(owner).__name__}.{name} must fit in {size} byte(s), got {value!r}")


def _ascii_z(value: str, owner: str, limit: int) -> bytes:
    if not value.isascii() or "\x00" in value:
        raise ValueError(f"{owner} must be ASCII without NUL")
    raw = value.encode("ascii") + b"\x00"
    if len(raw) > limit:
        raise ValueError(f"{owner} is longer than {limit - 1} characters")
    return raw


def _read_ascii_z(cur: _Cursor, size: int, field: str) -> str:
    raw = cur.take(size, field)
    if size == 0 or raw[-1] != 0 or 0 in raw[:-1]:
        raise RopCodecError(f"{cur.what}: {field} must be {size} bytes ending in its only NUL")
    try:
        return raw[:-1].decode("ascii")
    except UnicodeDecodeError as exc:
        raise RopCodecError(f"{cur.what}: {field} is not ASCII") from exc


# --------------------------------------------------------------------------- RopLogon request


@dataclass(frozen=True, slots=True)
class RopLogonRequest:
    """RopLogon request ([MS-OXCROPS] 2.2.3.1.1); defaults are a private-mailbox logon as Outlook does."""

    essdn: str
    logon_id: int = 0
    output_handle_index: int = 0
    logon_flags: int = LOGON_FLAG_PRIVATE
    open_flags: int = OPEN_FLAG_HOME_LOGON | OPEN_FLAG_TAKE_OWNERSHIP | OPEN_FLAG_USE_PER_MDB_REPLID_MAPPING
    store_state: int = 0

    def __post_init__(self) -> None:
        _check_uint(self, 1, "logon_id", "output_handle_index", "logon_flags")
        _check_uint(self, 4, "open_flags", "store_state")
        _ascii_z(self.essdn, "RopLogonRequest.essdn", 0xFFFF)

    def encode(self) -> bytes:
        essdn = _ascii_z(self.essdn, "RopLogonRequest.essdn", 0xFFFF)
        head = struct.pack(
            "<BBBBIIH",
            ROP_ID_LOGON,
            self.logon_id,
            self.output_handle_index,
            self.logon_flags,
            self.open_flags,
            self.store_state,
            len(essdn),
        )
        return head + essdn

    @classmethod
    def decode_from(cls, data: bytes, offset: int = 0) -> tuple[Self, int]:
        """Decode the RopLogon request at ``offset`` (e.g. inside a RopsList); return it and the end."""
        cur = _Cursor(data, offset, "RopLogon request")
        rop_id = cur.uint(1, "RopId")
        if rop_id != ROP_ID_LOGON:
            raise RopCodecError(f"RopId 0x{rop_id:02X} is not RopLogon (0xFE)")
        logon_id = cur.uint(1, "LogonId")
        out_index = cur.uint(1, "OutputHandleIndex")
        logon_flags = cur.uint(1, "LogonFlags")
        open_flags = cur.uint(4, "OpenFlags")
        store_state = cur.uint(4, "StoreState")
        essdn = _read_ascii_z(cur, cur.uint(2, "EssdnSize"), "Essdn")
        return cls(essdn, logon_id, out_index, logon_flags, open_flags, store_state), cur.pos

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode exactly one RopLogon request; trailing bytes raise."""
        request, end = cls.decode_from(data)
        if end != len(data):
            raise RopCodecError(f"RopLogon request: {len(data) - end} trailing bytes")
        return request


# --------------------------------------------------------------------------- RopLogon responses


@dataclass(frozen=True, slots=True)
class LogonTime:
    """LogonTime ([MS-OXCROPS] 2.2.3.1.2.1): six u8 fields and a u16 year."""

    seconds: int
    minutes: int
    hour: int
    day_of_week: int  # Sunday = 0
    day: int
    month: int  # January = 1
    year: int

    def __post_init__(self) -> None:
        _check_uint(self, 1, "seconds", "minutes", "hour", "day_of_week", "day", "month")
        _check_uint(self, 2, "year")

    @classmethod
    def from_datetime(cls, when: datetime) -> Self:
        return cls(when.second, when.minute, when.hour, (when.weekday() + 1) % 7, when.day, when.month, when.year)

    def encode(self) -> bytes:
        fields = (self.seconds, self.minutes, self.hour, self.day_of_week, self.day, self.month, self.year)
        return struct.pack("<6BH", *fields)


_NIL = uuid.UUID(int=0)


@dataclass(frozen=True, slots=True)
class LogonSuccess:
    """Private-mailbox RopLogon success response ([MS-OXCROPS] 2.2.3.1.2), ReturnValue 0."""

    folder_ids: tuple[int, ...]
    logon_time: LogonTime
    output_handle_index: int = 0
    logon_flags: int = LOGON_FLAG_PRIVATE
    response_flags: int = RESPONSE_FLAG_RESERVED | RESPONSE_FLAG_OWNER_RIGHT | RESPONSE_FLAG_SEND_AS_RIGHT
    mailbox_guid: uuid.UUID = _NIL
    repl_id: int = 0
    repl_guid: uuid.UUID = _NIL
    gwart_time: int = 0
    store_state: int = 0

    def __post_init__(self) -> None:
        if len(self.folder_ids) != _FOLDER_ID_COUNT or not all(0 <= f < 1 << 64 for f in self.folder_ids):
            raise ValueError(f"folder_ids must be {_FOLDER_ID_COUNT} u64 values")
        if not self.logon_flags & LOGON_FLAG_PRIVATE:
            raise ValueError("LogonSuccess models the private-mailbox form: logon_flags needs Private (0x01)")
        _check_uint(self, 1, "output_handle_index", "logon_flags", "response_flags")
        _check_uint(self, 2, "repl_id")
        _check_uint(self, 8, "gwart_time")
        _check_uint(self, 4, "store_state")

    @property
    def return_value(self) -> int:
        return 0

    def encode(self) -> bytes:
        return b"".join(
            (
                struct.pack("<BBIB", ROP_ID_LOGON, self.output_handle_index, 0, self.logon_flags),
                struct.pack(f"<{_FOLDER_ID_COUNT}Q", *self.folder_ids),
                struct.pack("<B", self.response_flags),
                self.mailbox_guid.bytes_le,
                struct.pack("<H", self.repl_id),
                self.repl_guid.bytes_le,
                self.logon_time.encode(),
                struct.pack("<QI", self.gwart_time, self.store_state),
            )
        )


@dataclass(frozen=True, slots=True)
class LogonRedirect:
    """RopLogon redirect response ([MS-OXCROPS] 2.2.3.1.4): ReturnValue ecWrongServer + server name."""

    server_name: str
    output_handle_index: int = 0
    logon_flags: int = LOGON_FLAG_PRIVATE

    def __post_init__(self) -> None:
        _check_uint(self, 1, "output_handle_index", "logon_flags")
        _ascii_z(self.server_name, "LogonRedirect.server_name", 0xFF)

    @property
    def return_value(self) -> int:
        return EC_WRONG_SERVER

    def encode(self) -> bytes:
        name = _ascii_z(self.server_name, "LogonRedirect.server_name", 0xFF)
        head = struct.pack(
            "<BBIBB", ROP_ID_LOGON, self.output_handle_index, EC_WRONG_SERVER, self.logon_flags, len(name)
        )
        return head + name


@dataclass(frozen=True, slots=True)
class LogonError:
    """RopLogon failure response: RopId, OutputHandleIndex, ReturnValue (any error but ecWrongServer)."""

    return_value: int
    output_handle_index: int = 0

    def __post_init__(self) -> None:
        _check_uint(self, 1, "output_handle_index")
        _check_uint(self, 4, "return_value")
        if self.return_value in (0, EC_WRONG_SERVER):
            raise ValueError(f"{error_code_name(self.return_value)} has its own response form")

    @property
    def error_name(self) -> str:
        return error_code_name(self.return_value)

    def encode(self) -> bytes:
        return struct.pack("<BBI", ROP_ID_LOGON, self.output_handle_index, self.return_value)


LogonResponse = LogonSuccess | LogonRedirect | LogonError


def decode_rop_logon_response_from(data: bytes, offset: int = 0) -> tuple[LogonResponse, int]:
    """Decode the RopLogon response at ``offset`` (e.g. inside a RopsList); return it and the end."""
    cur = _Cursor(data, offset, "RopLogon response")
    rop_id = cur.uint(1, "RopId")
    if rop_id != ROP_ID_LOGON:
        raise RopCodecError(f"RopId 0x{rop_id:02X} is not RopLogon (0xFE)")
    out_index = cur.uint(1, "OutputHandleIndex")
    value = cur.uint(4, "ReturnValue")
    if value == EC_WRONG_SERVER:
        flags = cur.uint(1, "LogonFlags")
        name = _read_ascii_z(cur, cur.uint(1, "ServerNameSize"), "ServerName")
        return LogonRedirect(name, out_index, flags), cur.pos
    if value != 0:
        return LogonError(value, out_index), cur.pos
    flags = cur.uint(1, "LogonFlags")
    if not flags & LOGON_FLAG_PRIVATE:
        raise RopCodecError("public-folder RopLogon response (2.2.3.1.3) is not supported")
    folder_ids = struct.unpack(f"<{_FOLDER_ID_COUNT}Q", cur.take(8 * _FOLDER_ID_COUNT, "FolderIds"))
    response_flags = cur.uint(1, "ResponseFlags")
    mailbox_guid = uuid.UUID(bytes_le=cur.take(16, "MailboxGuid"))
    repl_id = cur.uint(2, "ReplId")
    repl_guid = uuid.UUID(bytes_le=cur.take(16, "ReplGuid"))
    logon_time = LogonTime(*struct.unpack("<6BH", cur.take(8, "LogonTime")))
    gwart_time = cur.uint(8, "GwartTime")
    store_state = cur.uint(4, "StoreState")
    success = LogonSuccess(
        tuple(folder_ids),
        logon_time,
        out_index,
        flags,
        response_flags,
        mailbox_guid,
        repl_id,
        repl_guid,
        gwart_time,
        store_state,
    )
    return success, cur.pos


def decode_rop_logon_response(data: bytes) -> LogonResponse:
    """Decode exactly one RopLogon response (success, redirect or error form); trailing bytes raise."""
    response, end = decode_rop_logon_response_from(data)
    if end != len(data):
        raise RopCodecError(f"RopLogon response: {len(data) - end} trailing bytes")
    return response
