"""The lab's MAPI/HTTP routes in-process: one server app (front end + routes, principal injected), httpx ASGI client.

Uses casprobe's MAPI/HTTP codecs to build requests and read answers; the lab tests (tests/lab/test_mapi.py) use a
client built from the specification instead.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from casprobe.lab.events import EventLog
from casprobe.lab.org import LabConfig, User, build_org
from casprobe.lab.routes import mapi
from casprobe.lab.routes.mapi_sessions import store_for
from casprobe.lab.servers import Gate, build_server_app
from casprobe.lab.world import LabWorld
from casprobe.protocols.mapierrors import (
    EC_ACCESS_DENIED,
    EC_MDB_NOT_INIT,
    EC_NOT_SUPPORTED,
    EC_RPC_FORMAT,
    EC_UNKNOWN_USER,
)
from casprobe.protocols.mapiframing import FramedResponse, parse_framed
from casprobe.protocols.mapihttp import (
    BindRequest,
    BindResponse,
    ConnectRequest,
    ConnectResponse,
    ExecuteRequest,
    ExecuteResponse,
    NotificationWaitResponse,
    UnbindResponse,
)
from casprobe.protocols.rops import (
    LogonError,
    LogonRedirect,
    LogonSuccess,
    RopLogonRequest,
    build_rop_buffer,
    decode_rop_logon_response_from,
    parse_rop_buffer,
)

CONFIG = LabConfig(servers=2, pending_period_ms=100, notification_wait_s=0.6, expiration_ms=60000, switchover_s=0.05)


def make_world(tmp_path: Path, **overrides: Any) -> LabWorld:
    org = build_org(replace(CONFIG, **overrides))
    return LabWorld(org, EventLog(tmp_path / "events.jsonl"))


def inject_principal(app: ASGIApp) -> ASGIApp:
    """Stand-in for the NTLM layer: the principal comes from an X-Test-Principal header (default LAB\\alice)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            principal = headers.get(b"x-test-principal", b"LAB\\alice").decode()
            scope.setdefault("state", {})["user"] = principal
        await app(scope, receive, send)

    return middleware


def make_app(world: LabWorld, server: str = "mb1") -> ASGIApp:
    return build_server_app(world, server, gate=Gate(), route_factories=[mapi.routes], auth=inject_principal)


class Mapi:
    """A minimal MAPI/HTTP client over an ASGI app, keeping the session's cookies itself."""

    def __init__(self, app: ASGIApp, user: User, endpoint: str = "emsmdb") -> None:
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://mb1.lab.test")
        self.user = user
        self.endpoint = endpoint
        self.cookies: dict[str, str] = {}
        self.counter = 0

    async def post(
        self,
        request_type: str,
        body: bytes = b"",
        *,
        cookies: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        method: str = "POST",
        query: str | None = None,
    ) -> httpx.Response:
        self.counter += 1
        sent = {
            "Content-Type": "application/mapi-http",
            "X-RequestType": request_type,
            "X-RequestId": f"{{E2EA6C1C-E61B-49E9-9CFB-38184F907552}}:{self.counter}",
            "X-ClientInfo": "{2EF33C39-49C8-421C-B876-CDF7F2AC3AA0}:1",
        }
        jar = self.cookies if cookies is None else cookies
        if jar:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        sent.update(headers or {})
        sent = {k: v for k, v in sent.items() if v}
        q = f"MailboxId={self.user.mailbox_id}" if query is None else query
        self.http.cookies.clear()
        response = await self.http.request(method, f"/mapi/{self.endpoint}/?{q}", content=body, headers=sent)
        for name in ("MapiContext", "MapiSequence"):
            if name in response.cookies:
                self.cookies[name] = response.cookies[name]
        return response

    async def connect(self, user_dn: str | None = None) -> ConnectResponse:
        dn = self.user.legacy_dn if user_dn is None else user_dn
        response = await self.post("Connect", ConnectRequest(dn).encode())
        return ConnectResponse.decode(framed(response).body)

    async def execute_logon(self, essdn: str) -> tuple[ExecuteResponse, httpx.Response]:
        rops = build_rop_buffer(RopLogonRequest(essdn).encode(), [0xFFFFFFFF])
        response = await self.post("Execute", ExecuteRequest(rops).encode())
        return ExecuteResponse.decode(framed(response).body), response


