"""The lab's MAPI/HTTP endpoints through HAProxy and each server, driven by an Outlook-shaped client.

The client is independent of casprobe's codecs: request bodies are packed with ``struct`` from the layouts of
[MS-OXCMAPIHTTP] 2.2.4 / 2.2.5 and [MS-OXCROPS] 2.2.3.1, sent with requests + requests_ntlm (NTLM with channel
bindings), cookies kept by hand as 3.1.5.1 says, and the de-chunked inner stream (PROCESSING / PENDING / DONE,
additional headers, body; 2.2.7) parsed by hand while it arrives.
"""

from __future__ import annotations

import http.cookiejar
import itertools
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests
from requests_ntlm import HttpNtlmAuth

from tests.labkit import LabHandle, start_lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]

EC_ACCESS_DENIED = 0x80070005
EC_WRONG_SERVER = 0x478
EC_UNKNOWN_USER = 0x3EB
NO_BODY_YET = object()


# --------------------------------------------------------------------------- bodies, from the specification


def connect_body(user_dn: str) -> bytes:
    """2.2.4.1.1: UserDn, Flags, DefaultCodePage, LcidSort, LcidString, AuxiliaryBufferSize (0)."""
    return user_dn.encode("ascii") + b"\0" + struct.pack("<5I", 0, 1252, 1033, 1033, 0)


def rop_logon(essdn: str) -> bytes:
    """[MS-OXCROPS] 2.2.3.1.1: private-mailbox logon with HomeLogon | TakeOwnership | UsePerMDBReplidMapping."""
    dn = essdn.encode("ascii") + b"\0"
    return struct.pack("<BBBBIIH", 0xFE, 0, 0, 0x01, 0x0100000C, 0, len(dn)) + dn


def rop_buffer(rops: bytes, handles: tuple[int, ...] = (0xFFFFFFFF,)) -> bytes:
    """RPC_HEADER_EXT (version 0, flag Last) + RopSize + RopsList + handle table ([MS-OXCRPC] 2.2.2.1)."""
    payload = struct.pack("<H", len(rops) + 2) + rops + struct.pack(f"<{len(handles)}I", *handles)
    return struct.pack("<HHHH", 0, 0x0004, len(payload), len(payload)) + payload


def execute_body(rops: bytes) -> bytes:
    """2.2.4.2.1: Flags 0x3 (no compression, no XOR), RopBufferSize, RopBuffer, MaxRopOut, aux size 0."""
    buffer = rop_buffer(rops)
    return struct.pack("<II", 0x3, len(buffer)) + buffer + struct.pack("<II", 0x10008, 0)


NOTIFICATION_WAIT_BODY = struct.pack("<II", 0, 0)  # 2.2.4.4.1: Flags 0, aux size 0
DISCONNECT_BODY = struct.pack("<I", 0)  # 2.2.4.3.1: aux size 0


def parse_connect(body: bytes) -> dict[str, Any]:
    """2.2.4.1.2: StatusCode, ErrorCode, PollsMax, RetryCount, RetryDelay, DnPrefix (ASCII), DisplayName (UTF-16)."""
    status, error, polls, retries, delay = struct.unpack_from("<5I", body)
    end = body.index(b"\0", 20)
    dn_prefix = body[20:end].decode("ascii")
    pos = end + 1
    name_end = next(i for i in range(pos, len(body) - 1, 2) if body[i : i + 2] == b"\0\0")
    name = body[pos:name_end].decode("utf-16-le")
    return {
        "status": status,
        "error": error,
        "polls": polls,
        "retries": retries,
        "delay": delay,
        "dn": dn_prefix,
        "name": name,
    }


def parse_execute(body: bytes) -> tuple[int, int, bytes, tuple[int, ...]]:
    """2.2.4.2.2 → (StatusCode, ErrorCode, RopsList, handle table) of a single uncompressed extended buffer."""
    status, error, _flags, size = struct.unpack_from("<4I", body)
    buffer = body[16 : 16 + size]
    _version, flags, payload_size, _actual = struct.unpack_from("<4H", buffer)
    payload = buffer[8 : 8 + payload_size]
    if flags & 0x2:
        payload = bytes(b ^ 0xA5 for b in payload)
    (rop_size,) = struct.unpack_from("<H", payload)
    table = payload[rop_size:]
    return status, error, payload[2:rop_size], struct.unpack(f"<{len(table) // 4}I", table)


