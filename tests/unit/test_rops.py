"""RPC_HEADER_EXT / ROP buffer and RopLogon codecs against [MS-OXCRPC] 2.2.2.1 and [MS-OXCROPS] layouts."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest

from casprobe.protocols.mapihttp import MapiCodecError
from casprobe.protocols.rops import (
    LogonError,
    LogonRedirect,
    LogonSuccess,
    LogonTime,
    RopCodecError,
    RopLogonRequest,
    RopPayload,
    build_rop_buffer,
    decode_rop_logon_response,
    decode_rop_logon_response_from,
    error_code_name,
    parse_extended_buffers,
    parse_rop_buffer,
    parse_rop_buffers,
    parse_rop_payload,
)


def h(text: str) -> bytes:
    """Hex with spaces/newlines, as written in the spec's examples."""
    return bytes.fromhex("".join(text.split()))


# [MS-OXCROPS] 4.6 "Logon RopBackoff ROP Response": RopSize 0x12, RopSetColumns + RopBackoff, handle 0x28.
BACKOFF_PAYLOAD = h("12 00 12 00 00 00 00 00 00 F9 00 34 12 00 00 00 00 00 28 00 00 00")
BACKOFF_ROPS = h("12 00 00 00 00 00 00 F9 00 34 12 00 00 00 00 00")

ALICE_DN = "/o=LAB/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=alice"
# RopId FE, LogonId 0, OutputHandleIndex 0, LogonFlags Private, OpenFlags 0x0100000C, StoreState 0,
# EssdnSize 81 (80 characters + NUL), Essdn.
LOGON_REQUEST = h("FE 00 00 01 0C000001 00000000 5100") + ALICE_DN.encode() + b"\x00"

MAILBOX_GUID = uuid.UUID("2EF33C39-49C8-421C-B876-CDF7F2AC3AA0")
REPL_GUID = uuid.UUID("E2EA6C1C-E61B-49E9-9CFB-38184F907552")
LOGON_SUCCESS = (
    h("FE 00 00000000 01")  # RopId, OutputHandleIndex, ReturnValue 0, LogonFlags Private
    + b"".join(i.to_bytes(8, "little") for i in range(1, 14))  # 13 FolderIds
    + h("07")  # ResponseFlags Reserved | OwnerRight | SendAsRight
    + h("393cf32e c849 1c42 b876 cdf7f2ac3aa0")  # MailboxGuid, Windows byte order
    + h("0100")  # ReplId
    + h("1c6ceae2 1be6 e949 9cfb 38184f907552")  # ReplGuid
    + h("1e 14 0a 01 0e 04 e907")  # LogonTime 10:20:30 Monday 14 April 2025
    + h("0102030405060708")  # GwartTime
    + h("00000000")  # StoreState
)
LOGON_REDIRECT = h("FE 00 78040000 01 0d") + b"mb2.lab.test\x00"
LOGON_ERROR = h("FE 00 11010480")


def test_rop_payload_matches_spec_backoff_example() -> None:
    """The [MS-OXCROPS] 4.6 output buffer splits into its RopsList and one handle, and re-encodes exactly."""
    payload = parse_rop_payload(BACKOFF_PAYLOAD)
    assert payload == RopPayload(BACKOFF_ROPS, (0x28,))
    assert payload.encode() == BACKOFF_PAYLOAD


def test_build_rop_buffer_prefixes_one_last_header() -> None:
    """build_rop_buffer writes Version 0, Flags Last, Size = SizeActual = payload length."""
    built = build_rop_buffer(BACKOFF_ROPS, [0x28])
    assert built == h("0000 0400 1600 1600") + BACKOFF_PAYLOAD
    assert parse_rop_buffer(built) == RopPayload(BACKOFF_ROPS, (0x28,))


def test_xor_magic_payload_is_deobfuscated() -> None:
    """With XorMagic every payload byte is XORed with 0xA5, and parsing reverts it."""
    built = build_rop_buffer(BACKOFF_ROPS, [0x28], xor_magic=True)
    assert built[:8] == h("0000 0600 1600 1600")
    assert built[8:] == bytes(b ^ 0xA5 for b in BACKOFF_PAYLOAD)
    assert built[8] == 0xB7  # 0x12 ^ 0xA5
    assert parse_rop_buffer(built).handles == (0x28,)


