"""Unit tests for the EWS SOAP codec (casprobe.protocols.ews, ews_requests, ews_server) and xmlsafe.

Compatibility is checked against an independent client: exchangelib 5.6.0 runs against the lab-side
codec through a fake ``requests`` adapter (no sockets), and its own parsers read our responses.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter

from casprobe.protocols import ews_server as srv
from casprobe.protocols.ews import (
    NS_T,
    EwsCodecError,
    EwsFault,
    FolderInfo,
    FolderRef,
    ItemInfo,
    MailboxInfo,
    ServerVersionInfo,
    parse_ews_response,
    server_version_element,
)
from casprobe.protocols.ews_requests import (
    build_convert_id_request,
    build_create_item_request,
    build_find_item_request,
    build_get_folder_request,
    build_resolve_names_request,
)
from casprobe.protocols.xmlsafe import (
    NS_AUTODISCOVER_SOAP,
    XmlCodecError,
    XmlLimits,
    element,
    parse_xml,
    sub,
    to_bytes,
)

SVI = ServerVersionInfo(15, 2, 1118, 7, "V2017_07_11")
S11 = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"


# --- a fake requests adapter that lets exchangelib talk to our lab-side codec -----------------------

Handler = Callable[[srv.EwsRequest], bytes]


class _CodecAdapter(BaseAdapter):
    handler: Handler
    seen: list[tuple[srv.EwsRequest, bytes]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        body = request.body.encode() if isinstance(request.body, str) else bytes(request.body or b"")
        parsed = srv.parse_ews_request(body)
        type(self).seen.append((parsed, body))
        payload = type(self).handler(parsed)
        resp = requests.Response()
        resp.status_code = 200
        resp._content = payload
        resp.raw = io.BytesIO(payload)
        resp.url = request.url or ""
        resp.request = request
        resp.headers["Content-Type"] = "text/xml; charset=utf-8"
        return resp

    def close(self) -> None:
        pass


def _lab(req: srv.EwsRequest) -> bytes:
    """A tiny lab: answers the operations exchangelib uses in the observed probe flow."""
    if req.operation == "ConvertId":
        return srv.build_error_response("ConvertId", "ErrorInvalidIdMalformed", "Id is malformed.", server_version=SVI)
    if req.operation == "GetFolder":
        folders = [FolderInfo(f"id-{r.id}", "ck1", r.id.title(), "IPF.Note", 7, 0, 3) for r in req.folder_ids]
        return srv.build_get_folder_response(folders, server_version=SVI)
    if req.operation == "FindItem":
        assert req.find_item is not None
        items = [ItemInfo("item-1", "ck2", "Maintenance window", "2024-03-01T08:00:00Z", False)]
        return srv.build_find_item_response(items, total_items_in_view=5, server_version=SVI)
    if req.operation == "CreateItem":
        return srv.build_create_item_response([None], server_version=SVI)
    if req.operation == "ResolveNames":
        return srv.build_resolve_names_response([MailboxInfo("alice@lab.test", "Alice")], server_version=SVI)
    return srv.build_fault("ErrorInvalidRequest", "unsupported", server_version=SVI)


@pytest.fixture
def exchangelib_account(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Handler], Any]]:
    """Build exchangelib Accounts whose HTTP goes to ``handler`` through the codec, never to a socket."""
    from exchangelib import BASIC, DELEGATE, Account, Configuration, Credentials, FaultTolerance
    from exchangelib.protocol import BaseProtocol, close_connections

    counter = iter(range(10_000))

    def make(handler: Handler, *, fail_fast: bool = True) -> Any:
        adapter: type[_CodecAdapter] = type("Adapter", (_CodecAdapter,), {"handler": staticmethod(handler), "seen": []})
        monkeypatch.setattr(BaseProtocol, "HTTP_ADAPTER_CLS", adapter)
        cfg = Configuration(
            server=f"mb{next(counter)}.codec.test",
            credentials=Credentials("LAB\\alice", "not-a-secret"),
            auth_type=BASIC,
            retry_policy=None if fail_fast else FaultTolerance(max_wait=1),
        )
        account = Account("alice@lab.test", config=cfg, autodiscover=False, access_type=DELEGATE)
        return account, adapter.seen

    yield make
    close_connections()


# --- exchangelib end to end ------------------------------------------------------------------------


def test_exchangelib_probe_flow_runs_against_the_lab_codec(exchangelib_account: Callable[..., Any]) -> None:
    """exchangelib 5.6.0 learns the version, reads root/inbox, pages FindItem, resolves and sends via our codec."""
    from exchangelib import Mailbox, Message

    account, seen = exchangelib_account(_lab)
    assert str(account.version.build) == "15.2.1118.7"
    assert account.root.total_count == 7
    assert (account.inbox.total_count, account.inbox.unread_count) == (7, 3)
    found = list(account.inbox.all().only("subject", "datetime_received")[:1])
    assert [m.subject for m in found] == ["Maintenance window"]
    assert found[0].datetime_received.isoformat() == "2024-03-01T08:00:00+00:00"
    assert account.protocol.resolve_names(["alice"])[0].email_address == "alice@lab.test"
    Message(
        account=account, subject="hi", body="hello", to_recipients=[Mailbox(email_address="bob@lab.test")]
    ).send_and_save()

    ops = [req.operation for req, _ in seen]
    assert ops[0] == "ConvertId"
    assert {"GetFolder", "FindItem", "ResolveNames", "CreateItem"} <= set(ops)
    find = next(req for req, _ in seen if req.operation == "FindItem")
    assert find.find_item == srv.FindItemQuery(
        "Shallow", "IdOnly", 1, 0, (FolderRef("inbox", True, None, "alice@lab.test"),)
    )
    create = next(req for req, _ in seen if req.operation == "CreateItem").create_item
    assert create is not None
    assert create.message_disposition == "SendAndSaveCopy"
    assert create.saved_item_folder == FolderRef("sentitems", True, None, "alice@lab.test")
    assert create.messages == (srv.NewMessage("hi", "hello", "Text", ("bob@lab.test",)),)
    resolve = next(req for req, _ in seen if req.operation == "ResolveNames")
    assert resolve.unresolved_entry == "alice"
    assert resolve.requested_version == "Exchange2016"


def test_client_builders_match_what_exchangelib_sends(exchangelib_account: Callable[..., Any]) -> None:
    """Our GetFolder/FindItem/ConvertId/ResolveNames requests parse to the same fields as exchangelib's."""
    account, seen = exchangelib_account(_lab)
    _ = (
        account.root.total_count,
        list(account.inbox.all().only("subject")[:1]),
        account.protocol.resolve_names(["alice"]),
    )
    theirs = {req.operation: req for req, _ in seen}
    ours = {
        "ConvertId": build_convert_id_request(),
        "GetFolder": build_get_folder_request(["inbox"], mailbox="alice@lab.test"),
        "FindItem": build_find_item_request("inbox", mailbox="alice@lab.test", max_entries=1),
        "ResolveNames": build_resolve_names_request("alice"),
    }
    for op, data in ours.items():
        mine, exl = srv.parse_ews_request(data), theirs[op]
        assert (mine.operation, mine.requested_version, mine.mailbox) == (
            exl.operation,
            exl.requested_version,
            exl.mailbox,
        )
        assert (mine.folder_ids, mine.find_item, mine.unresolved_entry) == (
            exl.folder_ids,
            exl.find_item,
            exl.unresolved_entry,
        )
    convert = next(body for req, body in seen if req.operation == "ConvertId")
    assert b'<t:AlternateId Id="DUMMY" Format="EwsId" Mailbox="DUMMY"/>' in convert
    assert b'<t:AlternateId Id="DUMMY" Format="EwsId" Mailbox="DUMMY"/>' in ours["ConvertId"]


