"""The lab's Autodiscover and EWS routes in-process (Starlette AsgiClient, a stub auth layer naming the user).

The same behaviours are proven over real sockets, NTLM and HAProxy in tests/lab/; these run without a lab.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from casprobe.lab.events import EventLog
from casprobe.lab.org import LabConfig, build_org
from casprobe.lab.routes import autodiscover, ews
from casprobe.lab.servers import Gate, build_server_app
from casprobe.lab.world import LabWorld
from casprobe.protocols.autodiscover import build_pox_request, parse_pox_response
from casprobe.protocols.autodiscover_soap import build_get_user_settings_request, parse_get_user_settings_response
from casprobe.protocols.ews import parse_ews_response
from casprobe.protocols.ews_requests import (
    build_convert_id_request,
    build_create_item_request,
    build_find_item_request,
    build_get_folder_request,
    build_resolve_names_request,
)

XML = {"Content-Type": "text/xml; charset=utf-8"}


def stub_auth(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        user = dict(scope.get("headers", [])).get(b"x-test-user")
        if user:
            scope.setdefault("state", {})["user"] = user.decode()
        await app(scope, receive, send)

    return middleware


class AsgiClient:
    """A synchronous face over httpx's ASGI transport (one event loop per request is enough here)."""

    def __init__(self, app: ASGIApp, base_url: str, headers: dict[str, str]) -> None:
        self.app, self.base_url, self.headers = app, base_url, headers

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url=self.base_url, headers=self.headers) as c:
                return await c.request(method, url, **kwargs)

        return asyncio.run(go())

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)


def make_client(tmp_path: Path, **config: object) -> tuple[LabWorld, AsgiClient]:
    org = build_org(LabConfig(port=8443, **config))  # type: ignore[arg-type]
    world = LabWorld(org, EventLog(tmp_path / "events.jsonl"))
    app = build_server_app(world, "mb1", gate=Gate(), route_factories=[autodiscover.routes, ews.routes], auth=stub_auth)
    client = AsgiClient(app, base_url="https://outlook.lab.test:8443", headers={"X-Test-User": "LAB\\alice"})
    return world, client


@pytest.fixture
def lab(tmp_path: Path) -> tuple[LabWorld, AsgiClient]:
    return make_client(tmp_path)


def test_pox_mapi_http_urls_follow_url_mode(tmp_path: Path) -> None:
    """X-MapiHttpCapability yields only the mapiHttp (+WEB) block, naming the server itself in "server" URL mode."""
    world, client = make_client(tmp_path, url_mode={"mb1": "server"})
    alice = world.org.find_user("alice")
    assert alice is not None
    answer = client.post(
        "/Autodiscover/Autodiscover.xml",
        content=build_pox_request("alice@lab.test"),
        headers=XML | {"X-MapiHttpCapability": "1"},
    )
    pox = parse_pox_response(answer.content)
    mapi = pox.protocol("mapiHttp")
    assert mapi is not None
    assert mapi.mailstore_internal_url == f"https://mb1.lab.test:8443/mapi/emsmdb/?MailboxId={alice.mailbox_id}"
    assert mapi.addressbook_external_url == f"https://mb1.lab.test:8443/mapi/nspi/?MailboxId={alice.mailbox_id}"
    assert pox.protocol("EXCH") is None
    assert pox.protocol("EXPR") is None


def test_pox_without_capability_gives_exch_expr(lab: tuple[LabWorld, AsgiClient]) -> None:
    """Without X-MapiHttpCapability the answer has EXCH (mailbox GUID server) and EXPR with namespace URLs."""
    world, client = lab
    alice = world.org.find_user("alice")
    assert alice is not None
    pox = parse_pox_response(
        client.post("/autodiscover/autodiscover.xml", content=build_pox_request("alice@lab.test"), headers=XML).content
    )
    exch = pox.protocol("EXCH")
    assert exch is not None
    assert exch.server == alice.mailbox_id
    assert pox.legacy_ews_url == "https://outlook.lab.test:8443/EWS/Exchange.asmx"
    assert pox.user is not None
    assert pox.user.legacy_dn == alice.legacy_dn


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (build_pox_request("nobody@lab.test"), 500),
        (b"<not xml", 600),
        (build_pox_request("alice@lab.test").replace(b"responseschema/2006a", b"responseschema/2099"), 601),
    ],
)
def test_pox_errors(lab: tuple[LabWorld, AsgiClient], body: bytes, code: int) -> None:
    """Unknown address, unparsable request and unsupported schema give POX error documents 500, 600, 601."""
    answer = lab[1].post("/autodiscover/autodiscover.xml", content=body, headers=XML)
    pox = parse_pox_response(answer.content)
    assert answer.status_code == 200
    assert pox.error is not None
    assert pox.error.code == code


