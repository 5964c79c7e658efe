"""The mapi probe and MapiSession against scripted loopback servers (tests/hostile_servers.py).

Answers are written here from the specification, not taken from the lab: the POX mapiHttp settings follow
[MS-OXDSCLI] §4.4; MAPI/HTTP responses are chunked HTTP written byte by byte with the meta-tags and additional
headers of [MS-OXCMAPIHTTP] 2.2.7 / §4.2 (``PROCESSING``, ``PENDING``, ``DONE``, ``X-ResponseCode`` …); bodies
use the casprobe codecs (tested on their own in test_mapihttp.py / test_rops.py).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from casprobe.model import ErrorClass, ProbeResult, Target, TargetKind
from casprobe.net.tls import TlsOptions
from casprobe.net.transport import TransportOptions
from casprobe.probes import get_probe
from casprobe.probes.base import ProbeContext, ProbeSettings
from casprobe.probes.mapisession import MapiMailbox, MapiSession
from casprobe.protocols.mapierrors import EC_MDB_NOT_INIT, EC_UNKNOWN_USER
from casprobe.protocols.mapihttp import (
    ConnectResponse,
    DisconnectResponse,
    ExecuteResponse,
    NotificationWaitResponse,
)
from casprobe.protocols.rops import LogonError, LogonRedirect, LogonSuccess, LogonTime, build_rop_buffer
from tests.hostile_servers import (
    CertKit,
    HostileServer,
    LoopbackResolver,
    Reply,
    Request,
    endless,
    fixed,
    huge,
    raw,
    trickle,
    xml,
)

NAME = "mail.example.test"
USER_DN = "/o=Example/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=alice"
MAILBOX_ID = "9f0941f8-2a5b-4c4e-8a8d-0d9b1d0d4a11@example.test"
MAILBOX_GUID = uuid.UUID("9f0941f8-2a5b-4c4e-8a8d-0d9b1d0d4a11")
# Autodiscover hands out another name: the probe must keep the target's host and use only path and query.
MAILSTORE = f"https://elsewhere.example.test/mapi/emsmdb/?MailboxId={MAILBOX_ID}"


def pox(mailstore: str | None = MAILSTORE) -> bytes:
    """A POX settings answer with the mapiHttp block, shaped like [MS-OXDSCLI] §4.4."""
    block = (
        f'<Protocol Type="mapiHttp" Version="1"><MailStore><InternalUrl>{mailstore}</InternalUrl>'
        f"<ExternalUrl>{mailstore}</ExternalUrl></MailStore></Protocol>"
        if mailstore
        else "<Protocol><Type>EXCH</Type><Server>mb1.example.test</Server></Protocol>"
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">'
        '<Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a">'
        f"<User><DisplayName>Alice</DisplayName><LegacyDN>{USER_DN}</LegacyDN>"
        "<AutoDiscoverSMTPAddress>alice@example.test</AutoDiscoverSMTPAddress></User>"
        f"<Account><AccountType>email</AccountType><Action>settings</Action>{block}</Account>"
        "</Response></Autodiscover>"
    ).encode()


def chunked(*pieces: bytes) -> bytes:
    return b"".join(f"{len(p):X}\r\n".encode() + p + b"\r\n" for p in pieces if p) + b"0\r\n\r\n"


def done(body: bytes, code: int = 0) -> bytes:
    """DONE, the additional headers of 2.2.7 (as in the §4.2 example), an empty line, the body."""
    return (
        f"DONE\r\nX-ResponseCode: {code}\r\nX-ElapsedTime: 2\r\nX-StartTime: Mon, 07 Apr 2025 10:00:00 GMT\r\n\r\n"
    ).encode() + body


def mapi(
    *pieces: bytes, status: int = 200, code: int = 0, content_type: str = "application/mapi-http", cookie: str = ""
) -> Reply:
    """A chunked MAPI/HTTP answer whose inner stream is ``pieces`` (one chunk each), then the connection closes."""
    head = [
        f"HTTP/1.1 {status} Status",
        f"Content-Type: {content_type}",
        "Transfer-Encoding: chunked",
        f"X-ResponseCode: {code}",
        "X-ServerApplication: Exchange/15.02.1544.004",
        "X-ExpirationInfo: 900000",
        "X-PendingPeriod: 15000",
        "X-FEServer: CAS1",
        "X-CalculatedBETarget: mb2.example.test",
        "Connection: close",
    ]
    if cookie:
        head.append(f"Set-Cookie: {cookie}; path=/mapi/emsmdb; secure; HttpOnly")
    return raw(("\r\n".join(head) + "\r\n\r\n").encode() + chunked(*pieces))


def logon_success() -> bytes:
    when = LogonTime.from_datetime(datetime(2025, 4, 7, 10, 0, 0, tzinfo=UTC))
    rop = LogonSuccess(folder_ids=tuple(range(1, 14)), logon_time=when, mailbox_guid=MAILBOX_GUID).encode()
    return ExecuteResponse(rop_buffer=build_rop_buffer(rop, [0x11])).encode()


DEFAULTS: dict[str, Callable[[], Reply]] = {
    "connect": lambda: mapi(
        b"PROCESSING\r\n",
        done(ConnectResponse(polls_max=60000, dn_prefix="/o=Example/cn=MB2", display_name="Alice").encode()),
        cookie="MapiContext=ctx-1",
    ),
    "execute": lambda: mapi(b"PROCESSING\r\n", done(logon_success()), cookie="MapiSequence=seq-2"),
    "notificationwait": lambda: mapi(
        b"PROCESSING\r\n", b"PENDING\r\n", done(NotificationWaitResponse(event_pending=True).encode())
    ),
    "ping": lambda: mapi(b"PROCESSING\r\n", done(b"")),
    "disconnect": lambda: mapi(b"PROCESSING\r\n", done(DisconnectResponse().encode())),
}


def exchange_server(overrides: Mapping[str, Reply] | None = None, autodiscover: Reply | None = None) -> Callable:
    """Autodiscover + EMSMDB, each request type answered by DEFAULTS unless overridden."""
    table = dict(overrides or {})

    def handle(request: Request) -> Reply:
        if request.path.lower().startswith("/autodiscover/"):
            return autodiscover or xml(pox())
        if request.path.lower().startswith("/mapi/emsmdb"):
            kind = (request.header("x-requesttype") or "").lower()
            return table[kind] if kind in table else DEFAULTS[kind]()
        return fixed(404)

    return handle


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> CertKit:
    return CertKit(tmp_path_factory.mktemp("mapi-certs"))


@pytest.fixture
def serve(kit: CertKit) -> Iterator[Callable[..., HostileServer]]:
    servers: list[HostileServer] = []

    def start(handler: Callable[[Request], Reply]) -> HostileServer:
        server = HostileServer(handler, kit, names=[NAME])
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def context(server: HostileServer, kit: CertKit, *, timeout_s: float = 5.0, wait_s: float = 0.0) -> ProbeContext:
    settings = ProbeSettings(
        mailbox="alice@example.test",
        transport=TransportOptions(tls=TlsOptions(ca_file=kit.ca_file), timeout_s=timeout_s),
        timeout_s=timeout_s,
        mapi_notification_wait_s=wait_s,
    )
    target = Target(NAME, TargetKind.SERVER, server.port)
    return ProbeContext(target, settings, LoopbackResolver([server.pin(NAME)]), time.monotonic() + timeout_s)


def run(server: HostileServer, kit: CertKit, **kw: float) -> ProbeResult:
    return get_probe("mapi")(context(server, kit, **kw))


def kinds(server: HostileServer) -> list[str]:
    return [r.header("x-requesttype") or r.path for r in server.requests]


# --------------------------------------------------------------------------------------------- the happy path


def test_healthy_server_gives_a_successful_probe_with_outlook_headers(serve: Callable, kit: CertKit) -> None:
    """Autodiscover, Connect, Execute (RopLogon), Disconnect succeed; requests carry Outlook's headers and cookies."""
    server = serve(exchange_server())
    result = run(server, kit)
    assert result.success, result.detail
    assert kinds(server) == ["/autodiscover/autodiscover.xml", "Connect", "Execute", "Disconnect"]
    mapi_requests = server.requests[1:]
    assert all(r.target == f"/mapi/emsmdb/?MailboxId={MAILBOX_ID}" for r in mapi_requests)
    assert all(r.header("host") == f"{NAME}:{server.port}" for r in mapi_requests)
    ids = [re.fullmatch(r"\{([0-9A-F-]{36})\}:(\d+)", r.header("x-requestid") or "") for r in mapi_requests]
    assert all(ids)
    assert len({m.group(1) for m in ids if m}) == 1
    assert [int(m.group(2)) for m in ids if m] == [1, 2, 3]
    assert all(r.header("x-clientapplication") == "Outlook/16.0.17928.20114" for r in mapi_requests)
    assert all(r.header("content-type") == "application/mapi-http" for r in mapi_requests)
    assert mapi_requests[0].header("cookie") is None
    assert mapi_requests[1].header("cookie") == "MapiContext=ctx-1"
    assert mapi_requests[2].header("cookie") == "MapiContext=ctx-1; MapiSequence=seq-2"
    assert mapi_requests[0].body.startswith(USER_DN.encode() + b"\0")
    assert USER_DN.encode() in mapi_requests[1].body  # the RopLogon Essdn
    assert result.fact("mapi.mailbox_id") == MAILBOX_ID
    assert result.fact("mapi.mailstore_url") == MAILSTORE
    assert result.fact("mapi.server_application") == "Exchange/15.02.1544.004"
    assert result.fact("mapi.mailbox_guid") == str(MAILBOX_GUID)
    assert result.fact("mapi.logon_time") == "2025-04-07T10:00:00"
    assert (result.fe_server, result.be_server) == ("CAS1", "mb2.example.test")
    assert result.steps[1].name.endswith("(Connect)")
    assert result.phases.connect is not None