def test_several_extended_buffers_until_last() -> None:
    """Buffers are read until the one flagged Last; parse_rop_buffer returns the first."""
    first = h("0000 0000 1600 1600") + BACKOFF_PAYLOAD
    second_payload = RopPayload(b"\x15\x00", ()).encode()
    second = h("0000 0600 0400 0400") + bytes(b ^ 0xA5 for b in second_payload)
    buffers = parse_rop_buffers(first + second)
    assert buffers == (RopPayload(BACKOFF_ROPS, (0x28,)), RopPayload(b"\x15\x00", ()))
    assert parse_rop_buffer(first + second) == buffers[0]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (h("0000 0500 1600 2000") + BACKOFF_PAYLOAD, "compress"),
        (h("0100 0400 1600 1600") + BACKOFF_PAYLOAD, "version"),
        (h("0000 0c00 1600 1600") + BACKOFF_PAYLOAD, "unknown RPC_HEADER_EXT flags"),
        (h("0000 0400 1600 1500") + BACKOFF_PAYLOAD, "SizeActual"),
        (h("0000 0400 ffff ffff") + BACKOFF_PAYLOAD, "exceeds"),
        (h("0000 0000 1600 1600") + BACKOFF_PAYLOAD, "truncated"),
        (h("0000 0400 1600 1600") + BACKOFF_PAYLOAD + b"\x00", "trailing"),
        (h("0000 0400 0100 0100 00"), "shorter than its RopSize"),
        (h("0000 0400 0200 0200 0100"), "RopSize 1"),
        (h("0000 0400 0200 0200 0300"), "RopSize 3"),
        (h("0000 0400 0400 0400 0200 2800"), "multiple of 4"),
    ],
)
def test_malformed_rop_buffers_raise(data: bytes, match: str) -> None:
    """Compressed, wrong-version, inconsistent, oversized, unterminated or misaligned buffers raise."""
    with pytest.raises(RopCodecError, match=match):
        parse_rop_buffers(data)


def test_extended_buffer_count_is_capped() -> None:
    """A stream of headers never flagged Last stops at max_buffers."""
    with pytest.raises(RopCodecError, match="more than 4"):
        parse_extended_buffers(h("0000 0000 0000 0000") * 10, max_buffers=4)


def test_every_truncation_of_a_rop_buffer_raises() -> None:
    """Cutting a framed ROP buffer at any offset raises RopCodecError."""
    data = build_rop_buffer(BACKOFF_ROPS, [0x28])
    for cut in range(len(data)):
        with pytest.raises(RopCodecError):
            parse_rop_buffers(data[:cut])


def test_logon_request_matches_hand_written_layout() -> None:
    """RopLogonRequest encodes Outlook's private logon with EssdnSize counting the NUL, and decodes back."""
    request = RopLogonRequest(ALICE_DN)
    assert request.encode() == LOGON_REQUEST
    assert RopLogonRequest.decode(LOGON_REQUEST) == request
    rops = LOGON_REQUEST + b"\x01\x00\x00"  # followed by another ROP in a RopsList
    assert RopLogonRequest.decode_from(rops) == (request, len(LOGON_REQUEST))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (h("FF 00 00 01 0C000001 00000000 0100 00"), "not RopLogon"),
        (h("FE 00 00 01 0C000001 00000000 0300") + b"ab\x01", "only NUL"),
        (h("FE 00 00 01 0C000001 00000000 0300") + b"a\x00\x00", "only NUL"),
        (h("FE 00 00 01 0C000001 00000000 0000"), "only NUL"),
        (h("FE 00 00 01 0C000001 00000000 0200") + b"\xe9\x00", "ASCII"),
        (LOGON_REQUEST + b"\x00", "trailing"),
    ],
)
def test_malformed_logon_requests_raise(data: bytes, match: str) -> None:
    """Wrong RopId, a badly terminated Essdn, non-ASCII and trailing bytes are rejected."""
    with pytest.raises(RopCodecError, match=match):
        RopLogonRequest.decode(data)


def test_logon_success_decodes_every_field() -> None:
    """The 166-byte private-mailbox success response decodes field by field and re-encodes exactly."""
    assert len(LOGON_SUCCESS) == 166
    response = decode_rop_logon_response(LOGON_SUCCESS)
    assert isinstance(response, LogonSuccess)
    assert response.folder_ids == tuple(range(1, 14))
    assert response.response_flags == 0x07
    assert response.mailbox_guid == MAILBOX_GUID
    assert response.repl_id == 1
    assert response.repl_guid == REPL_GUID
    assert response.logon_time == LogonTime(30, 20, 10, 1, 14, 4, 2025)
    assert response.gwart_time == 0x0807060504030201
    assert response.store_state == 0
    assert response.return_value == 0
    assert response.encode() == LOGON_SUCCESS


