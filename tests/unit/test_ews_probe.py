"""The ews probe against scripted loopback servers (tests/hostile_servers.py).

Answers are written here following the published structures (not copied): the response envelope and
``ServerVersionInfo`` of [MS-OXWSCDATA] (attribute form, as in exchangelib ``tests/test_version.py``), GetFolder /
FindItem messages as protocols.md §3.2 lists the minimal answers exchangelib accepts, and the ErrorServerBusy fault
with ``BackOffMilliseconds`` shaped like exchangelib ``tests/test_services.py`` ``test_error_server_busy``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from casprobe.model import ErrorClass, ProbeResult, Target, TargetKind
from casprobe.net.tls import TlsOptions
from casprobe.net.transport import TransportOptions
from casprobe.probes import get_probe
from casprobe.probes.base import ProbeContext, ProbeSettings
from tests.hostile_servers import CertKit, HostileServer, LoopbackResolver, Reply, Request, fixed, trickle, xml

NAME = "mail.example.test"
MAILBOX = "alice@example.test"
S = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
E = "http://schemas.microsoft.com/exchange/services/2006/errors"
SVI = (
    '<h:ServerVersionInfo xmlns:h="http://schemas.microsoft.com/exchange/services/2006/types" MajorVersion="15" '
    'MinorVersion="2" MajorBuildNumber="1118" MinorBuildNumber="7" Version="V2017_07_11"/>'
)


def envelope(body: str, header: str = SVI) -> str:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{S}"><s:Header>{header}</s:Header>'
        f'<s:Body xmlns:m="{M}" xmlns:t="{T}">{body}</s:Body></s:Envelope>'
    )


def message(op: str, response_class: str = "Success", code: str = "NoError", payload: str = "") -> str:
    text = "" if code == "NoError" else f"<m:MessageText>{code} happened</m:MessageText>"
    return (
        f'<m:{op}Response><m:ResponseMessages><m:{op}ResponseMessage ResponseClass="{response_class}">'
        f"{text}<m:ResponseCode>{code}</m:ResponseCode>{payload}</m:{op}ResponseMessage>"
        f"</m:ResponseMessages></m:{op}Response>"
    )


GET_FOLDER = message(
    "GetFolder",
    payload='<m:Folders><t:Folder><t:FolderId Id="AAMk=" ChangeKey="AQAA"/><t:DisplayName>Inbox</t:DisplayName>'
    "<t:TotalCount>12</t:TotalCount><t:ChildFolderCount>0</t:ChildFolderCount><t:UnreadCount>3</t:UnreadCount>"
    "</t:Folder></m:Folders>",
)
FIND_ITEM = message(
    "FindItem",
    payload='<m:RootFolder TotalItemsInView="12" IncludesLastItemInRange="false"><t:Items><t:Message>'
    '<t:ItemId Id="AAMkItem=" ChangeKey="CQAA"/><t:Subject>hello</t:Subject></t:Message></t:Items></m:RootFolder>',
)
BUSY_FAULT = (
    f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{S}"><s:Body><s:Fault>'
    '<faultcode xmlns:a="http://schemas.microsoft.com/exchange/services/2006/types">a:ErrorServerBusy</faultcode>'
    '<faultstring xml:lang="en-US">The server cannot service this request right now. Try again later.</faultstring>'
    f'<detail><e:ResponseCode xmlns:e="{E}">ErrorServerBusy</e:ResponseCode>'
    f'<e:Message xmlns:e="{E}">The server cannot service this request right now. Try again later.</e:Message>'
    f'<t:MessageXml xmlns:t="{T}"><t:Value Name="BackOffMilliseconds">297749</t:Value></t:MessageXml>'
    "</detail></s:Fault></s:Body></s:Envelope>"
)


def ews_server(get_folder: Reply | None = None, find_item: Reply | None = None) -> Callable[[Request], Reply]:
    def handle(request: Request) -> Reply:
        if request.path.lower() != "/ews/exchange.asmx":
            return fixed(404)
        if b"FindItem" in request.body:
            return find_item or xml(envelope(FIND_ITEM))
        return get_folder or xml(envelope(GET_FOLDER))

    return handle


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> CertKit:
    return CertKit(tmp_path_factory.mktemp("ews-certs"))


@pytest.fixture
def serve(kit: CertKit) -> Iterator[Callable[..., HostileServer]]:
    servers: list[HostileServer] = []

    def start(handler: Callable[[Request], Reply]) -> HostileServer:
        servers.append(HostileServer(handler, kit, names=[NAME]))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def run(server: HostileServer, kit: CertKit, timeout_s: float = 5.0) -> ProbeResult:
    settings = ProbeSettings(
        mailbox=MAILBOX,
        transport=TransportOptions(tls=TlsOptions(ca_file=kit.ca_file), timeout_s=timeout_s),
        timeout_s=timeout_s,
    )
    target = Target(NAME, TargetKind.SERVER, server.port)
    ctx = ProbeContext(target, settings, LoopbackResolver([server.pin(NAME)]), time.monotonic() + timeout_s)
    return get_probe("ews")(ctx)


def test_healthy_server_gives_counts_and_server_version(serve: Callable, kit: CertKit) -> None:
    """GetFolder inbox then FindItem (1 item) succeed; counts and ServerVersionInfo become facts."""
    server = serve(ews_server())
    result = run(server, kit)
    assert result.success, result.detail
    assert [r.target for r in server.requests] == ["/EWS/Exchange.asmx"] * 2
    first, second = server.requests
    assert first.header("content-type") == "text/xml; charset=utf-8"
    assert first.header("x-anchormailbox") == MAILBOX
    assert b"GetFolder" in first.body
    assert b'Id="inbox"' in first.body
    assert MAILBOX.encode() in first.body
    assert b'Traversal="Shallow"' in second.body
    assert b'MaxEntriesReturned="1"' in second.body
    assert result.fact("ews.server_version") == "15.2.1118.7"
    assert result.fact("ews.version") == "V2017_07_11"
    assert (result.fact("ews.inbox.total_count"), result.fact("ews.inbox.unread_count")) == ("12", "3")
    assert result.fact("ews.finditem.total_items_in_view") == "12"
    assert result.steps[0].name.endswith("(GetFolder)")
    assert result.phases.tls is not None


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        ("ErrorMailboxStoreUnavailable", ErrorClass.PROTOCOL),
        ("ErrorMailboxMoveInProgress", ErrorClass.PROTOCOL),
        ("ErrorNonExistentMailbox", ErrorClass.CONTENT),
        ("ErrorAccessDenied", ErrorClass.AUTH),
    ],
)
def test_per_message_errors_are_classified(serve: Callable, kit: CertKit, code: str, error_class: ErrorClass) -> None:
    """A GetFolder message of class Error gets the documented class and names its ResponseCode."""
    server = serve(ews_server(get_folder=xml(envelope(message("GetFolder", "Error", code)))))
    result = run(server, kit)
    assert result.error_class is error_class
    assert code in result.detail
    assert result.fact("ews.server_version") == "15.2.1118.7"


def test_error_in_find_item_after_get_folder_keeps_the_inbox_facts(serve: Callable, kit: CertKit) -> None:
    """GetFolder succeeds and FindItem fails: the probe fails with FindItem's error, inbox counts are kept."""
    server = serve(ews_server(find_item=xml(envelope(message("FindItem", "Error", "ErrorMailboxStoreUnavailable")))))
    result = run(server, kit)
    assert result.error_class is ErrorClass.PROTOCOL
    assert "ErrorMailboxStoreUnavailable" in result.detail
    assert result.fact("ews.inbox.total_count") == "12"