def test_notification_wait_and_ping_report_event_pending(serve: Callable, kit: CertKit) -> None:
    """With a wait configured, NotificationWait's EventPending and keep-alive count become facts, then PING runs."""
    server = serve(exchange_server())
    result = run(server, kit, wait_s=2.0)
    assert result.success, result.detail
    assert kinds(server)[1:] == ["Connect", "Execute", "NotificationWait", "PING", "Disconnect"]
    assert result.fact("mapi.notificationwait.event_pending") == "1"
    assert result.fact("mapi.notificationwait.keepalives") == "1"


def test_meta_tags_split_across_chunks_and_keepalives_are_parsed(serve: Callable, kit: CertKit) -> None:
    """PROCESSING, several PENDING and DONE cut at arbitrary chunk boundaries still give the Connect answer."""
    stream = b"PROCESSING\r\n" + b"PENDING\r\n" * 3 + done(ConnectResponse(display_name="Alice").encode())
    pieces = [stream[i : i + 5] for i in range(0, len(stream), 5)]
    server = serve(exchange_server({"connect": mapi(*pieces, cookie="MapiContext=c")}))
    result = run(server, kit)
    assert result.success, result.detail


# --------------------------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("code", "name", "disconnects"),
    [(10, "Context Not Found", False), (15, "Invalid Sequence", True)],
)
def test_non_zero_response_code_in_the_done_block_is_protocol(
    serve: Callable, kit: CertKit, code: int, name: str, disconnects: bool
) -> None:
    """HTTP 200 + X-ResponseCode 0, then a failure code in DONE's headers: protocol with the spec name."""
    server = serve(exchange_server({"execute": mapi(b"PROCESSING\r\n", b"PENDING\r\n", done(b"", code))}))
    result = run(server, kit)
    assert not result.success
    assert result.error_class is ErrorClass.PROTOCOL
    assert f"{code} ({name})" in result.detail
    assert result.detail.startswith("Execute")
    assert ("Disconnect" in kinds(server)) is disconnects