@pytest.mark.parametrize(
    ("code", "error_name"),
    [
        ("ErrorMailboxStoreUnavailable", "ErrorMailboxStoreUnavailable"),
        ("ErrorMailboxMoveInProgress", "ErrorMailboxMoveInProgress"),
        ("ErrorNonExistentMailbox", "ErrorNonExistentMailbox"),
    ],
)
def test_exchangelib_raises_our_per_message_errors(
    exchangelib_account: Callable[..., Any], code: str, error_name: str
) -> None:
    """A GetFolder ResponseClass=Error message surfaces in exchangelib as the matching exception class."""
    import exchangelib.errors

    def handler(req: srv.EwsRequest) -> bytes:
        if req.operation == "GetFolder":
            return srv.build_get_folder_response([srv.MessageError(code, "maintenance")], server_version=SVI)
        return _lab(req)

    account, _ = exchangelib_account(handler)
    with pytest.raises(getattr(exchangelib.errors, error_name)):
        _ = account.root


def test_exchangelib_reads_server_busy_fault_back_off(exchangelib_account: Callable[..., Any]) -> None:
    """An ErrorServerBusy fault with BackOffMilliseconds 297749 gives exchangelib a 297.749 s back-off."""
    from exchangelib.errors import ErrorServerBusy

    def handler(req: srv.EwsRequest) -> bytes:
        if req.operation == "GetFolder":
            return srv.build_fault(
                "ErrorServerBusy", "The server cannot service this request right now.", back_off_ms=297749
            )
        return _lab(req)

    account, _ = exchangelib_account(handler)
    with pytest.raises(ErrorServerBusy) as info:
        _ = account.root
    assert info.value.back_off == pytest.approx(297.749)