def test_server_busy_fault_says_how_long_to_back_off(serve: Callable, kit: CertKit) -> None:
    """An HTTP 500 ErrorServerBusy SOAP fault is protocol and its detail gives BackOffMilliseconds in seconds."""
    server = serve(ews_server(get_folder=xml(BUSY_FAULT, status=500)))
    result = run(server, kit)
    assert result.error_class is ErrorClass.PROTOCOL
    assert "ErrorServerBusy" in result.detail
    assert "back off 297.7 s" in result.detail


@pytest.mark.parametrize(
    ("reply", "error_class"),
    [
        (
            fixed(200, b"<html><body>Outlook Web App</body></html>", [("Content-Type", "text/html")]),
            ErrorClass.PROTOCOL,
        ),
        (xml('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>'), ErrorClass.PROTOCOL),
        (xml(f'<s:Envelope xmlns:s="{S}"><s:Body><m:Weird xmlns:m="{M}"/></s:Body></s:Envelope>'), ErrorClass.PROTOCOL),
        (fixed(500, b"<html>Runtime Error</html>", [("Content-Type", "text/html")]), ErrorClass.HTTP_STATUS),
        (fixed(503, b"Service Unavailable"), ErrorClass.HTTP_STATUS),
        (fixed(401, b"", [("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", "NTLM")]), ErrorClass.AUTH),
    ],
    ids=["html-200", "entity-declaration", "not-ews", "html-500", "503", "401"],
)
def test_answers_that_are_not_ews_are_classified(
    serve: Callable, kit: CertKit, reply: Reply, error_class: ErrorClass
) -> None:
    """Non-XML, hostile XML and foreign SOAP are protocol; 500 HTML and 503 are http_status; 401 is auth."""
    result = run(serve(ews_server(get_folder=reply)), kit)
    assert result.error_class is error_class
    assert not result.success
    assert result.detail


def test_trickling_body_times_out_within_the_deadline(serve: Callable, kit: CertKit) -> None:
    """An answer trickling one byte at a time ends as timeout at the probe's deadline, not later."""
    started = time.monotonic()
    result = run(serve(ews_server(get_folder=trickle(0.05))), kit, timeout_s=1.5)
    assert result.error_class is ErrorClass.TIMEOUT
    assert time.monotonic() - started < 2.5