def framed(response: httpx.Response) -> FramedResponse:
    assert response.status_code == 200, response.text
    assert response.headers["X-ResponseCode"] == "0", response.text
    assert response.headers["content-type"] == "application/mapi-http"
    return parse_framed(response.content)


def code(response: httpx.Response) -> int:
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    return int(response.headers["X-ResponseCode"])


def logon_of(execute: ExecuteResponse) -> Any:
    payload = parse_rop_buffer(execute.rop_buffer)
    return decode_rop_logon_response_from(payload.rops)[0], payload.handles


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


def test_connect_logon_wait_ping_disconnect(tmp_path: Path) -> None:
    """A whole session works and every answer carries the headers of 2.2.3.3; Execute after Disconnect is 10."""
    world = make_world(tmp_path)
    alice = world.org.users[0]

    async def scenario() -> None:
        client = Mapi(make_app(world), alice)
        connect = await client.connect()
        assert (connect.error_code, connect.polls_max, connect.retry_count, connect.retry_delay) == (0, 60000, 6, 10000)
        assert connect.display_name == alice.display_name
        assert connect.dn_prefix.startswith("/o=LAB/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/")
        first_sequence = client.cookies["MapiSequence"]
        execute, raw = await client.execute_logon(alice.legacy_dn)
        logon, handles = logon_of(execute)
        assert isinstance(logon, LogonSuccess)
        assert str(logon.mailbox_guid) == alice.mailbox_guid
        assert len(set(logon.folder_ids)) == 13
        assert handles[0] != 0xFFFFFFFF
        assert client.cookies["MapiSequence"] != first_sequence
        for name in ("X-RequestId", "X-ClientInfo", "X-RequestType"):
            assert raw.headers[name] == raw.request.headers[name]
        assert raw.headers["X-ServerApplication"] == "Exchange/15.02.1544.004"
        assert raw.headers["X-BEServer"] == "MB1"
        assert raw.headers["X-FEServer"] == "MB1"
        wait = await client.post("NotificationWait", struct.pack("<II", 0, 0))
        inner = framed(wait)
        assert inner.pending_count >= 3
        assert inner.header("X-ResponseCode") == "0"
        assert NotificationWaitResponse.decode(inner.body).event_pending is False
        ping = framed(await client.post("PING"))
        assert ping.body == b""
        assert ping.meta_tags[0] == "PROCESSING"
        assert framed(await client.post("Disconnect", struct.pack("<I", 0))).body == struct.pack("<III", 0, 0, 0)
        assert code(await client.post("Execute", ExecuteRequest(b"").encode())) == 10

    run(scenario)