def test_exchangelib_reads_schema_validation_fault(exchangelib_account: Callable[..., Any]) -> None:
    """An ErrorSchemaValidation fault raises exchangelib's ErrorSchemaValidation with our line/violation."""
    from exchangelib.errors import ErrorSchemaValidation

    def handler(req: srv.EwsRequest) -> bytes:
        if req.operation == "GetFolder":
            return srv.build_fault(
                "ErrorSchemaValidation", "The request failed schema validation.", line=2, position=7, violation="bad"
            )
        return _lab(req)

    account, _ = exchangelib_account(handler)
    with pytest.raises(ErrorSchemaValidation, match=r"bad \(line: 2 position: 7\)"):
        _ = account.root


@pytest.mark.parametrize("as_elements", [False, True])
def test_exchangelib_version_parser_reads_our_server_version_info(as_elements: bool) -> None:
    """exchangelib's Version.from_soap_header reads our header in attribute and in Autodiscover element form."""
    from exchangelib.version import Version

    ns = NS_AUTODISCOVER_SOAP if as_elements else NS_T
    header = element(S11, "Header")
    header.append(server_version_element(SVI, ns=ns, as_elements=as_elements))
    reparsed = parse_xml(to_bytes(header, {"s": S11}))
    version = Version.from_soap_header(requested_api_version="Exchange2016", header=reparsed)
    assert (version.build.major_version, version.build.minor_version) == (15, 2)
    assert (version.build.major_build, version.build.minor_build) == (1118, 7)
    assert version.api_version == "Exchange2016"  # "V2017_07_11" is a bogus string exchangelib replaces


# --- round trips through our own parsers -------------------------------------------------------------


def test_get_folder_response_round_trip() -> None:
    """GetFolder success and error messages come back from parse_ews_response field for field."""
    folders = [FolderInfo("AAMk=", "AQAA", "Inbox", "IPF.Note", 12, 2, 5), FolderInfo("root-id", kind="Folder")]
    data = srv.build_get_folder_response(
        [*folders, srv.MessageError("ErrorFolderNotFound", "gone")], server_version=SVI
    )
    resp = parse_ews_response(data)
    assert resp.server_version == SVI
    assert resp.operation == "GetFolder"
    assert resp.fault is None
    assert [m.folders[0] for m in resp.messages[:2]] == folders
    assert [(m.response_class, m.response_code) for m in resp.messages] == [
        ("Success", "NoError"),
        ("Success", "NoError"),
        ("Error", "ErrorFolderNotFound"),
    ]
    assert resp.messages[2].message_text == "gone"


@pytest.mark.parametrize(("offset", "total", "last"), [(0, 2, True), (0, 10, False), (8, 10, True)])
def test_find_item_response_round_trip(offset: int, total: int, last: bool) -> None:
    """FindItem pages keep their items, TotalItemsInView and IncludesLastItemInRange."""
    items = [ItemInfo("i1", "c1", "a", "2024-01-01T00:00:00Z", True), ItemInfo("i2", None, "b & <c>", None, None)]
    data = srv.build_find_item_response(items, total_items_in_view=total, offset=offset, server_version=SVI)
    msg = parse_ews_response(data).messages[0]
    assert msg.items == tuple(items)
    assert msg.total_items_in_view == total
    root = parse_xml(data).find(f".//{{{M}}}RootFolder")
    assert root is not None
    assert root.get("IncludesLastItemInRange") == str(last).lower()


