"""MAPI extensions for HTTP: request types, response codes, request ids, and the body codecs (no I/O).

Follows [MS-OXCMAPIHTTP] v20181211:

- 2.2.3.3.1 X-RequestType values (:class:`RequestType`), 2.2.3.3.3 X-ResponseCode table
  (:class:`ResponseCode`, :func:`describe_response_code` for any number a server sends),
  2.2.3.3.2 / 2.2.3.3.4 X-RequestId / X-ClientInfo ``{GUID}:<counter>`` values (:class:`GuidCounter`);
- the binary bodies of 2.2.4 (EMSMDB) and 2.2.5.1-2.2.5.2 (NSPI Bind/Unbind) are implemented in
  :mod:`~casprobe.protocols.mapiemsmdb` and :mod:`~casprobe.protocols.mapinspi` (shared primitives in
  :mod:`~casprobe.protocols.mapiwire`) and re-exported here, so ``mapihttp`` is the one import users need;
- the response framing (PROCESSING/PENDING/DONE meta-tags, 2.2.7) is in
  :mod:`~casprobe.protocols.mapiframing`.

Response bodies have two wire forms: success (StatusCode 0, ErrorCode, the type's fields, aux) and
failure (StatusCode != 0, aux only). A response object with ``status_code != 0`` must keep every
success-only field at its default; ``decode`` picks the form from the StatusCode it reads. Decoders are
strict: short buffers, trailing bytes, missing terminators and declared sizes larger than the data raise
:class:`MapiCodecError`; nothing is allocated beyond the input itself.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from casprobe.protocols.mapiemsmdb import (
    EXECUTE_FLAG_CHAIN,
    EXECUTE_FLAG_NO_COMPRESSION,
    EXECUTE_FLAG_NO_XOR_MAGIC,
    ConnectRequest,
    ConnectResponse,
    DisconnectRequest,
    DisconnectResponse,
    ExecuteRequest,
    ExecuteResponse,
    NotificationWaitRequest,
    NotificationWaitResponse,
)
from casprobe.protocols.mapinspi import (
    BIND_FLAG_ANONYMOUS_LOGIN,
    STAT_SIZE,
    BindRequest,
    BindResponse,
    UnbindRequest,
    UnbindResponse,
)
from casprobe.protocols.mapiwire import MapiCodecError

__all__ = [
    "BIND_FLAG_ANONYMOUS_LOGIN",
    "EMSMDB_REQUEST_TYPES",
    "EXECUTE_FLAG_CHAIN",
    "EXECUTE_FLAG_NO_COMPRESSION",
    "EXECUTE_FLAG_NO_XOR_MAGIC",
    "NSPI_REQUEST_TYPES",
    "STAT_SIZE",
    "BindRequest",
    "BindResponse",
    "ConnectRequest",
    "ConnectResponse",
    "DisconnectRequest",
    "DisconnectResponse",
    "ExecuteRequest",
    "ExecuteResponse",
    "GuidCounter",
    "MapiCodecError",
    "NotificationWaitRequest",
    "NotificationWaitResponse",
    "RequestType",
    "ResponseCode",
    "UnbindRequest",
    "UnbindResponse",
    "describe_response_code",
    "format_guid_counter",
    "parse_guid_counter",
    "parse_response_code",
]


# --------------------------------------------------------------------------- X-ResponseCode


class ResponseCode(IntEnum):
    """X-ResponseCode values, [MS-OXCMAPIHTTP] 2.2.3.3.3."""

    SUCCESS = 0
    UNKNOWN_FAILURE = 1
    INVALID_VERB = 2
    INVALID_PATH = 3
    INVALID_HEADER = 4
    INVALID_REQUEST_TYPE = 5
    INVALID_CONTEXT_COOKIE = 6
    MISSING_HEADER = 7
    ANONYMOUS_NOT_ALLOWED = 8
    TOO_LARGE = 9
    CONTEXT_NOT_FOUND = 10
    NO_PRIVILEGE = 11
    INVALID_REQUEST_BODY = 12
    MISSING_COOKIE = 13
    RESERVED = 14
    INVALID_SEQUENCE = 15
    ENDPOINT_DISABLED = 16
    INVALID_RESPONSE = 17
    ENDPOINT_SHUTTING_DOWN = 18

    @property
    def spec_name(self) -> str:
        """The spec's name for this code, e.g. ``"Context Not Found"``."""
        return _RESPONSE_CODE_NAMES[self]


_RESPONSE_CODE_NAMES: dict[ResponseCode, str] = {
    ResponseCode.SUCCESS: "Success",
    ResponseCode.UNKNOWN_FAILURE: "Unknown Failure",
    ResponseCode.INVALID_VERB: "Invalid Verb",
    ResponseCode.INVALID_PATH: "Invalid Path",
    ResponseCode.INVALID_HEADER: "Invalid Header",
    ResponseCode.INVALID_REQUEST_TYPE: "Invalid Request Type",
    ResponseCode.INVALID_CONTEXT_COOKIE: "Invalid Context Cookie",
    ResponseCode.MISSING_HEADER: "Missing Header",
    ResponseCode.ANONYMOUS_NOT_ALLOWED: "Anonymous Not Allowed",
    ResponseCode.TOO_LARGE: "Too Large",
    ResponseCode.CONTEXT_NOT_FOUND: "Context Not Found",
    ResponseCode.NO_PRIVILEGE: "No Privilege",
    ResponseCode.INVALID_REQUEST_BODY: "Invalid Request Body",
    ResponseCode.MISSING_COOKIE: "Missing Cookie",
    ResponseCode.RESERVED: "Reserved",
    ResponseCode.INVALID_SEQUENCE: "Invalid Sequence",
    ResponseCode.ENDPOINT_DISABLED: "Endpoint Disabled",
    ResponseCode.INVALID_RESPONSE: "Invalid Response",
    ResponseCode.ENDPOINT_SHUTTING_DOWN: "Endpoint Shutting Down",
}