def test_notification_wait_reports_delivered_mail(tmp_path: Path) -> None:
    """NotificationWait returns EventPending 1 as soon as mail reaches the mailbox."""
    world = make_world(tmp_path, notification_wait_s=10.0)
    alice, bob = world.org.users[0], world.org.users[1]

    async def scenario() -> None:
        client = Mapi(make_app(world), alice)
        await client.connect()
        waiting = asyncio.create_task(client.post("NotificationWait", struct.pack("<II", 0, 0)))
        await asyncio.sleep(0.25)
        world.deliver(bob, "hello", "body", (alice.smtp,), save_copy=False)
        response = await asyncio.wait_for(waiting, 2)
        assert NotificationWaitResponse.decode(framed(response).body).event_pending is True

    run(scenario)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"Cookie": ""}, 13),
        ({"Cookie": "MapiContext=garbage; MapiSequence=garbage"}, 6),
        ({"X-RequestType": "Frobnicate"}, 5),
        ({"X-RequestType": "Bind"}, 5),
        ({"Content-Type": "text/xml"}, 4),
        ({"Content-Type": ""}, 7),
        ({"X-RequestId": ""}, 7),
        ({"X-ClientInfo": ""}, 7),
        ({"Cookie": "sequence-mismatch"}, 15),
        ({"X-Test-Principal": "LAB\\bob"}, 10),
    ],
)
def test_request_level_failures(tmp_path: Path, change: dict[str, str], expected: int) -> None:
    """Each malformed Execute gets the X-ResponseCode of 2.2.3.3.3 as HTTP 200 text/html, echoing the ids."""
    world = make_world(tmp_path)
    alice = world.org.users[0]

    async def scenario() -> None:
        client = Mapi(make_app(world), alice)
        await client.connect()
        headers = dict(change)
        if headers.get("Cookie") == "sequence-mismatch":
            headers["Cookie"] = f"MapiContext={client.cookies['MapiContext']}; MapiSequence=stale"
        body = ExecuteRequest(build_rop_buffer(b"", [])).encode()
        response = await client.post("Execute", body, cookies=client.cookies, headers=headers)
        assert code(response) == expected
        assert response.headers.get("X-RequestId") == (
            headers.get("X-RequestId") or response.request.headers.get("X-RequestId")
        )
        # the session still works afterwards
        ok, _ = await client.execute_logon(alice.legacy_dn)
        assert ok.error_code == 0

    run(scenario)


def test_bodies_verbs_and_paths(tmp_path: Path) -> None:
    """Malformed bodies are 12, oversized ones 9, GET is 2, an unknown MailboxId 404 with X-CasErrorCode."""
    world = make_world(tmp_path)
    alice = world.org.users[0]

    async def scenario() -> None:
        client = Mapi(make_app(world), alice)
        assert code(await client.post("Connect", b"\x01\x02")) == 12
        await client.connect()
        assert code(await client.post("Execute", b"\x03\x00\x00\x00\xff\xff")) == 12
        assert code(await client.post("Execute", b"\0" * (mapi.MAX_BODY + 1))) == 9
        assert code(await client.post("Execute", b"", method="GET")) == 2
        missing = await client.post("Connect", ConnectRequest(alice.legacy_dn).encode(), query="MailboxId=x@lab.test")
        assert missing.status_code == 404
        assert missing.headers["X-CasErrorCode"] == "MailboxGuidWithDomainNotFound"
        elsewhere = await client.http.post("/mapi/other/", content=b"")
        assert int(elsewhere.headers["X-ResponseCode"]) == 3
        bad_rops = await client.post("Execute", ExecuteRequest(b"\x00\x00\x09").encode())
        assert ExecuteResponse.decode(framed(bad_rops).body).error_code == EC_RPC_FORMAT

    run(scenario)


def test_connect_refusals(tmp_path: Path) -> None:
    """Connect refuses another user's DN or mailbox (ecAccessDenied) and an unmounted database (ecMdbNotInit)."""
    world = make_world(tmp_path)
    alice, bob = world.org.users[0], world.org.users[1]

    async def scenario() -> None:
        client = Mapi(make_app(world), alice)
        assert (await client.connect(bob.legacy_dn)).error_code == EC_ACCESS_DENIED
        assert (await Mapi(make_app(world), bob).connect(bob.legacy_dn)).error_code == EC_ACCESS_DENIED
        assert "MapiContext" not in client.cookies
        world.power["mb1"] = "refuse"
        assert (await client.connect()).error_code == EC_MDB_NOT_INIT
        world.power["mb1"] = "on"
        assert (await client.connect()).error_code == 0
        world.power["mb1"] = "refuse"
        unreachable = await client.post("PING")
        assert unreachable.status_code == 503
        assert "X-ResponseCode" not in unreachable.headers

    run(scenario)