def test_resolve_names_response_variants() -> None:
    """ResolveNames: one match succeeds, several give a Warning with the set, none gives the NoResults error."""
    alice, alice2 = MailboxInfo("alice@lab.test", "Alice"), MailboxInfo("alice2@lab.test", "Alice Two")
    one = parse_ews_response(srv.build_resolve_names_response([alice], server_version=None)).messages[0]
    assert (one.response_class, one.mailboxes, one.total_items_in_view) == ("Success", (alice,), 1)
    many = parse_ews_response(srv.build_resolve_names_response([alice, alice2], server_version=None)).messages[0]
    assert (many.response_class, many.response_code) == ("Warning", "ErrorNameResolutionMultipleResults")
    assert many.mailboxes == (alice, alice2)
    none = parse_ews_response(srv.build_resolve_names_response([], server_version=None)).messages[0]
    assert (none.response_class, none.response_code) == ("Error", "ErrorNameResolutionNoResults")


def test_create_item_response_and_fault_round_trip() -> None:
    """CreateItem answers one message per item; a busy fault parses into EwsFault with its back-off."""
    created = parse_ews_response(srv.build_create_item_response([None, ItemInfo("new", "ck")], server_version=SVI))
    assert [m.items for m in created.messages] == [(), (ItemInfo("new", "ck"),)]
    fault = parse_ews_response(srv.build_fault("ErrorServerBusy", "busy", back_off_ms=1500, server_version=SVI))
    assert fault.fault is not None
    assert (fault.fault.code, fault.fault.response_code, fault.fault.back_off_ms) == (
        "ErrorServerBusy",
        "ErrorServerBusy",
        1500,
    )
    assert fault.messages == ()
    assert fault.server_version == SVI


def test_request_builders_round_trip_through_the_lab_parser() -> None:
    """Every client request builder produces what parse_ews_request reads back."""
    gf = srv.parse_ews_request(build_get_folder_request(["root", "msgfolderroot", FolderRef("XYZ=", False, "ck")]))
    assert gf.operation == "GetFolder"
    assert gf.mailbox is None
    assert gf.folder_ids == (FolderRef("root"), FolderRef("msgfolderroot"), FolderRef("XYZ=", False, "ck"))
    fi = srv.parse_ews_request(
        build_find_item_request("inbox", max_entries=50, offset=100, server_version="Exchange2013")
    )
    assert fi.requested_version == "Exchange2013"
    assert fi.find_item == srv.FindItemQuery("Shallow", "IdOnly", 50, 100, (FolderRef("inbox"),))
    ci = srv.parse_ews_request(
        build_create_item_request("S", "B\nline2", ["x@y.test", "z@y.test"], mailbox="me@y.test")
    )
    assert ci.create_item == srv.CreateItemRequest(
        "SendAndSaveCopy",
        FolderRef("sentitems", True, None, "me@y.test"),
        (srv.NewMessage("S", "B\nline2", "Text", ("x@y.test", "z@y.test")),),
    )
    assert ci.mailbox == "me@y.test"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: build_get_folder_request(["not-a-folder"]), "distinguished folder"),
        (lambda: build_get_folder_request([]), "at least one folder"),
        (lambda: build_find_item_request(max_entries=0), "max_entries"),
        (lambda: build_resolve_names_request(" "), "non-empty"),
        (lambda: build_create_item_request("s", "b", []), "recipient"),
        (lambda: build_convert_id_request(server_version="Exchange2099"), "RequestServerVersion"),
        (lambda: build_create_item_request("bad \x00 subject", "b", ["x@y.test"]), "cannot represent"),
    ],
)
def test_request_builders_refuse_bad_input(call: Callable[[], bytes], message: str) -> None:
    """Unknown folder ids/versions, empty inputs and characters XML cannot carry are refused."""
    with pytest.raises(EwsCodecError, match=message):
        call()


# --- documents written in other prefix styles ------------------------------------------------------

DEFAULT_NS_GETFOLDER = f"""<?xml version="1.0" encoding="utf-8"?>
<Envelope xmlns="{S11}">
  <Header><RequestServerVersion xmlns="{NS_T}" Version="Exchange2010_SP2"/></Header>
  <Body>
    <GetFolder xmlns="{M}">
      <FolderShape><BaseShape xmlns="{NS_T}">Default</BaseShape></FolderShape>
      <FolderIds>
        <DistinguishedFolderId xmlns="{NS_T}" Id="msgfolderroot">
          <Mailbox><EmailAddress>carol@lab.test</EmailAddress></Mailbox>
        </DistinguishedFolderId>
        <x:FolderId xmlns:x="{NS_T}" Id="AQMkAD" ChangeKey="AQAAAA=="/>
      </FolderIds>
    </GetFolder>
  </Body>
</Envelope>"""