def describe_response_code(code: int) -> str:
    """Human description of any X-ResponseCode number, e.g. ``"10 (Context Not Found)"``.

    Numbers outside the spec table (servers such as gromox emit their own) are described as unknown.
    """
    try:
        return f"{code} ({ResponseCode(code).spec_name})"
    except ValueError:
        return f"{code} (unknown X-ResponseCode)"


_MAX_RESPONSE_CODE_DIGITS = 10


def parse_response_code(value: str) -> int:
    """Parse an X-ResponseCode header value (decimal, surrounding blanks allowed) into an int.

    Unknown numbers are returned as plain ints; non-numeric or absurdly long values raise.
    """
    text = value.strip(" \t")
    if not text or len(text) > _MAX_RESPONSE_CODE_DIGITS or not text.isascii() or not text.isdigit():
        raise MapiCodecError(f"malformed X-ResponseCode value {value[:40]!r}")
    return int(text)


# --------------------------------------------------------------------------- X-RequestType


class RequestType(StrEnum):
    """X-RequestType values, [MS-OXCMAPIHTTP] 2.2.3.3.1 (PING serves both endpoints)."""

    # mailbox server endpoint (EMSMDB)
    CONNECT = "Connect"
    EXECUTE = "Execute"
    DISCONNECT = "Disconnect"
    NOTIFICATION_WAIT = "NotificationWait"
    PING = "PING"
    # address book server endpoint (NSPI)
    BIND = "Bind"
    UNBIND = "Unbind"
    COMPARE_MIDS = "CompareMIds"
    DN_TO_MID = "DNToMId"
    GET_MATCHES = "GetMatches"
    GET_PROP_LIST = "GetPropList"
    GET_PROPS = "GetProps"
    GET_SPECIAL_TABLE = "GetSpecialTable"
    GET_TEMPLATE_INFO = "GetTemplateInfo"
    MOD_LINK_ATT = "ModLinkAtt"
    MOD_PROPS = "ModProps"
    QUERY_COLUMNS = "QueryColumns"
    QUERY_ROWS = "QueryRows"
    RESOLVE_NAMES = "ResolveNames"
    RESORT_RESTRICTION = "ResortRestriction"
    SEEK_ENTRIES = "SeekEntries"
    UPDATE_STAT = "UpdateStat"
    GET_MAILBOX_URL = "GetMailboxUrl"
    GET_ADDRESS_BOOK_URL = "GetAddressBookUrl"


EMSMDB_REQUEST_TYPES: frozenset[RequestType] = frozenset(
    {
        RequestType.CONNECT,
        RequestType.EXECUTE,
        RequestType.DISCONNECT,
        RequestType.NOTIFICATION_WAIT,
        RequestType.PING,
    }
)
NSPI_REQUEST_TYPES: frozenset[RequestType] = frozenset(set(RequestType) - (EMSMDB_REQUEST_TYPES - {RequestType.PING}))


# --------------------------------------------------------------------------- X-RequestId / X-ClientInfo

_GUID_COUNTER_RE = re.compile(
    r"\{([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})\}:([0-9]{1,19})"
)
_MAX_GUID_COUNTER_LEN = 2 + 36 + 1 + 19


@dataclass(frozen=True, slots=True)
class GuidCounter:
    """An X-RequestId or X-ClientInfo value: a GUID and a decimal counter (2.2.3.3.2, 2.2.3.3.4)."""

    guid: uuid.UUID
    counter: int

    def __post_init__(self) -> None:
        if not 0 <= self.counter < 10**19:
            raise ValueError(f"counter out of range: {self.counter}")

    def header_value(self) -> str:
        """The header text, e.g. ``{E2EA6C1C-E61B-49E9-9CFB-38184F907552}:123456``."""
        return format_guid_counter(self.guid, self.counter)

    def next(self) -> GuidCounter:
        """The same GUID with the counter increased by one (next X-RequestId of a session)."""
        return GuidCounter(self.guid, self.counter + 1)


def format_guid_counter(guid: uuid.UUID, counter: int) -> str:
    """Format ``{GUID}:<n>`` with an upper-case braced GUID, as in the spec's examples."""
    if not 0 <= counter < 10**19:
        raise ValueError(f"counter out of range: {counter}")
    return f"{{{str(guid).upper()}}}:{counter}"


def parse_guid_counter(value: str) -> GuidCounter:
    """Parse an X-RequestId / X-ClientInfo value; anything but ``{GUID}:<digits>`` raises."""
    text = value.strip(" \t")
    match = _GUID_COUNTER_RE.fullmatch(text) if len(text) <= _MAX_GUID_COUNTER_LEN else None
    if match is None:
        raise MapiCodecError(f"malformed {{GUID}}:counter value {value[:80]!r}")
    return GuidCounter(uuid.UUID(match.group(1)), int(match.group(2)))