def test_logon_time_from_datetime_counts_sunday_as_zero() -> None:
    """LogonTime.from_datetime maps Monday 14 April 2025 to DayOfWeek 1 and encodes 8 bytes."""
    logon_time = LogonTime.from_datetime(datetime(2025, 4, 14, 10, 20, 30))
    assert logon_time.encode() == h("1e 14 0a 01 0e 04 e907")
    assert LogonTime.from_datetime(datetime(2025, 4, 13)).day_of_week == 0


def test_logon_redirect_server_name_size_includes_nul() -> None:
    """ecWrongServer responses carry ServerNameSize = characters + 1 and decode to LogonRedirect."""
    response = decode_rop_logon_response(LOGON_REDIRECT)
    assert response == LogonRedirect("mb2.lab.test")
    assert response.return_value == 0x478
    assert response.encode() == LOGON_REDIRECT
    with pytest.raises(RopCodecError, match="only NUL"):
        decode_rop_logon_response(h("FE 00 78040000 01 0c") + b"mb2.lab.test\x00")


def test_logon_error_form() -> None:
    """Any other non-zero ReturnValue is the 6-byte error form, named from MS-OXCDATA."""
    response = decode_rop_logon_response(LOGON_ERROR)
    assert response == LogonError(0x80040111)
    assert isinstance(response, LogonError)
    assert response.error_name == "ecLoginFailure"
    assert response.encode() == LOGON_ERROR
    with pytest.raises(ValueError, match="ecWrongServer"):
        LogonError(0x478)


@pytest.mark.parametrize("data", [LOGON_SUCCESS, LOGON_REDIRECT, LOGON_ERROR])
def test_every_truncation_of_a_logon_response_raises(data: bytes) -> None:
    """Cutting any RopLogon response form at any offset raises RopCodecError; trailing bytes too."""
    for cut in range(len(data)):
        with pytest.raises(RopCodecError):
            decode_rop_logon_response(data[:cut])
    with pytest.raises(RopCodecError, match="trailing"):
        decode_rop_logon_response(data + b"\x00")


def test_every_truncation_of_a_logon_request_raises() -> None:
    """Cutting the RopLogon request at any offset raises RopCodecError."""
    for cut in range(len(LOGON_REQUEST)):
        with pytest.raises(RopCodecError):
            RopLogonRequest.decode(LOGON_REQUEST[:cut])


def test_public_logon_success_and_bad_offsets_are_refused() -> None:
    """A success response without the Private flag and offsets outside the buffer raise."""
    public = bytearray(LOGON_SUCCESS)
    public[6] = 0x00
    with pytest.raises(RopCodecError, match="public-folder"):
        decode_rop_logon_response(bytes(public))
    with pytest.raises(RopCodecError, match="offset"):
        decode_rop_logon_response_from(LOGON_ERROR, 7)
    with pytest.raises(RopCodecError, match="offset"):
        decode_rop_logon_response_from(LOGON_ERROR, -1)


def test_constructors_reject_unencodable_values() -> None:
    """Out-of-range fields, too many characters and the wrong number of folder ids are refused."""
    with pytest.raises(ValueError, match="logon_id"):
        RopLogonRequest(ALICE_DN, logon_id=256)
    with pytest.raises(ValueError, match="254"):
        LogonRedirect("x" * 255)
    with pytest.raises(ValueError, match="13"):
        LogonSuccess((1, 2), LogonTime(0, 0, 0, 0, 1, 1, 2025))
    with pytest.raises(ValueError, match="u32"):
        RopPayload(b"", (1 << 32,))


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (0x00000000, "ecNone"),
        (0x00000478, "ecWrongServer"),
        (0x80040111, "ecLoginFailure"),
        (0x000003EB, "ecUnknownUser"),
        (0x000003F2, "ecLoginPerm"),
        (0x80070005, "ecAccessDenied"),
        (0x0000047F, "ecServerPaused"),
        (0x00000480, "ecServerBusy"),
        (0x0000050C, "ecMailboxInTransit"),
        (0x00000476, "ecMdbNotInit"),
        (0x8004010F, "ecNotFound"),
        (0x80040115, "ecNetwork"),
        (0x00012345, "0x00012345"),
    ],
)
def test_error_code_names(code: int, name: str) -> None:
    """Known MS-OXCDATA codes map to their ec* names; unknown ones fall back to 8-digit hex."""
    assert error_code_name(code) == name


def test_error_hierarchy() -> None:
    """RopCodecError is a MapiCodecError and therefore a ValueError."""
    assert issubclass(RopCodecError, MapiCodecError)
    assert issubclass(RopCodecError, ValueError)