ODD_PREFIX_RESPONSE = f"""<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="{S11}" xmlns:msg="{M}" xmlns:typ="{NS_T}">
  <soap:Header>
    <typ:ServerVersionInfo MajorVersion="15" MinorVersion="1" MajorBuildNumber="2507" MinorBuildNumber="6"
        Version="V2016_10_10"/>
  </soap:Header>
  <soap:Body>
    <msg:GetFolderResponse>
      <msg:ResponseMessages>
        <msg:GetFolderResponseMessage ResponseClass="Success">
          <msg:ResponseCode>NoError</msg:ResponseCode>
          <msg:Folders>
            <typ:CalendarFolder>
              <typ:FolderId Id="CAL=" ChangeKey="AgAA"/>
              <typ:DisplayName>Calendar</typ:DisplayName>
              <typ:TotalCount>4</typ:TotalCount>
            </typ:CalendarFolder>
          </msg:Folders>
        </msg:GetFolderResponseMessage>
      </msg:ResponseMessages>
    </msg:GetFolderResponse>
  </soap:Body>
</soap:Envelope>"""

HANDWRITTEN_FAULT = f"""<?xml version="1.0" encoding="utf-8"?>
<s:Envelope xmlns:s="{S11}">
  <s:Body>
    <s:Fault>
      <faultcode xmlns:a="{NS_T}">a:ErrorServerBusy</faultcode>
      <faultstring xml:lang="en-US">The server cannot service this request right now.</faultstring>
      <detail>
        <e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">ErrorServerBusy</e:ResponseCode>
        <e:Message xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">Try again later.</e:Message>
        <t:MessageXml xmlns:t="{NS_T}"><t:Value Name="BackOffMilliseconds">30000</t:Value></t:MessageXml>
      </detail>
    </s:Fault>
  </s:Body>
</s:Envelope>"""


def test_lab_parser_accepts_default_namespace_style() -> None:
    """A request written with default namespaces (no prefixes) parses like a prefixed one."""
    req = srv.parse_ews_request(DEFAULT_NS_GETFOLDER)
    assert (req.operation, req.requested_version, req.mailbox) == ("GetFolder", "Exchange2010_SP2", "carol@lab.test")
    assert req.folder_ids == (
        FolderRef("msgfolderroot", True, None, "carol@lab.test"),
        FolderRef("AQMkAD", False, "AQAAAA=="),
    )


def test_client_parser_accepts_arbitrary_prefixes_and_folder_kinds() -> None:
    """Prefixes are irrelevant; a CalendarFolder and a 'V2016_10_10' version string are read as sent."""
    resp = parse_ews_response(ODD_PREFIX_RESPONSE)
    assert resp.server_version == ServerVersionInfo(15, 1, 2507, 6, "V2016_10_10")
    assert resp.messages[0].folders == (FolderInfo("CAL=", "AgAA", "Calendar", None, 4, None, None, "CalendarFolder"),)


def test_client_parser_reads_handwritten_fault_without_header() -> None:
    """A fault with its own prefix declarations and no SOAP header parses; server_version is None."""
    resp = parse_ews_response(HANDWRITTEN_FAULT)
    assert resp.server_version is None
    assert resp.fault == EwsFault(
        "ErrorServerBusy", "The server cannot service this request right now.", "ErrorServerBusy", 30000
    )


def test_server_version_info_element_form_and_missing_fields() -> None:
    """ServerVersionInfo parses from Autodiscover child elements; a missing or non-numeric part is an error."""
    doc = f"""<s:Envelope xmlns:s="{S11}"><s:Header><h:ServerVersionInfo xmlns:h="{NS_AUTODISCOVER_SOAP}">
      <h:MajorVersion>15</h:MajorVersion><h:MinorVersion>0</h:MinorVersion><h:MajorBuildNumber>682</h:MajorBuildNumber>
      <h:MinorBuildNumber>1</h:MinorBuildNumber><h:Version>Exchange2013</h:Version></h:ServerVersionInfo></s:Header>
      <s:Body><m:GetFolderResponse xmlns:m="{M}"/></s:Body></s:Envelope>"""
    assert parse_ews_response(doc).server_version == ServerVersionInfo(15, 0, 682, 1, "Exchange2013")
    with pytest.raises(EwsCodecError, match="MinorBuildNumber"):
        parse_ews_response(doc.replace("<h:MinorBuildNumber>1</h:MinorBuildNumber>", ""))
    with pytest.raises(EwsCodecError, match="not an integer"):
        parse_ews_response(doc.replace(">682<", ">6x2<"))