def test_non_zero_response_code_header_is_protocol_with_its_name(serve: Callable, kit: CertKit) -> None:
    """A text/html failure page with X-ResponseCode 6 on Connect: protocol, "Invalid Context Cookie", no session."""
    page = mapi(b"<html>bad cookie</html>", code=6, content_type="text/html")
    server = serve(exchange_server({"connect": page}))
    result = run(server, kit)
    assert result.error_class is ErrorClass.PROTOCOL
    assert "6 (Invalid Context Cookie)" in result.detail
    assert kinds(server)[1:] == ["Connect"]


def test_connect_error_code_is_protocol_and_named(serve: Callable, kit: CertKit) -> None:
    """Connect ErrorCode ecMdbNotInit (a database being moved) is protocol, named, and nothing else is sent."""
    body = ConnectResponse(error_code=EC_MDB_NOT_INIT).encode()
    server = serve(exchange_server({"connect": mapi(b"PROCESSING\r\n", done(body))}))
    result = run(server, kit)
    assert result.error_class is ErrorClass.PROTOCOL
    assert "ecMdbNotInit" in result.detail
    assert result.fact("mapi.connect.error_code") == "ecMdbNotInit"
    assert kinds(server)[1:] == ["Connect"]


def test_logon_redirect_names_the_server_and_still_disconnects(serve: Callable, kit: CertKit) -> None:
    """RopLogon ecWrongServer (redirect form) is protocol with the server it points to; Disconnect follows."""
    rop = LogonRedirect("/o=Example/cn=Servers/cn=mb3.example.test").encode()
    body = ExecuteResponse(rop_buffer=build_rop_buffer(rop, [0xFFFFFFFF])).encode()
    server = serve(exchange_server({"execute": mapi(b"PROCESSING\r\n", done(body))}))
    result = run(server, kit)
    assert result.error_class is ErrorClass.PROTOCOL
    assert "ecWrongServer" in result.detail
    assert "mb3.example.test" in result.detail
    assert result.fact("mapi.logon.redirect_server") == "/o=Example/cn=Servers/cn=mb3.example.test"
    assert kinds(server)[-1] == "Disconnect"