# --------------------------------------------------------------------------- the client


@dataclass
class Reply:
    """One MAPI/HTTP response: HTTP status and headers, meta-tags with arrival times, additional headers, body."""

    status: int
    headers: requests.structures.CaseInsensitiveDict[str]
    tags: list[tuple[str, float]] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def code(self) -> int:
        return int(self.headers["X-ResponseCode"])

    @property
    def pending(self) -> int:
        return sum(1 for tag, _ in self.tags if tag == "PENDING")


class Outlook:
    """A MAPI/HTTP client session for one user and one host, keeping its cookies by hand."""

    opened: ClassVar[list[Outlook]] = []  # closed by close_clients() when a test ends

    def __init__(self, lab: LabHandle, host: str, alias: str = "alice", endpoint: str = "emsmdb") -> None:
        self.lab = lab
        self.user = next(u for u in lab.org.users if u.alias == alias)
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.verify = str(lab.ca_file)
        self.http.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        self.http.auth = HttpNtlmAuth(f"{lab.org.netbios}\\{alias}", lab.password(alias))
        self.host = host
        self.endpoint = endpoint
        self.cookies: dict[str, str] = {}
        self.request_guid = str(uuid.uuid4()).upper()
        self.client_info = f"{{{str(uuid.uuid4()).upper()}}}:1"
        self.counter = 0
        Outlook.opened.append(self)

    def url(self, mailbox_id: str | None = None) -> str:
        mid = self.user.mailbox_id if mailbox_id is None else mailbox_id
        return self.lab.url(self.host, f"/mapi/{self.endpoint}/?MailboxId={mid}")

    def send(
        self,
        request_type: str,
        body: Any = b"",
        *,
        cookies: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        url: str | None = None,
        method: str = "POST",
    ) -> Reply:
        self.counter += 1
        sent = {
            "Content-Type": "application/mapi-http",
            "X-RequestType": request_type,
            "X-RequestId": f"{{{self.request_guid}}}:{self.counter}",
            "X-ClientInfo": self.client_info,
            "X-ClientApplication": "Outlook/16.0.17928.20114",
            "Accept": "application/mapi-http",
        }
        jar = self.cookies if cookies is None else cookies
        if jar:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        sent.update(headers or {})
        response = self.http.request(method, url or self.url(), data=body, headers=sent, stream=True, timeout=60)
        reply = Reply(response.status_code, response.headers)
        for raw in response.raw.headers.getlist("Set-Cookie"):
            parsed: SimpleCookie = SimpleCookie()
            parsed.load(raw)
            reply.cookies.update({k: m.value for k, m in parsed.items()})
        if response.headers.get("Content-Type", "").startswith("application/mapi-http"):
            _read_inner_stream(response, reply)
        else:
            reply.body = response.content
        response.close()
        if reply.status == 200 and reply.headers.get("X-ResponseCode") == "0":
            self.cookies.update(reply.cookies)
        return reply

    def connect(self) -> Reply:
        reply = self.send("Connect", connect_body(self.user.legacy_dn))
        assert reply.code == 0, reply.body
        return reply

    def logon(self, essdn: str | None = None) -> tuple[int, bytes, tuple[int, ...]]:
        reply = self.send("Execute", execute_body(rop_logon(essdn or self.user.legacy_dn)))
        assert reply.code == 0, reply.body
        status, error, rops, handles = parse_execute(reply.body)
        assert (status, error) == (0, 0)
        return struct.unpack_from("<I", rops, 2)[0], rops, handles


def _read_inner_stream(response: requests.Response, reply: Reply) -> None:
    """De-chunked body → meta-tags (timed), DONE's additional headers, response body (2.2.7, 3.1.5.6)."""
    start = time.monotonic()
    buffer = b""
    state = "tags"
    for piece in response.iter_content(chunk_size=None):
        buffer += piece
        while state != "body" and b"\r\n" in buffer:
            line, buffer = buffer.split(b"\r\n", 1)
            if state == "tags":
                tag = line.decode("ascii")
                assert tag in ("PROCESSING", "PENDING", "DONE"), line
                reply.tags.append((tag, time.monotonic() - start))
                state = "headers" if tag == "DONE" else "tags"
            elif line:
                name, _, value = line.decode("ascii").partition(":")
                reply.extra[name.strip()] = value.strip()
            else:
                state = "body"
    assert state == "body", f"stream ended before the body ({reply.tags})"
    reply.body = buffer


