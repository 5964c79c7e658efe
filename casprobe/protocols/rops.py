"""ROP buffers: the RopBuffer field of MAPI/HTTP Execute bodies (no I/O), plus the RopLogon re-exports.

Follows [MS-OXCRPC] 2.2.2.1 RPC_HEADER_EXT (Version 0, Flags Compressed 0x1 / XorMagic 0x2 / Last 0x4,
Size, SizeActual), 3.1.4.2.1.1 (several extended buffers, the last one flagged Last) and the XorMagic
obfuscation (every payload byte XOR 0xA5), and [MS-OXCROPS] 2.2.1 (ROP input/output buffer: RopSize u16
counting itself and the RopsList, RopsList, ServerObjectHandleTable of u32).

Compressed (LZ77) payloads are refused: casprobe always sends Execute Flags 0x3 (no compression, no
obfuscation), so a conforming server never compresses.

RopLogon ([MS-OXCROPS] 2.2.3.1) is implemented in :mod:`~casprobe.protocols.roplogon` and the MAPI error
code names in :mod:`~casprobe.protocols.mapierrors`; both are re-exported here.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from casprobe.protocols.mapierrors import error_code_name
from casprobe.protocols.mapiwire import RopCodecError
from casprobe.protocols.roplogon import (
    LOGON_FLAG_PRIVATE,
    OPEN_FLAG_HOME_LOGON,
    OPEN_FLAG_TAKE_OWNERSHIP,
    OPEN_FLAG_USE_PER_MDB_REPLID_MAPPING,
    ROP_ID_LOGON,
    LogonError,
    LogonRedirect,
    LogonResponse,
    LogonSuccess,
    LogonTime,
    RopLogonRequest,
    decode_rop_logon_response,
    decode_rop_logon_response_from,
)

__all__ = [
    "LOGON_FLAG_PRIVATE",
    "MAX_EXTENDED_BUFFERS",
    "OPEN_FLAG_HOME_LOGON",
    "OPEN_FLAG_TAKE_OWNERSHIP",
    "OPEN_FLAG_USE_PER_MDB_REPLID_MAPPING",
    "RHE_FLAG_COMPRESSED",
    "RHE_FLAG_LAST",
    "RHE_FLAG_XOR_MAGIC",
    "ROP_ID_LOGON",
    "LogonError",
    "LogonRedirect",
    "LogonResponse",
    "LogonSuccess",
    "LogonTime",
    "RopCodecError",
    "RopLogonRequest",
    "RopPayload",
    "build_rop_buffer",
    "decode_rop_logon_response",
    "decode_rop_logon_response_from",
    "error_code_name",
    "parse_extended_buffers",
    "parse_rop_buffer",
    "parse_rop_buffers",
    "parse_rop_payload",
]

RHE_FLAG_COMPRESSED = 0x0001
RHE_FLAG_XOR_MAGIC = 0x0002
RHE_FLAG_LAST = 0x0004
_RHE_KNOWN = RHE_FLAG_COMPRESSED | RHE_FLAG_XOR_MAGIC | RHE_FLAG_LAST
_RHE = struct.Struct("<HHHH")
_XOR_TABLE = bytes(b ^ 0xA5 for b in range(256))
MAX_EXTENDED_BUFFERS = 64


# --------------------------------------------------------------------------- RPC_HEADER_EXT + ROP buffer


@dataclass(frozen=True, slots=True)
class RopPayload:
    """One ROP input/output buffer: the RopsList bytes and the Server object handle table."""

    rops: bytes
    handles: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.rops) + 2 > 0xFFFF:
            raise ValueError("RopsList too long for the u16 RopSize field")
        for handle in self.handles:
            if not 0 <= handle <= 0xFFFFFFFF:
                raise ValueError(f"handle {handle!r} is not a u32")

    def encode(self) -> bytes:
        """RopSize + RopsList + handle table (the payload that follows an RPC_HEADER_EXT)."""
        table = struct.pack(f"<{len(self.handles)}I", *self.handles)
        return struct.pack("<H", len(self.rops) + 2) + self.rops + table


def build_rop_buffer(rops: bytes, handles: Sequence[int], *, xor_magic: bool = False) -> bytes:
    """One RPC_HEADER_EXT (Last set, uncompressed) followed by the ROP buffer of ``rops`` + ``handles``.

    With ``xor_magic`` the payload is obfuscated and the XorMagic flag set (what a server does when the
    client did not send Execute flag 0x2).
    """
    payload = RopPayload(bytes(rops), tuple(handles)).encode()
    if len(payload) > 0xFFFF:
        raise ValueError("ROP buffer payload too long for one RPC_HEADER_EXT (Size is a u16)")
    flags = RHE_FLAG_LAST
    if xor_magic:
        flags |= RHE_FLAG_XOR_MAGIC
        payload = payload.translate(_XOR_TABLE)
    return _RHE.pack(0, flags, len(payload), len(payload)) + payload


def parse_extended_buffers(data: bytes, *, max_buffers: int = MAX_EXTENDED_BUFFERS) -> tuple[bytes, ...]:
    """Split ``data`` into its extended buffers (until the one flagged Last) and de-obfuscate them."""
    payloads: list[bytes] = []
    pos = 0
    while True:
        if len(payloads) >= max_buffers:
            raise RopCodecError(f"more than {max_buffers} extended buffers")
        if len(data) - pos < _RHE.size:
            raise RopCodecError(f"truncated RPC_HEADER_EXT at offset {pos}")
        version, flags, size, size_actual = _RHE.unpack_from(data, pos)
        pos += _RHE.size
        if version != 0:
            raise RopCodecError(f"RPC_HEADER_EXT version {version} (must be 0)")
        if flags & ~_RHE_KNOWN:
            raise RopCodecError(f"unknown RPC_HEADER_EXT flags 0x{flags:04X}")
        if flags & RHE_FLAG_COMPRESSED:
            raise RopCodecError(
                "compressed (LZ77) extended buffer not supported: casprobe requests no compression "
                "(Execute flag 0x1), so the server must not compress"
            )
        if size != size_actual:
            raise RopCodecError(f"uncompressed buffer with Size {size} != SizeActual {size_actual}")
        if size > len(data) - pos:
            raise RopCodecError(f"RPC_HEADER_EXT Size {size} exceeds the {len(data) - pos} bytes left")
        payload = bytes(data[pos : pos + size])
        pos += size
        if flags & RHE_FLAG_XOR_MAGIC:
            payload = payload.translate(_XOR_TABLE)
        payloads.append(payload)
        if flags & RHE_FLAG_LAST:
            break
    if pos != len(data):
        raise RopCodecError(f"{len(data) - pos} trailing bytes after the extended buffer flagged Last")
    return tuple(payloads)


def parse_rop_payload(payload: bytes) -> RopPayload:
    """Split one ROP buffer (RopSize + RopsList + handle table) into a :class:`RopPayload`."""
    if len(payload) < 2:
        raise RopCodecError("ROP buffer shorter than its RopSize field")
    (rop_size,) = struct.unpack_from("<H", payload)
    if not 2 <= rop_size <= len(payload):
        raise RopCodecError(f"RopSize {rop_size} outside 2..{len(payload)}")
    table = payload[rop_size:]
    if len(table) % 4:
        raise RopCodecError(f"handle table of {len(table)} bytes is not a multiple of 4")
    handles = struct.unpack(f"<{len(table) // 4}I", table)
    return RopPayload(bytes(payload[2:rop_size]), tuple(handles))


def parse_rop_buffers(data: bytes) -> tuple[RopPayload, ...]:
    """Every ROP buffer in ``data``, one per extended buffer (several only with packing/chaining)."""
    return tuple(parse_rop_payload(p) for p in parse_extended_buffers(data))


def parse_rop_buffer(data: bytes) -> RopPayload:
    """The ROP buffer of the first extended buffer; all headers are still validated up to Last.

    Further extended buffers exist only when the client asks for chaining (Execute flag 0x4) or the
    server advertised packing; casprobe does neither. Use :func:`parse_rop_buffers` to see them.
    """
    return parse_rop_buffers(data)[0]
