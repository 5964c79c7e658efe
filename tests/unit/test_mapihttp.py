"""MAPI/HTTP codecs checked against byte layouts written by hand from [MS-OXCMAPIHTTP] 2.2.4, 2.2.5, 2.2.7, 4.x."""

from __future__ import annotations

import tracemalloc
import uuid
from datetime import UTC, datetime
from itertools import combinations, pairwise
from typing import Any

import pytest

from casprobe.protocols.mapiframing import (
    PENDING,
    PROCESSING,
    FramedResponseParser,
    build_done_block,
    build_framed_response,
    parse_framed,
)
from casprobe.protocols.mapihttp import (
    EMSMDB_REQUEST_TYPES,
    NSPI_REQUEST_TYPES,
    BindRequest,
    BindResponse,
    ConnectRequest,
    ConnectResponse,
    DisconnectRequest,
    DisconnectResponse,
    ExecuteRequest,
    ExecuteResponse,
    GuidCounter,
    MapiCodecError,
    NotificationWaitRequest,
    NotificationWaitResponse,
    RequestType,
    ResponseCode,
    UnbindRequest,
    UnbindResponse,
    describe_response_code,
    format_guid_counter,
    parse_guid_counter,
    parse_response_code,
)


def h(text: str) -> bytes:
    """Hex with spaces/newlines, as written in the spec's examples."""
    return bytes.fromhex("".join(text.split()))


ALICE_DN = "/o=LAB/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=alice"
# protocols.md 2.7 worked Connect body: UserDn\0, Flags 0, cp 1252, LcidSort 1033, LcidString 1033, aux 0.
CONNECT_REQUEST_BYTES = ALICE_DN.encode() + b"\x00" + h("00000000 e4040000 09040000 09040000 00000000")
# StatusCode 0, ErrorCode 0, PollsMax 60000, RetryCount 6, RetryDelay 10000, DnPrefix "/o=LAB", DisplayName
# "Al" (UTF-16LE), AuxiliaryBufferSize 2, aux "xy".
CONNECT_RESPONSE_BYTES = (
    h("00000000 00000000 60ea0000 06000000 10270000") + b"/o=LAB\x00" + h("4100 6c00 0000") + h("02000000") + b"xy"
)
EXECUTE_REQUEST_BYTES = h("03000000 04000000") + b"abcd" + h("08000100 00000000")
EXECUTE_RESPONSE_BYTES = h("00000000 00000000 00000000 03000000") + b"rop" + h("01000000") + b"A"
SERVER_GUID = uuid.UUID("E2EA6C1C-E61B-49E9-9CFB-38184F907552")
SERVER_GUID_LE = h("1c6ceae2 1be6 e949 9cfb 38184f907552")  # Data1..3 little-endian, Data4 as is
STAT = bytes(range(36))

# (class, hand-written bytes, expected decoded object)
SAMPLES: list[tuple[Any, bytes, Any]] = [
    (ConnectRequest, CONNECT_REQUEST_BYTES, ConnectRequest(ALICE_DN)),
    (  # LcidSort (de-DE 0x0407) precedes LcidString (en-US 0x0409); admin flag 1; 4 bytes of aux
        ConnectRequest,
        b"/o=X\x00" + h("01000000 e4040000 07040000 09040000 04000000") + b"\x01\x02\x03\x04",
        ConnectRequest("/o=X", 1, 1252, 0x0407, 0x0409, b"\x01\x02\x03\x04"),
    ),
    (
        ConnectResponse,
        CONNECT_RESPONSE_BYTES,
        ConnectResponse(0, 0, 60000, 6, 10000, "/o=LAB", "Al", b"xy"),
    ),
    (ConnectResponse, h("0a000000 01000000") + b"z", ConnectResponse(status_code=10, aux=b"z")),
    (ExecuteRequest, EXECUTE_REQUEST_BYTES, ExecuteRequest(b"abcd")),
    (ExecuteResponse, EXECUTE_RESPONSE_BYTES, ExecuteResponse(rop_buffer=b"rop", aux=b"A")),
    (ExecuteResponse, h("07000000 00000000"), ExecuteResponse(status_code=7)),
    (DisconnectRequest, h("02000000") + b"ab", DisconnectRequest(b"ab")),
    (DisconnectResponse, h("00000000 78040000 00000000"), DisconnectResponse(error_code=0x478)),
    (DisconnectResponse, h("01000000 00000000"), DisconnectResponse(status_code=1)),
    (NotificationWaitRequest, h("00000000 00000000"), NotificationWaitRequest()),
    (
        NotificationWaitResponse,
        h("00000000 00000000 01000000 00000000"),
        NotificationWaitResponse(event_pending=True),
    ),
    (BindRequest, h("00000000 00 00000000"), BindRequest()),
    (BindRequest, h("20000000 ff") + STAT + h("00000000"), BindRequest(0x20, STAT)),
    (BindResponse, h("00000000 00000000") + SERVER_GUID_LE + h("00000000"), BindResponse(server_guid=SERVER_GUID)),
    (BindResponse, h("0c000000 00000000"), BindResponse(status_code=12)),
    (UnbindRequest, h("00000000 00000000"), UnbindRequest()),
    (UnbindResponse, h("00000000 01000000 00000000"), UnbindResponse(error_code=1)),
]
SAMPLE_IDS = [f"{cls.__name__}-{i}" for i, (cls, _, _) in enumerate(SAMPLES)]