def close_clients() -> None:
    while Outlook.opened:
        Outlook.opened.pop().http.close()


def background(call: Callable[[], Reply]) -> tuple[threading.Thread, dict[str, Reply]]:
    """Run one request in a thread; its reply lands in the returned dict under "r"."""
    result: dict[str, Reply] = {}
    thread = threading.Thread(target=lambda: result.update(r=call()), daemon=True)
    thread.start()
    return thread, result


def hosts(lab: LabHandle) -> list[str]:
    return [lab.org.namespace, *(s.fqdn for s in lab.org.servers)]


def ews_send(lab: LabHandle, sender: str, to: str) -> None:
    """Deliver mail with an EWS CreateItem (SendOnly) through the namespace."""
    envelope = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"'
        ' xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"'
        ' xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages">'
        '<soap:Header><t:RequestServerVersion Version="Exchange2016"/></soap:Header>'
        '<soap:Body><m:CreateItem MessageDisposition="SendOnly"><m:Items><t:Message>'
        '<t:Subject>casprobe mapi test</t:Subject><t:Body BodyType="Text">hello</t:Body>'
        f"<t:ToRecipients><t:Mailbox><t:EmailAddress>{to}</t:EmailAddress></t:Mailbox></t:ToRecipients>"
        "</t:Message></m:Items></m:CreateItem></soap:Body></soap:Envelope>"
    )
    with requests.Session() as http:
        http.trust_env = False
        response = http.post(
            lab.url(lab.org.namespace, "/EWS/Exchange.asmx"),
            data=envelope.encode(),
            headers={"Content-Type": "text/xml; charset=utf-8"},
            auth=HttpNtlmAuth(f"{lab.org.netbios}\\{sender}", lab.password(sender)),
            verify=str(lab.ca_file),
            timeout=30,
        )
    assert response.status_code == 200, response.text[:500]
    assert 'ResponseClass="Success"' in response.text, response.text[:500]


# --------------------------------------------------------------------------- tests


@pytest.fixture
def names(lab: LabHandle) -> Iterator[LabHandle]:
    """The shared lab, its names resolving to its addresses while the test runs (one patch, every thread)."""
    try:
        with lab.resolving():
            yield lab
    finally:
        close_clients()


def test_outlook_session_through_every_name(names: LabHandle) -> None:
    """Connect → RopLogon → PING → Disconnect works through the namespace and each server; the answers carry the
    spec's headers and framing, and the context is dead afterwards (10)."""
    lab = names
    for host in hosts(lab):
        client = Outlook(lab, host)
        connect = client.connect()
        assert connect.headers["Content-Type"] == "application/mapi-http"
        assert connect.headers["Transfer-Encoding"] == "chunked"
        assert connect.headers["X-RequestId"] == f"{{{client.request_guid}}}:1"
        assert connect.headers["X-ClientInfo"] == client.client_info
        assert connect.headers["X-ServerApplication"] == "Exchange/15.02.1544.004"
        assert connect.headers["X-PendingPeriod"] == str(lab.org.config.pending_period_ms)
        assert connect.headers["X-ExpirationInfo"] == str(lab.org.config.expiration_ms)
        assert connect.headers["X-BEServer"] == "MB1"
        assert set(connect.cookies) == {"MapiContext", "MapiSequence"}
        assert [t for t, _ in connect.tags] == ["PROCESSING", "DONE"]
        assert connect.extra["X-ResponseCode"] == "0"
        assert {"X-ElapsedTime", "X-StartTime"} <= set(connect.extra)
        fields = parse_connect(connect.body)
        assert (fields["status"], fields["error"], fields["polls"], fields["retries"]) == (0, 0, 60000, 6)
        assert fields["name"] == client.user.display_name
        assert fields["dn"].startswith("/o=LAB/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/")
        sequence = client.cookies["MapiSequence"]
        value, rops, handles = client.logon()
        assert value == 0
        assert uuid.UUID(bytes_le=rops[7 + 13 * 8 + 1 : 7 + 13 * 8 + 17]) == uuid.UUID(client.user.mailbox_guid)
        assert handles[0] != 0xFFFFFFFF
        assert client.cookies["MapiSequence"] != sequence
        ping = client.send("PING")
        assert (ping.code, ping.body, ping.tags[0][0]) == (0, b"", "PROCESSING")
        assert client.send("Disconnect", DISCONNECT_BODY).body == struct.pack("<3I", 0, 0, 0)
        after = client.send("Execute", execute_body(rop_logon(client.user.legacy_dn)))
        assert (after.status, after.code) == (200, 10)
        assert after.headers["Content-Type"].startswith("text/html")


