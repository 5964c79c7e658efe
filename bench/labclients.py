"""The client side of bench_lab.py: HTTP over TLS to a lab name, NTLM with pyspnego, a minimal MAPI/HTTP
session, and the client processes that drive the loads (see bench_lab.py for what is measured and how)."""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import signal
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import spnego

from casprobe.protocols.mapiframing import parse_framed
from casprobe.protocols.mapihttp import ConnectRequest, ConnectResponse, ExecuteRequest, ExecuteResponse
from casprobe.protocols.rops import (
    LogonSuccess,
    RopLogonRequest,
    build_rop_buffer,
    decode_rop_logon_response,
    parse_rop_buffer,
)

SOCKET_TIMEOUT_S = 10.0
SETUP_TIMEOUT_S = 60.0
CLOCK_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
EWS_PATH = "/EWS/Exchange.asmx"
GET_FOLDER = (
    b'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"'
    b' xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"'
    b' xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"><soap:Header>'
    b'<t:RequestServerVersion Version="Exchange2016"/></soap:Header><soap:Body><m:GetFolder><m:FolderShape>'
    b"<t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds>"
    b'<t:DistinguishedFolderId Id="inbox"/></m:FolderIds></m:GetFolder></soap:Body></soap:Envelope>'
)


class BenchError(Exception):
    """A request or the benchmark itself went wrong (the message names what and where, never a secret)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A lab name, the loopback address it stands for, its port and the CA that signs its certificate."""

    name: str
    address: str
    port: int
    ca_file: Path


@dataclass(frozen=True, slots=True)
class Account:
    """One lab user as a client needs it; the NT hash (NTOWFv1, [MS-NLMP] 3.3.1, hex) stays out of the repr."""

    principal: str
    legacy_dn: str
    mailbox_id: str
    nt_hash: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Window:
    """Monotonic times shared by every process: operations started after ``measure_from`` and done by ``end``."""

    measure_from: float
    end: float


@dataclass(slots=True)
class Tally:
    """What one client thread (then one process, then the whole load) did; ``cpu_s`` is client CPU time."""

    done: int = 0
    errors: int = 0
    first_error: str = ""
    latencies: list[float] = field(default_factory=list)
    cpu_s: float = 0.0

    def merge(self, other: Tally) -> None:
        self.done += other.done
        self.errors += other.errors
        self.first_error = self.first_error or other.first_error
        self.latencies.extend(other.latencies)
        self.cpu_s += other.cpu_s

    def fail(self, exc: BaseException) -> None:
        self.errors += 1
        self.first_error = self.first_error or f"{type(exc).__name__}: {str(exc)[:200]}"


# --------------------------------------------------------------------------- HTTP, NTLM, MAPI/HTTP


class LabConnection(http.client.HTTPSConnection):
    """HTTPS to a lab name: TCP to its loopback address, while TLS SNI and Host carry the name."""

    def __init__(self, target: Target, tls: ssl.SSLContext) -> None:
        super().__init__(target.name, target.port, context=tls, timeout=SOCKET_TIMEOUT_S)
        self._target, self._tls = target, tls

    def connect(self) -> None:
        raw = socket.create_connection((self._target.address, self._target.port), SOCKET_TIMEOUT_S)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self._target.name)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[http.client.HTTPResponse, bytes]:
        """POST ``body`` and read the whole (de-chunked) response."""
        self.request("POST", path, body, headers)
        response = self.getresponse()
        return response, response.read()


def ntlm_post(
    conn: LabConnection, account: Account, path: str, body: bytes, headers: dict[str, str]
) -> tuple[http.client.HTTPResponse, bytes]:
    """Type 1 → 401 with type 2 → type 3, on one connection; return the answer to the type-3 request."""
    credential = spnego.NTLMHash(account.principal, nt_hash=account.nt_hash)
    client = spnego.client(credential, hostname=conn.host, service="HTTP", protocol="ntlm")
    negotiate = client.step()
    if negotiate is None:
        raise BenchError("pyspnego produced no NTLM NEGOTIATE message")
    auth = {**headers, "Authorization": "NTLM " + base64.b64encode(negotiate).decode()}
    response, _ = conn.post(path, body, auth)
    offers = response.headers.get_all("WWW-Authenticate") or []
    challenge = next((v[5:] for v in offers if v.startswith("NTLM ")), None)
    if response.status != 401 or challenge is None:
        raise BenchError(f"{conn.host}{path}: expected a 401 with an NTLM challenge, got {response.status}")
    authenticate = client.step(base64.b64decode(challenge))
    if authenticate is None:
        raise BenchError("pyspnego produced no NTLM AUTHENTICATE message")
    auth["Authorization"] = "NTLM " + base64.b64encode(authenticate).decode()
    return conn.post(path, body, auth)