def test_soap_redirect_url_then_settings(lab: tuple[LabWorld, AsgiClient]) -> None:
    """A redirect-domain address gets RedirectUrl; asked on the target host it gets only the requested settings."""
    _, client = lab
    request = build_get_user_settings_request("alice@redirect.lab.test", ["ExternalEwsUrl", "UserDN"], "x")
    first = parse_get_user_settings_response(
        client.post("/autodiscover/autodiscover.svc", content=request, headers=XML).content
    ).user
    assert first is not None
    assert first.error_code == "RedirectUrl"
    assert first.redirect_target == "https://autodiscover.lab.test:8443/autodiscover/autodiscover.svc"
    second = parse_get_user_settings_response(
        client.post(first.redirect_target, content=request, headers=XML).content
    ).user
    assert second is not None
    assert second.error_code == "NoError"
    assert set(second.settings) == {"ExternalEwsUrl", "UserDN"}


def test_v2_json(lab: tuple[LabWorld, AsgiClient]) -> None:
    """v2 JSON answers EWS with the namespace URL and refuses an unknown protocol with 400 + jsonerror."""
    _, client = lab
    ok = client.get("/autodiscover/autodiscover.json/v1.0/alice@lab.test?Protocol=EWS", headers={"X-Test-User": ""})
    assert ok.json()["Url"] == "https://outlook.lab.test:8443/EWS/Exchange.asmx"
    bad = client.get("/autodiscover/autodiscover.json?Email=alice@lab.test&Protocol=Nope")
    assert (bad.status_code, bad.headers["jsonerror"], bad.json()["ErrorCode"]) == (400, "true", "ProtocolNotSupported")


def test_ews_send_then_find(lab: tuple[LabWorld, AsgiClient]) -> None:
    """CreateItem SendAndSaveCopy lands in Inbox and Sent Items; FindItem lists it first with back-end headers."""
    _, client = lab
    client.post(
        "/ews/exchange.asmx",
        content=build_create_item_request("unit subject", "body", ["alice@lab.test"], mailbox="alice@lab.test"),
        headers=XML,
    )
    answer = client.post(
        "/ews/exchange.asmx", content=build_find_item_request("inbox", mailbox="alice@lab.test"), headers=XML
    )
    parsed = parse_ews_response(answer.content)
    assert parsed.server_version is not None
    assert parsed.server_version.build == "15.2.1544.4"
    assert parsed.messages[0].items[0].subject == "unit subject"
    assert answer.headers["X-BEServer"] == "MB1"
    folders = parse_ews_response(
        client.post(
            "/ews/exchange.asmx", headers=XML, content=build_get_folder_request(["sentitems"], mailbox="alice@lab.test")
        ).content
    )
    assert folders.messages[0].folders[0].total_count == 1


def test_ews_store_unavailable_and_access_denied(lab: tuple[LabWorld, AsgiClient]) -> None:
    """Another user's mailbox is ErrorAccessDenied; with the database's server off, ErrorMailboxStoreUnavailable."""
    world, client = lab
    other = parse_ews_response(
        client.post(
            "/ews/exchange.asmx", headers=XML, content=build_get_folder_request(["inbox"], mailbox="bob@lab.test")
        ).content
    )
    assert other.messages[0].response_code == "ErrorAccessDenied"
    alice = world.org.find_user("alice")
    assert alice is not None
    world.power[world.org.database(alice.database).copies[0]] = "blackhole"
    down = parse_ews_response(
        client.post(
            "/ews/exchange.asmx", headers=XML, content=build_get_folder_request(["inbox"], mailbox="alice@lab.test")
        ).content
    )
    assert down.messages[0].response_code == "ErrorMailboxStoreUnavailable"
    names = parse_ews_response(
        client.post("/ews/exchange.asmx", headers=XML, content=build_resolve_names_request("bob")).content
    )
    assert names.messages[0].mailboxes[0].email_address == "bob@lab.test"
    version = parse_ews_response(
        client.post("/ews/exchange.asmx", headers=XML, content=build_convert_id_request()).content
    )
    assert version.server_version is not None


def test_ews_bad_input(lab: tuple[LabWorld, AsgiClient]) -> None:
    """Malformed XML and unknown operations are 500 SOAP faults, a wrong type 415, a huge body 413."""
    _, client = lab
    bad = client.post("/ews/exchange.asmx", content=b"<s:Envelope", headers=XML)
    assert bad.status_code == 500
    assert parse_ews_response(bad.content).fault.code == "ErrorSchemaValidation"  # type: ignore[union-attr]
    unknown = build_convert_id_request().replace(b"ConvertId", b"FrobnicateItem")
    fault = parse_ews_response(client.post("/ews/exchange.asmx", content=unknown, headers=XML).content).fault
    assert fault is not None
    assert fault.code == "ErrorInvalidRequest"
    assert (
        client.post("/ews/exchange.asmx", content=b"{}", headers={"Content-Type": "application/json"}).status_code
        == 415
    )
    assert client.post("/ews/exchange.asmx", content=b"x" * (17 * 1024 * 1024), headers=XML).status_code == 413
    assert ET.fromstring(client.post("/ews/exchange.asmx", content=build_convert_id_request(), headers=XML).content)