def test_database_move_kills_contexts_and_reconnect_works_anywhere(tmp_path: Path) -> None:
    """After a switchover old contexts answer 10 (even to a waiting NotificationWait) and a new Connect works."""
    world = make_world(tmp_path, notification_wait_s=5.0)
    alice = world.org.users[0]

    async def scenario() -> None:
        client = Mapi(make_app(world, "mb1"), alice)
        await client.connect()
        old = dict(client.cookies)
        waiting = asyncio.create_task(client.post("NotificationWait", struct.pack("<II", 0, 0), cookies=old))
        await asyncio.sleep(0.15)
        await world.dag.move(alice.database, "mb2", "test")
        inner = parse_framed((await asyncio.wait_for(waiting, 2)).content)
        assert inner.header("X-ResponseCode") == "10"
        assert code(await client.post("PING", cookies=old)) == 10
        other = Mapi(make_app(world, "mb2"), alice)
        other.cookies = dict(old)
        assert (await other.connect()).error_code == 0
        execute, raw = await other.execute_logon(alice.legacy_dn)
        assert isinstance(logon_of(execute)[0], LogonSuccess)
        assert raw.headers["X-BEServer"] == "MB2"

    run(scenario)


def test_logon_redirects_and_refusals(tmp_path: Path) -> None:
    """RopLogon for a mailbox active elsewhere is redirected; unknown DNs and unmodelled ROPs are refused."""
    world = make_world(tmp_path)
    alice, bob = world.org.users[0], world.org.users[1]
    assert world.backend_for(bob).server != world.backend_for(alice).server  # type: ignore[union-attr]

    async def scenario() -> None:
        client = Mapi(make_app(world), alice)
        await client.connect()
        redirect = logon_of((await client.execute_logon(bob.legacy_dn))[0])[0]
        assert isinstance(redirect, LogonRedirect)
        assert redirect.server_name == world.org.server("mb2").server_dn
        unknown = logon_of((await client.execute_logon("/o=LAB/cn=nobody"))[0])[0]
        assert isinstance(unknown, LogonError)
        assert unknown.return_value == EC_UNKNOWN_USER
        rops = build_rop_buffer(b"\x01\x00\x00" + b"\x07\x00\x00\x00\x00\x00", [1])
        execute = ExecuteResponse.decode(framed(await client.post("Execute", ExecuteRequest(rops).encode())).body)
        payload = parse_rop_buffer(execute.rop_buffer)
        assert payload.rops == struct.pack("<BBI", 0x07, 0, EC_NOT_SUPPORTED)

    run(scenario)


def test_nspi_bind_unbind(tmp_path: Path) -> None:
    """NSPI Bind opens its own context, other NSPI types answer ecNotSupported, Unbind closes it."""
    world = make_world(tmp_path)
    alice = world.org.users[0]

    async def scenario() -> None:
        client = Mapi(make_app(world), alice, endpoint="nspi")
        bind = await client.post("Bind", BindRequest().encode())
        assert str(BindResponse.decode(framed(bind).body).server_guid) == world.org.server("mb1").guid
        assert "/mapi/nspi" in bind.headers["set-cookie"]
        other = UnbindResponse.decode(framed(await client.post("GetProps", b"\0" * 8)).body)
        assert other.status_code == EC_NOT_SUPPORTED
        assert code(await client.post("Execute", b"")) == 5
        assert UnbindResponse.decode(framed(await client.post("Unbind", b"\0" * 8)).body).status_code == 0
        assert code(await client.post("PING")) == 10

    run(scenario)


def test_expiry_and_reconnect(tmp_path: Path) -> None:
    """An idle context expires (10); a reconnect carrying old cookies destroys the old context."""
    world = make_world(tmp_path, expiration_ms=200)
    alice = world.org.users[0]

    async def scenario() -> None:
        client = Mapi(make_app(world), alice)
        await client.connect()
        await asyncio.sleep(0.3)
        assert code(await client.post("PING")) == 10
        await client.connect()
        first = dict(client.cookies)
        await client.connect()
        assert code(await client.post("PING", cookies=first)) == 10
        assert framed(await client.post("PING")).body == b""

    run(scenario)