def one_handshake(target: Target, tls: ssl.SSLContext, account: Account) -> None:
    """A new TCP+TLS connection, NTLM in three legs on an EWS GetFolder, a 200 with Success, close."""
    conn = LabConnection(target, tls)
    try:
        response, data = ntlm_post(conn, account, EWS_PATH, GET_FOLDER, {"Content-Type": "text/xml; charset=utf-8"})
    finally:
        conn.close()
    if response.status != 200 or b'ResponseClass="Success"' not in data:
        raise BenchError(f"{target.name}{EWS_PATH}: HTTP {response.status} {data[:120]!r}")


class MapiSession:
    """One Outlook-like MAPI/HTTP session: one keep-alive connection, NTLM once, Connect once, then Executes."""

    def __init__(self, target: Target, tls: ssl.SSLContext, account: Account) -> None:
        self.conn = LabConnection(target, tls)
        self.account = account
        self.path = f"/mapi/emsmdb/?MailboxId={account.mailbox_id}"
        self.request_guid = f"{{{str(uuid.uuid4()).upper()}}}"
        self.client_info = f"{{{str(uuid.uuid4()).upper()}}}:1"
        self.cookies: dict[str, str] = {}
        self.counter = 0
        logon = RopLogonRequest(account.legacy_dn).encode()
        self.execute_body = ExecuteRequest(build_rop_buffer(logon, [0xFFFFFFFF])).encode()

    def _headers(self, request_type: str) -> dict[str, str]:
        self.counter += 1
        headers = {
            "Content-Type": "application/mapi-http",
            "Accept": "application/mapi-http",
            "X-RequestType": request_type,
            "X-RequestId": f"{self.request_guid}:{self.counter}",
            "X-ClientInfo": self.client_info,
            "X-ClientApplication": "Outlook/16.0.17928.20114",
        }
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return headers

    def _body(self, response: http.client.HTTPResponse, data: bytes, what: str) -> bytes:
        """Check HTTP 200 and X-ResponseCode 0 (headers and after DONE), keep the cookies, return the body."""
        code = response.getheader("X-ResponseCode")
        if response.status != 200 or code != "0":
            raise BenchError(f"{self.conn.host} {what}: HTTP {response.status}, X-ResponseCode {code}")
        framed = parse_framed(data)
        if framed.header("X-ResponseCode") != "0":
            raise BenchError(f"{self.conn.host} {what}: X-ResponseCode {framed.header('X-ResponseCode')} after DONE")
        for cookie in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = cookie.partition("=")
            self.cookies[name.strip()] = rest.partition(";")[0].strip()
        return framed.body

    def open(self) -> None:
        """NTLM on the Connect request, then one Execute whose RopLogon must succeed."""
        body = ConnectRequest(self.account.legacy_dn).encode()
        response, data = ntlm_post(self.conn, self.account, self.path, body, self._headers("Connect"))
        connect = ConnectResponse.decode(self._body(response, data, "Connect"))
        if connect.status_code or connect.error_code:
            raise BenchError(f"Connect: StatusCode {connect.status_code}, ErrorCode 0x{connect.error_code:X}")
        logon = decode_rop_logon_response(parse_rop_buffer(self.execute()).rops)
        if not isinstance(logon, LogonSuccess):
            raise BenchError(f"RopLogon failed: {logon!r}")

    def execute(self) -> bytes:
        """One Execute (RopLogon); returns the response's RopBuffer."""
        response, data = self.conn.post(self.path, self.execute_body, self._headers("Execute"))
        result = ExecuteResponse.decode(self._body(response, data, "Execute"))
        if result.status_code or result.error_code:
            raise BenchError(f"Execute: StatusCode {result.status_code}, ErrorCode 0x{result.error_code:X}")
        return result.rop_buffer