def test_notification_wait_keeps_alive_then_times_out(names: LabHandle) -> None:
    """With nothing happening, NotificationWait sends PENDING every X-PendingPeriod and ends with EventPending 0."""
    lab = names
    client = Outlook(lab, lab.org.namespace, "bob")
    client.connect()
    reply = client.send("NotificationWait", NOTIFICATION_WAIT_BODY)
    period = lab.org.config.pending_period_ms / 1000
    wait_s = lab.org.config.notification_wait_s
    assert reply.code == 0
    assert reply.pending >= int(wait_s / period) - 1
    times = [t for tag, t in reply.tags if tag == "PENDING"]
    assert all(0.5 * period < b - a < 1.5 * period for a, b in itertools.pairwise(times))
    assert reply.tags[-1][1] >= wait_s * 0.9
    assert struct.unpack("<4I", reply.body) == (0, 0, 0, 0)


def test_notification_wait_wakes_on_mail_through_every_name(names: LabHandle) -> None:
    """A NotificationWait returns EventPending 1 right after mail arrives (EWS CreateItem), on every name."""
    lab = names
    for host in hosts(lab):
        client = Outlook(lab, host, "frank")  # a mailbox the other shared-lab tests leave alone
        client.connect()
        client.logon()
        started = time.monotonic()
        waiter, result = background(partial(client.send, "NotificationWait", NOTIFICATION_WAIT_BODY))
        time.sleep(0.3)
        ews_send(lab, "erin", client.user.smtp)
        waiter.join(10)
        reply = result["r"]
        assert time.monotonic() - started < lab.org.config.notification_wait_s
        assert reply.code == 0
        assert struct.unpack("<4I", reply.body) == (0, 0, 1, 0)
        client.logon()  # collects the event
        client.send("Disconnect", DISCONNECT_BODY)


def test_any_front_end_serves_a_context(names: LabHandle) -> None:
    """Cookies from a Connect through one name work through every other name: front ends keep no state."""
    lab = names
    first = Outlook(lab, "mb2.lab.test")
    first.connect()
    for host in hosts(lab):
        other = Outlook(lab, host)
        other.cookies = first.cookies
        value, _, _ = other.logon()
        assert value == 0
    assert Outlook(lab, "mb3.lab.test").send("PING", cookies=first.cookies).headers["X-FEServer"] == "MB3"


def test_conformance_answers(names: LabHandle) -> None:
    """The X-ResponseCode values Microsoft's conformance suite expects: 13, 6, 5, 12, 15 and 10."""
    lab = names
    client = Outlook(lab, lab.org.namespace)
    client.connect()
    logon = execute_body(rop_logon(client.user.legacy_dn))
    assert client.send("Execute", logon, cookies={}).code == 13
    assert client.send("Execute", logon, cookies={"MapiContext": "garbage", "MapiSequence": "garbage"}).code == 6
    assert client.send("Frobnicate", logon).code == 5
    assert client.send("Execute", b"\x03\x00\x00\x00\x40\x00\x00\x00").code == 12
    stale = dict(client.cookies)
    client.logon()
    assert client.send("Execute", logon, cookies=stale).code == 15

    # overlap: an Execute whose body is still arriving holds the context
    release = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield logon[:8]
        release.wait(10)
        yield logon[8:]

    holder = Outlook(lab, "mb1.lab.test")
    holder.cookies = client.cookies
    holder.send("PING")  # authenticates the connection, so the streamed request needs no NTLM round trip
    thread, result = background(
        partial(holder.send, "Execute", slow_body())  # sent chunked
    )
    time.sleep(0.5)
    overlapping = Outlook(lab, "mb2.lab.test")
    overlapping.cookies = dict(client.cookies)
    assert overlapping.send("PING").code == 15
    release.set()
    thread.join(10)
    assert result["r"].code == 0
    client.cookies.update(holder.cookies)
    assert client.send("PING").code == 0