# --- hostile and malformed input ----------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">
<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><lolz>&lol2;</lolz>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>&xxe;</s:Body></s:Envelope>"""


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (BILLION_LAUGHS, "forbidden"),
        (EXTERNAL_ENTITY, "forbidden"),
        (b"<!DOCTYPE html><html/>", "forbidden"),
        (b"", "empty"),
        (b"HTTP/1.1 503 Service Unavailable", "malformed"),
        (b"<html><body>Server Error</body></html>", "not a SOAP 1.1 envelope"),
        (b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body/></e:Envelope>', "not a SOAP 1.1"),
        (f'<s:Envelope xmlns:s="{S11}"><s:Header/></s:Envelope>'.encode(), "no Body"),
        (f'<s:Envelope xmlns:s="{S11}"><s:Body/></s:Envelope>'.encode(), "Body is empty"),
        (f'<s:Envelope xmlns:s="{S11}"><s:Body><x/></s:Body></s:Envelope>'.encode(), "unexpected SOAP body"),
        (b"<a>" * 200 + b"</a>" * 200, "nesting"),
        (b'<?xml version="1.0" encoding="x-unknown"?><a/>', "XML"),
    ],
)
def test_client_parser_rejects_hostile_and_malformed_documents(data: bytes, message: str) -> None:
    """DTDs/entities, non-XML, wrong roots, SOAP 1.2, empty bodies and deep nesting raise EwsCodecError."""
    with pytest.raises(EwsCodecError, match=message):
        parse_ews_response(data)


def test_size_and_element_caps_are_enforced() -> None:
    """A document over the byte cap or the element-count cap is refused before a tree is returned."""
    many = b"<r>" + b"<i/>" * 1000 + b"</r>"
    with pytest.raises(XmlCodecError, match="more than 999 elements"):
        parse_xml(many, limits=XmlLimits(max_elements=999))
    assert len(parse_xml(many, limits=XmlLimits(max_elements=1001))) == 1000
    with pytest.raises(XmlCodecError, match="byte cap"):
        srv.parse_ews_request(b"<r>" + b" " * (2 * 1024 * 1024) + b"</r>")


@pytest.mark.parametrize(
    "data",
    [
        f'<s:Envelope xmlns:s="{S11}"><s:Body><GetFolder/></s:Body></s:Envelope>',
        f'<s:Envelope xmlns:s="{S11}"><s:Body><m:GetFolder xmlns:m="{M}"><m:FolderIds>'
        f'<t:DistinguishedFolderId xmlns:t="{NS_T}"/></m:FolderIds></m:GetFolder></s:Body></s:Envelope>',
        f'<s:Envelope xmlns:s="{S11}"><s:Body><m:FindItem xmlns:m="{M}">'
        f'<m:IndexedPageItemView MaxEntriesReturned="lots"/></m:FindItem></s:Body></s:Envelope>',
    ],
)
def test_lab_parser_rejects_requests_missing_required_parts(data: str) -> None:
    """An operation outside the messages namespace, a folder id without Id or a non-numeric page size is refused."""
    with pytest.raises(XmlCodecError):
        srv.parse_ews_request(data)


def test_serializer_escapes_and_switches_default_namespace() -> None:
    """to_bytes escapes markup characters, writes xml:lang, and declares a nested default namespace."""
    root = element("urn:a", "Root", attrs={"q": 'x"<y>&'})
    sub(root, "urn:b", "Inner", "1 < 2 & 3 > 2").set("{http://www.w3.org/XML/1998/namespace}lang", "en")
    sub(root, None, "Plain", "]]>")
    data = to_bytes(root, {"": "urn:a"})
    assert b'<Inner xmlns="urn:b" xml:lang="en">' in data
    assert b'<Plain xmlns="">' in data
    back = parse_xml(data)
    assert back.get("q") == 'x"<y>&'
    assert [(c.tag, c.text) for c in back] == [("{urn:b}Inner", "1 < 2 & 3 > 2"), ("Plain", "]]>")]