def test_other_logon_errors_are_protocol_with_their_name(serve: Callable, kit: CertKit) -> None:
    """A RopLogon ReturnValue other than success or redirect is protocol with its ec* name."""
    body = ExecuteResponse(rop_buffer=build_rop_buffer(LogonError(EC_UNKNOWN_USER).encode(), [0xFFFFFFFF])).encode()
    server = serve(exchange_server({"execute": mapi(b"PROCESSING\r\n", done(body))}))
    result = run(server, kit)
    assert result.error_class is ErrorClass.PROTOCOL
    assert "ecUnknownUser" in result.detail


@pytest.mark.parametrize(
    ("reply", "error_class", "words"),
    [
        (fixed(503, b"Service Unavailable", [("Content-Type", "text/html")]), ErrorClass.HTTP_STATUS, "HTTP 503"),
        (fixed(401, b"", [("WWW-Authenticate", "NTLM")]), ErrorClass.AUTH, "HTTP 401"),
        (fixed(404, b"", [("X-CasErrorCode", "MailboxGuidWithDomainNotFound")]), ErrorClass.HTTP_STATUS, "Mailbox"),
    ],
)
def test_http_failures_of_connect(
    serve: Callable, kit: CertKit, reply: Reply, error_class: ErrorClass, words: str
) -> None:
    """503 is http_status, 401 is auth, 404 with X-CasErrorCode is http_status naming the code."""
    server = serve(exchange_server({"connect": reply}))
    result = run(server, kit)
    assert result.error_class is error_class
    assert words in result.detail


@pytest.mark.parametrize(
    ("pieces", "words"),
    [
        ((b"PROCESSING\r\n", done(ConnectResponse(display_name="Alice").encode())[:-7]), "malformed response body"),
        ((b"PROCESSING\r\n", b"PENDING\r\n"), "truncated"),
        ((b"<html><body>not framed</body></html>",), "framing"),
        ((b"PROCESSING\r\nDONE\r\nX-ResponseCode: zero\r\n\r\n",), "X-ResponseCode"),
    ],
)
def test_malformed_or_truncated_mapi_bodies_are_protocol(
    serve: Callable, kit: CertKit, pieces: tuple[bytes, ...], words: str
) -> None:
    """A truncated body, a stream ending before DONE, unframed HTML, a bad late header: protocol, no traceback."""
    server = serve(exchange_server({"connect": mapi(*pieces, cookie="MapiContext=c")}))
    result = run(server, kit)
    assert result.error_class is ErrorClass.PROTOCOL
    assert words in result.detail