def test_bad_input_gets_protocol_answers_and_the_lab_keeps_serving(names: LabHandle) -> None:
    """Truncated bodies, wrong content types, a 50 MB body, unknown paths, verbs and mailboxes are answered as the
    protocol says, and a normal session works afterwards."""
    lab = names
    client = Outlook(lab, lab.org.namespace)
    full = connect_body(client.user.legacy_dn)
    for cut in (0, 5, len(full) - 1):
        assert client.send("Connect", full[:cut]).code == 12
    assert client.send("Connect", full, headers={"Content-Type": "application/octet-stream"}).code == 4
    assert client.send("Connect", full, headers={"X-ClientInfo": ""}).code == 7
    assert client.send("Connect", full, method="GET").code == 2

    chunk = b"\0" * (1024 * 1024)
    client.send("PING")  # authenticates the connection: a streamed body cannot be replayed for NTLM
    big = client.send("Connect", (chunk for _ in range(50)))  # chunked, 50 MiB
    assert (big.status, big.code) == (200, 9)

    wrong = client.send("Connect", full, url=client.url(f"{uuid.uuid4()}@lab.test"))
    assert (wrong.status, wrong.headers["X-CasErrorCode"]) == (404, "MailboxGuidWithDomainNotFound")
    assert client.send("Connect", full, url=lab.url(lab.org.namespace, "/mapi/nothing/")).code == 3
    bob = next(u for u in lab.org.users if u.alias == "bob")
    denied = client.send("Connect", full, url=client.url(bob.mailbox_id))
    assert parse_connect(denied.body)["error"] == EC_ACCESS_DENIED

    client.connect()
    assert client.logon()[0] == 0
    nspi = Outlook(lab, lab.org.namespace, endpoint="nspi")
    bind = nspi.send("Bind", struct.pack("<IBI", 0, 0, 0))
    assert bind.code == 0
    assert struct.unpack_from("<II", bind.body) == (0, 0)
    assert nspi.send("Unbind", struct.pack("<II", 0, 0)).code == 0


def test_logon_to_a_mailbox_elsewhere_is_redirected(names: LabHandle) -> None:
    """RopLogon for a mailbox whose database is active on another server answers ecWrongServer + a server DN."""
    lab = names
    client = Outlook(lab, lab.org.namespace)
    client.connect()
    bob = next(u for u in lab.org.users if u.alias == "bob")
    value, rops, _ = client.logon(bob.legacy_dn)
    assert value == EC_WRONG_SERVER
    size = rops[7]
    assert rops[8 : 8 + size].rstrip(b"\0").decode().startswith("/o=LAB/ou=Exchange Administrative Group")
    value, _, _ = client.logon("/o=LAB/ou=Nowhere/cn=Recipients/cn=nobody")
    assert value == EC_UNKNOWN_USER


def test_database_move_ends_contexts_and_reconnect_works_anywhere(tmp_path: Path) -> None:
    """After a switchover, an old context answers 10 (a waiting NotificationWait gets 10 in DONE's headers) and a
    reconnect carrying the old cookies works through any server, served by the new active copy."""
    handle = start_lab(tmp_path, notification_wait_s=30.0)
    try:
        with handle.resolving():
            _database_move_scenario(handle)
    finally:
        close_clients()
        handle.down()


def _database_move_scenario(handle: LabHandle) -> None:
    """Connect, wait, switch DB01 over to mb2, then check the old context and reconnect through every name."""
    client = Outlook(handle, handle.org.namespace)
    client.connect()
    client.logon()
    old = dict(client.cookies)
    waiter, result = background(partial(client.send, "NotificationWait", NOTIFICATION_WAIT_BODY, cookies=old))
    time.sleep(0.5)
    with handle.control() as control:
        control.switchover("DB01", "mb2")
    waiter.join(15)
    assert result["r"].code == 0
    assert result["r"].extra["X-ResponseCode"] == "10"
    assert client.send("Execute", execute_body(rop_logon(client.user.legacy_dn)), cookies=old).code == 10
    for host in hosts(handle):
        again = Outlook(handle, host)
        again.cookies = dict(old)
        reply = again.connect()
        assert reply.headers["X-BEServer"] == "MB2"
        assert again.logon()[0] == 0
        assert again.cookies["MapiContext"] != old["MapiContext"]