def test_connect_request_matches_the_101_byte_worked_example() -> None:
    """The default ConnectRequest for alice encodes to the 101-byte body of protocols.md 2.7."""
    assert len(CONNECT_REQUEST_BYTES) == 101
    assert ConnectRequest(ALICE_DN).encode() == CONNECT_REQUEST_BYTES


@pytest.mark.parametrize(("cls", "data", "expected"), SAMPLES, ids=SAMPLE_IDS)
def test_bodies_decode_hand_written_layouts(cls: Any, data: bytes, expected: Any) -> None:
    """Each body class decodes the spec-ordered bytes into the expected fields and encodes them back."""
    assert cls.decode(data) == expected
    assert expected.encode() == data


@pytest.mark.parametrize(("cls", "data", "expected"), SAMPLES, ids=SAMPLE_IDS)
def test_every_truncation_raises(cls: Any, data: bytes, expected: Any) -> None:
    """Cutting any body at any byte offset raises MapiCodecError, never another exception."""
    for cut in range(len(data)):
        with pytest.raises(MapiCodecError):
            cls.decode(data[:cut])


@pytest.mark.parametrize(("cls", "data", "expected"), SAMPLES, ids=SAMPLE_IDS)
def test_trailing_garbage_raises(cls: Any, data: bytes, expected: Any) -> None:
    """A byte after the auxiliary buffer is rejected."""
    with pytest.raises(MapiCodecError, match="trailing"):
        cls.decode(data + b"\x00")