def test_trickling_body_times_out_within_the_deadline(serve: Callable, kit: CertKit) -> None:
    """A Connect answer trickling one byte at a time ends as timeout at the probe's deadline, not later."""
    server = serve(exchange_server({"connect": trickle(0.05, content_type="application/mapi-http")}))
    started = time.monotonic()
    result = run(server, kit, timeout_s=2.0)
    assert result.error_class is ErrorClass.TIMEOUT
    assert time.monotonic() - started < 3.0


def test_autodiscover_failure_fails_the_probe_with_its_class(serve: Callable, kit: CertKit) -> None:
    """A 503 from Autodiscover fails the mapi probe as http_status before any MAPI request."""
    server = serve(exchange_server(autodiscover=fixed(503, b"down")))
    result = run(server, kit)
    assert result.error_class is ErrorClass.HTTP_STATUS
    assert result.detail.startswith("Autodiscover")
    assert kinds(server) == ["/autodiscover/autodiscover.xml"]


def test_autodiscover_without_mapi_http_is_content(serve: Callable, kit: CertKit) -> None:
    """Settings without a mapiHttp Protocol block: content (MAPI over HTTP not offered), no MAPI request."""
    server = serve(exchange_server(autodiscover=xml(pox(None))))
    result = run(server, kit)
    assert result.error_class is ErrorClass.CONTENT
    assert "mapiHttp" in result.detail


# --------------------------------------------------------------------------------------------- MapiSession


def test_session_reconnect_after_context_lost_sends_old_cookies_and_replaces_them(
    serve: Callable, kit: CertKit, tmp_path: Path
) -> None:
    """After X-ResponseCode 10 the session is disconnected; a new Connect sends the old cookies, keeps only new ones."""
    connects = iter(["MapiContext=first", "MapiContext=second"])

    def handler(request: Request) -> Reply:
        kind = (request.header("x-requesttype") or "").lower()
        if kind == "connect":
            return mapi(b"PROCESSING\r\n", done(ConnectResponse().encode()), cookie=next(connects))
        if kind == "execute":
            return mapi(b"<html>gone</html>", code=10, content_type="text/html")
        return DEFAULTS[kind]()

    server = serve(handler)
    ctx = context(server, kit)
    with ctx.client() as client:
        session = MapiSession(client, MapiMailbox(USER_DN, f"/mapi/emsmdb/?MailboxId={MAILBOX_ID}", MAILBOX_ID))
        assert session.connect().ok
        assert session.connected
        lost = session.execute_logon()
        assert lost.context_lost
        assert not session.connected
        again = session.connect()
        assert again.ok
        assert session.cookies == {"MapiContext": "second"}
    assert server.requests[2].header("cookie") == "MapiContext=first"
    infos = [r.header("x-clientinfo") or "" for r in server.requests]
    assert infos[0].endswith(":1")
    assert infos[2].endswith(":2")
    assert infos[0][:38] == infos[2][:38]
    request_ids = [r.header("x-requestid") or "" for r in server.requests]
    assert request_ids[2].endswith(":1")
    assert request_ids[0][:38] != request_ids[2][:38]


@pytest.mark.parametrize("reply", [huge(50 * 1024 * 1024, "application/mapi-http"), endless("application/mapi-http")])
def test_huge_or_endless_answers_are_cut_at_the_body_limit(serve: Callable, kit: CertKit, reply: Reply) -> None:
    """A 50 MB or never-ending Connect answer stops at the session's 1 MiB limit: content, quickly, no traceback."""
    server = serve(exchange_server({"connect": reply}))
    started = time.monotonic()
    result = run(server, kit)
    assert result.error_class is ErrorClass.CONTENT
    assert "larger than" in result.detail
    assert time.monotonic() - started < 3.0