async def _raw_request(
    app: ASGIApp, headers: dict[str, str], body: AsyncIterator[bytes], responses: list[Message]
) -> None:
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": "/mapi/emsmdb/",
        "raw_path": b"/mapi/emsmdb/",
        "query_string": headers.pop("query").encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.11", 443),
    }

    async def receive() -> Message:
        try:
            chunk = await body.__anext__()
        except StopAsyncIteration:
            await asyncio.Event().wait()  # the client never goes away on its own
            raise AssertionError("unreachable") from None
        if chunk is None:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunk, "more_body": chunk != b""}

    async def send(message: Message) -> None:
        responses.append(message)

    await app(scope, receive, send)


def test_overlapping_requests_and_client_disconnect(tmp_path: Path) -> None:
    """A request whose body is still arriving holds the context (a second one is 15); a client that goes
    away during NotificationWait ends it at once and frees the context and the world's waiters."""
    world = make_world(tmp_path, notification_wait_s=30.0)
    alice = world.org.users[0]
    app = make_app(world)

    async def scenario() -> None:
        client = Mapi(app, alice)
        await client.connect()
        gate = asyncio.Event()

        async def slow_body() -> AsyncIterator[bytes]:
            yield b"\x03\x00"
            await gate.wait()
            yield None  # type: ignore[misc]

        headers = {
            "query": f"MailboxId={alice.mailbox_id}",
            "content-type": "application/mapi-http",
            "x-requesttype": "Execute",
            "x-requestid": "{E2EA6C1C-E61B-49E9-9CFB-38184F907552}:99",
            "x-clientinfo": "{2EF33C39-49C8-421C-B876-CDF7F2AC3AA0}:1",
            "cookie": "; ".join(f"{k}={v}" for k, v in client.cookies.items()),
        }
        sent: list[Message] = []
        slow = asyncio.create_task(_raw_request(app, dict(headers), slow_body(), sent))
        await asyncio.sleep(0.05)
        assert code(await client.post("PING")) == 15
        gate.set()
        await asyncio.wait_for(slow, 2)
        assert framed(await client.post("PING")).body == b""  # the abandoned request released the context

        await client.connect()
        leave = asyncio.Event()

        async def wait_body() -> AsyncIterator[bytes]:
            yield struct.pack("<II", 0, 0)
            yield b""  # end of the request body
            await leave.wait()
            yield None  # type: ignore[misc]

        headers.update(
            {"x-requesttype": "NotificationWait", "cookie": "; ".join(f"{k}={v}" for k, v in client.cookies.items())}
        )
        streamed: list[Message] = []
        waiting = asyncio.create_task(_raw_request(app, headers, wait_body(), streamed))
        await asyncio.sleep(0.25)
        assert streamed[0]["status"] == 200
        assert streamed[1]["body"] == b"PROCESSING\r\n"
        leave.set()
        await asyncio.wait_for(waiting, 1)
        assert not world._waiters
        assert framed(await client.post("PING")).body == b""
        assert len(store_for(world)) == 1

    run(scenario)


def test_execute_obfuscates_when_the_client_allows_it(tmp_path: Path) -> None:
    """Without Execute flag 0x2 the response RopBuffer is XorMagic-obfuscated ([MS-OXCRPC] 2.2.2.1) and decodes."""
    world = make_world(tmp_path)
    alice = world.org.users[0]

    async def scenario() -> None:
        client = Mapi(make_app(world), alice)
        await client.connect()
        rops = build_rop_buffer(RopLogonRequest(alice.legacy_dn).encode(), [0xFFFFFFFF])
        response = await client.post("Execute", ExecuteRequest(rops, flags=0x1).encode())
        execute = ExecuteResponse.decode(framed(response).body)
        assert struct.unpack_from("<H", execute.rop_buffer, 2)[0] & 0x2
        assert isinstance(logon_of(execute)[0], LogonSuccess)

    run(scenario)