# --------------------------------------------------------------------------- client processes and threads

FAILURES = (OSError, http.client.HTTPException, ValueError, BenchError, spnego.exceptions.SpnegoError)


@dataclass(slots=True)
class Gate:
    """Holds a client process's threads until all are set up and the parent has fixed the window."""

    ready: threading.Barrier
    started: threading.Event = field(default_factory=threading.Event)
    window: Window = Window(0.0, 0.0)

    def wait(self) -> Window:
        with contextlib.suppress(threading.BrokenBarrierError):
            self.ready.wait(timeout=SETUP_TIMEOUT_S)
        self.started.wait(timeout=SETUP_TIMEOUT_S)
        return self.window


@dataclass(frozen=True, slots=True)
class Slot:
    """One client thread: where it goes, as whom, and its Tally."""

    target: Target
    tls: ssl.SSLContext
    account: Account
    tally: Tally

    def count(self, start: float, window: Window) -> None:
        now = time.monotonic()
        if window.measure_from <= start and now <= window.end:
            self.tally.done += 1
            self.tally.latencies.append(now - start)


def handshake_job(slot: Slot, gate: Gate) -> None:
    """Handshakes back to back, each on a new connection, until the window ends."""
    window = gate.wait()
    while (start := time.monotonic()) < window.end:
        try:
            one_handshake(slot.target, slot.tls, slot.account)
        except FAILURES as exc:
            slot.tally.fail(exc)
            time.sleep(0.05)
            continue
        slot.count(start, window)


def open_session(slot: Slot) -> MapiSession | None:
    """A new authenticated, connected session, or None (the error counted)."""
    session = MapiSession(slot.target, slot.tls, slot.account)
    try:
        session.open()
    except FAILURES as exc:
        slot.tally.fail(exc)
        session.conn.close()
        return None
    return session


def execute_job(slot: Slot, gate: Gate) -> None:
    """Open a session, wait for the others, then Execute back to back (a new session after an error)."""
    session = open_session(slot)
    window = gate.wait()
    while (start := time.monotonic()) < window.end:
        if session is None:
            time.sleep(0.05)
            session = open_session(slot)
            continue
        try:
            session.execute()
        except FAILURES as exc:
            slot.tally.fail(exc)
            session.conn.close()
            session = None
            continue
        slot.count(start, window)
    if session is not None:
        session.conn.close()


@dataclass(frozen=True, slots=True)
class ClientPlan:
    """A load: ``processes`` × ``connections`` threads of ``job`` against ``target``, pinned to ``cores``."""

    label: str
    job: Callable[[Slot, Gate], None]
    target: Target
    accounts: tuple[Account, ...]
    processes: int
    connections: int
    cores: frozenset[int]


def client_process(plan: ClientPlan, index: int, pipe: Connection) -> None:
    """Set up the threads, say "ready", receive the window, run it, send back the summed Tally."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.sched_setaffinity(0, plan.cores)
    tls = ssl.create_default_context(cafile=str(plan.target.ca_file))
    gate = Gate(threading.Barrier(plan.connections + 1))
    first = index * plan.connections
    accounts = [plan.accounts[(first + i) % len(plan.accounts)] for i in range(plan.connections)]
    slots = [Slot(plan.target, tls, account, Tally()) for account in accounts]
    threads = [threading.Thread(target=plan.job, args=(slot, gate), daemon=True) for slot in slots]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        gate.ready.wait(timeout=SETUP_TIMEOUT_S)
    pipe.send("ready")
    if pipe.poll(SETUP_TIMEOUT_S):
        gate.window = pipe.recv()
    gate.started.set()
    time.sleep(max(0.0, gate.window.measure_from - time.monotonic()))
    cpu_start = sum(os.times()[:2])
    time.sleep(max(0.0, gate.window.end - time.monotonic()))
    total = Tally(cpu_s=sum(os.times()[:2]) - cpu_start)
    for thread, slot in zip(threads, slots, strict=True):
        thread.join(timeout=SOCKET_TIMEOUT_S * 3)
        total.merge(slot.tally)
    pipe.send(total)