def test_huge_declared_sizes_raise_without_allocating() -> None:
    """A 4 GiB RopBufferSize/AuxiliaryBufferSize on a tiny body fails fast and allocates next to nothing."""
    tracemalloc.start()
    try:
        with pytest.raises(MapiCodecError, match="exceeds"):
            ExecuteRequest.decode(h("03000000 ffffffff") + b"abcd")
        with pytest.raises(MapiCodecError, match="exceeds"):
            DisconnectRequest.decode(h("ffffffff 00"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_string_fields_are_strict() -> None:
    """Missing NUL terminators, non-ASCII str8 and broken UTF-16 are decoding errors."""
    with pytest.raises(MapiCodecError, match="NUL"):
        ConnectRequest.decode(b"/o=LAB")
    with pytest.raises(MapiCodecError, match="ASCII"):
        ConnectRequest.decode(b"/o=\xe9\x00" + h("00000000 e4040000 09040000 09040000 00000000"))
    head = h("00000000 00000000 00000000 00000000 00000000") + b"\x00"
    with pytest.raises(MapiCodecError, match="UTF-16"):
        ConnectResponse.decode(head + h("00d8 0000 00000000"))  # lone high surrogate
    with pytest.raises(MapiCodecError, match="terminator"):
        ConnectResponse.decode(head + h("41"))


def test_display_name_terminator_is_found_on_a_character_boundary() -> None:
    """A 00 00 pair straddling two UTF-16 code units is not taken as the DisplayName terminator."""
    head = h("00000000 00000000 00000000 00000000 00000000") + b"\x00"
    body = head + h("0100 0001 0000 00000000")  # U+0001 U+0100, then NUL
    assert ConnectResponse.decode(body).display_name == "\x01\u0100"


def test_failure_form_forbids_success_fields() -> None:
    """A response with status_code != 0 may not carry success-only fields (they are not on the wire)."""
    with pytest.raises(ValueError, match="failure form"):
        ConnectResponse(status_code=10, display_name="x")
    assert not ConnectResponse(status_code=10).is_success
    assert ConnectResponse().is_success


def test_notification_wait_event_pending_is_0_or_1() -> None:
    """EventPending values other than 0 and 1 are rejected."""
    with pytest.raises(MapiCodecError, match="EventPending"):
        NotificationWaitResponse.decode(h("00000000 00000000 02000000 00000000"))


def test_constructors_reject_unencodable_values() -> None:
    """Out-of-range integers, NUL in strings and a STAT of the wrong size cannot be built."""
    with pytest.raises(ValueError, match="u32"):
        ConnectRequest(ALICE_DN, flags=1 << 32)
    with pytest.raises(ValueError, match="NUL"):
        ConnectRequest("a\x00b")
    with pytest.raises(ValueError, match="36"):
        BindRequest(state=b"\x00" * 35)


def test_response_code_table_matches_spec() -> None:
    """The 19 X-ResponseCode values carry the spec's names; any number can be described."""
    assert [int(c) for c in ResponseCode] == list(range(19))
    assert ResponseCode(10).spec_name == "Context Not Found"
    assert ResponseCode.ENDPOINT_SHUTTING_DOWN.spec_name == "Endpoint Shutting Down"
    assert describe_response_code(15) == "15 (Invalid Sequence)"
    assert describe_response_code(99) == "99 (unknown X-ResponseCode)"


@pytest.mark.parametrize(("value", "expected"), [("0", 0), (" 10 ", 10), ("99", 99)])
def test_parse_response_code_accepts_decimal(value: str, expected: int) -> None:
    """X-ResponseCode header values parse to ints, unknown numbers included."""
    assert parse_response_code(value) == expected


@pytest.mark.parametrize("value", ["", "-1", "1a", "0x1", "1" * 11, "\u0661"])
def test_parse_response_code_rejects_garbage(value: str) -> None:
    """Non-decimal or overlong X-ResponseCode values raise MapiCodecError."""
    with pytest.raises(MapiCodecError):
        parse_response_code(value)


def test_request_type_sets() -> None:
    """EMSMDB has 5 request types, NSPI 19 plus PING, and PING belongs to both."""
    assert {t.value for t in EMSMDB_REQUEST_TYPES} == {"Connect", "Execute", "Disconnect", "NotificationWait", "PING"}
    assert len(NSPI_REQUEST_TYPES) == 20
    assert RequestType.PING in NSPI_REQUEST_TYPES
    assert RequestType("GetAddressBookUrl") in NSPI_REQUEST_TYPES


@pytest.mark.parametrize(
    ("text", "guid", "counter"),
    [
        ("{E2EA6C1C-E61B-49E9-9CFB-38184F907552}:123456", "e2ea6c1c-e61b-49e9-9cfb-38184f907552", 123456),
        ("{2EF33C39-49C8-421C-B876-CDF7F2AC3AA0}:123", "2ef33c39-49c8-421c-b876-cdf7f2ac3aa0", 123),
    ],
)
def test_guid_counter_round_trips_spec_examples(text: str, guid: str, counter: int) -> None:
    """The X-RequestId / X-ClientInfo examples of 2.2.3.3.2 and 2.2.3.3.4 parse and format back."""
    value = parse_guid_counter(text)
    assert value == GuidCounter(uuid.UUID(guid), counter)
    assert value.header_value() == text
    assert format_guid_counter(uuid.UUID(guid), counter) == text
    assert value.next().counter == counter + 1


@pytest.mark.parametrize(
    "text",
    ["E2EA6C1C-E61B-49E9-9CFB-38184F907552:1", "{E2EA6C1C-E61B-49E9-9CFB-38184F907552}", "{x}:1", "{" + "A" * 500],
)
def test_guid_counter_rejects_malformed(text: str) -> None:
    """Values without braces, counter or a valid GUID raise MapiCodecError."""
    with pytest.raises(MapiCodecError):
        parse_guid_counter(text)


# --------------------------------------------------------------------------- framing

START = datetime(2025, 4, 14, 10, 0, 0, tzinfo=UTC)
DONE_HEADERS = b"X-ResponseCode: 0\r\nX-ElapsedTime: 2\r\nX-StartTime: Mon, 14 Apr 2025 10:00:00 GMT\r\n"
# Shaped like the section 4.2 Execute exchange: PROCESSING, one PENDING keep-alive, DONE + headers + body.
SPEC_STREAM = b"PROCESSING\r\nPENDING\r\nDONE\r\n" + DONE_HEADERS + b"\r\n" + CONNECT_RESPONSE_BYTES


def _check_spec_stream(parser: FramedResponseParser) -> None:
    result = parser.finish()
    assert result.meta_tags == ("PROCESSING", "PENDING", "DONE")
    assert result.headers == (
        ("X-ResponseCode", "0"),
        ("X-ElapsedTime", "2"),
        ("X-StartTime", "Mon, 14 Apr 2025 10:00:00 GMT"),
    )
    assert result.body == CONNECT_RESPONSE_BYTES
    assert result.header("x-responsecode") == "0"
    assert result.pending_count == 1


def test_spec_chunk_sizes_match_meta_tags() -> None:
    """Section 4.2's chunk sizes (C for PROCESSING, 9 for PENDING) are the lengths of our meta-tag lines."""
    assert len(PROCESSING) == 0xC
    assert len(PENDING) == 0x9


def test_server_helpers_build_the_spec_layout() -> None:
    """build_framed_response produces PROCESSING, PENDING, DONE, the three additional headers and the body."""
    built = build_framed_response(CONNECT_RESPONSE_BYTES, pending=1, elapsed_ms=2, start_time=START)
    assert built == SPEC_STREAM
    assert build_done_block(b"", start_time=START).startswith(b"DONE\r\nX-ResponseCode: 0\r\n")


def test_server_helpers_refuse_header_injection() -> None:
    """Extra additional headers with CR/LF or a bad name are refused."""
    with pytest.raises(ValueError, match="invalid value"):
        build_done_block(b"", extra_headers=[("X-Foo", "a\r\nX-Evil: 1")])
    with pytest.raises(ValueError, match="invalid header name"):
        build_done_block(b"", extra_headers=[("X Foo", "a")])


def test_parser_is_independent_of_every_two_point_split() -> None:
    """Splitting the spec-shaped stream at any one or two positions yields the same result."""
    n = len(SPEC_STREAM)
    for cuts in [(), *((i,) for i in range(1, n)), *combinations(range(1, n, 3), 2)]:
        parser = FramedResponseParser()
        bounds = (0, *cuts, n)
        for a, b in pairwise(bounds):
            parser.feed(SPEC_STREAM[a:b])
        _check_spec_stream(parser)


def test_parser_byte_at_a_time_reports_tags_as_they_complete() -> None:
    """Fed one byte at a time, feed() returns each meta-tag exactly when its CRLF arrives."""
    parser = FramedResponseParser()
    seen = [tag for i in range(len(SPEC_STREAM)) for tag in parser.feed(SPEC_STREAM[i : i + 1])]
    assert seen == ["PROCESSING", "PENDING", "DONE"]
    _check_spec_stream(parser)


def test_parser_accepts_de_chunked_spec_transfer() -> None:
    """The chunked stream of section 4.2, de-chunked chunk by chunk, parses the same way."""
    final = b"DONE\r\n" + DONE_HEADERS + b"\r\n" + CONNECT_RESPONSE_BYTES
    last = f"{len(final):X}\r\n".encode() + final + b"\r\n"
    wire = b"C\r\nPROCESSING\r\n\r\n" + b"9\r\nPENDING\r\n\r\n" + last + b"0\r\n\r\n"
    parser = FramedResponseParser()
    pos = 0
    while True:
        eol = wire.index(b"\r\n", pos)
        size = int(wire[pos:eol], 16)
        if size == 0:
            break
        parser.feed(wire[eol + 2 : eol + 2 + size])
        pos = eol + 2 + size + 2
    _check_spec_stream(parser)


def test_parser_handles_a_bodiless_ping_and_done_first_when_allowed() -> None:
    """An empty body is fine; DONE without PROCESSING passes only with require_processing=False."""
    assert parse_framed(b"PROCESSING\r\nDONE\r\n\r\n").body == b""
    with pytest.raises(MapiCodecError, match="PROCESSING"):
        parse_framed(b"DONE\r\n\r\n")
    assert parse_framed(b"DONE\r\n\r\nx", require_processing=False).body == b"x"


@pytest.mark.parametrize(
    ("stream", "match"),
    [
        (b"PROCESSING\r\nWORKING\r\nDONE\r\n\r\n", "unknown meta-tag"),
        (b"processing\r\nDONE\r\n\r\n", "unknown meta-tag"),
        (b"PROCESSING\nDONE\r\n\r\n", "unknown meta-tag"),
        (b"PROCESSING\r\n\r\nDONE\r\n\r\n", "unknown meta-tag"),
        (b"PROCESSING\r\nPROCESSING\r\nDONE\r\n\r\n", "repeated"),
        (b"PROCESSING\r\nDONE\r\nX-ResponseCode 0\r\n\r\n", "malformed"),
        (b"PROCESSING\r\nDONE\r\nX Code: 0\r\n\r\n", "malformed"),
        (b"PROCESSING\r\nDONE\r\nX-Code: \xff\r\n\r\n", "non-ASCII"),
        (b"PROCESSING\r\nDONE\r\nX-Code: a\rb\r\n\r\n", "control"),
        (b"PROCESSING\r\nPENDING\r\n", "truncated.*before DONE"),
        (b"PROCESSING\r\nDONE\r\nX-ResponseCode: 0\r\n", "truncated.*additional headers"),
        (b"", "truncated"),
    ],
)
def test_parser_rejects_malformed_streams(stream: bytes, match: str) -> None:
    """Unknown or misplaced meta-tags, bad header lines and truncation raise MapiCodecError."""
    with pytest.raises(MapiCodecError, match=match):
        parse_framed(stream)


def test_parser_limits_are_enforced_before_the_line_ends() -> None:
    """Overlong lines fail as soon as the limit is passed; PENDING, header and body counts are capped."""
    parser = FramedResponseParser(max_meta_line=64)
    with pytest.raises(MapiCodecError, match="longer than 64"):
        parser.feed(b"P" * 66)
    parser = FramedResponseParser(max_header_line=20)
    with pytest.raises(MapiCodecError, match="longer than 20"):
        parser.feed(b"PROCESSING\r\nDONE\r\nX-" + b"a" * 30)
    with pytest.raises(MapiCodecError, match="longer than 20"):  # complete overlong line in one piece
        FramedResponseParser(max_header_line=20).feed(b"PROCESSING\r\nDONE\r\nX-A: " + b"a" * 30 + b"\r\n\r\n")
    with pytest.raises(MapiCodecError, match="PENDING"):
        parse_framed(b"PROCESSING\r\n" + PENDING * 4 + b"DONE\r\n\r\n", max_pending=3)
    with pytest.raises(MapiCodecError, match="header lines"):
        FramedResponseParser(max_header_lines=2).feed(b"PROCESSING\r\nDONE\r\n" + b"A: 1\r\n" * 3)
    with pytest.raises(MapiCodecError, match="larger than 8"):
        parse_framed(b"PROCESSING\r\nDONE\r\n\r\n" + b"x" * 9, max_body=8)


def test_line_of_exactly_the_limit_is_accepted_even_when_split_before_lf() -> None:
    """A line exactly max_meta_line long whose CRLF arrives split is not mistaken for an overlong one."""
    parser = FramedResponseParser(max_meta_line=10)
    parser.feed(b"PROCESSING\r")
    assert parser.feed(b"\nDONE\r\n\r\n") == ("PROCESSING", "DONE")
    assert parser.done


def test_feed_after_finish_raises() -> None:
    """The parser refuses data after finish()."""
    parser = FramedResponseParser()
    parser.feed(b"PROCESSING\r\nDONE\r\n\r\n")
    parser.finish()
    with pytest.raises(MapiCodecError, match="after finish"):
        parser.feed(b"x")
