"""The real HAProxy 2.6 in front of tiny TLS "Exchange" servers on 127.0.3.x, in the l7 and l4 shapes.

Everything asynchronous (the fake servers, HAProxy's lifecycle, the state watcher) runs on one event loop in
a background thread, as in the lab; the test thread is the client (httpx, a new connection per request).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trustme

from casprobe.lab.haproxy import (
    HAPROXY_BIN,
    L4_BACKEND,
    HaproxyStartError,
    LbBackendServer,
    LbSettings,
    RuntimeApiError,
    backend_name,
)
from casprobe.lab.haproxy_runtime import HaproxyProcess, StateChange, StateWatcher

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not HAPROXY_BIN.exists(), reason=f"{HAPROXY_BIN} is not installed"),
]

T = TypeVar("T")
NS = "outlook.lab.test"
NS_ADDRESS = "127.0.3.10"
INTER_MS, FALL, RISE = 250, 2, 2
SERVER_TIMEOUT_MS, LONG_POLL_MS, HOLD_S = 800, 4000, 1.6


class LoopThread:
    """An asyncio loop running forever in a daemon thread; ``run`` executes a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="lab-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@dataclass
class _Conn:
    challenged: bool = False
    authenticated: bool = False


@dataclass
class FakeCas:
    """A minimal HTTPS/1.1 server standing in for one Exchange server."""

    name: str
    fqdn: str
    address: str
    tls: ssl.SSLContext
    port: int = 0
    unhealthy: set[str] = field(default_factory=set)  # vdirs whose healthcheck.htm answers 503
    hits: list[tuple[float, str]] = field(default_factory=list)  # (time, path) of non-health requests
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.address, self.port, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the listener and reset every open connection: the port now refuses."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        conn = _Conn()
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                target = head[0].split(" ")[1]
                headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in head[1:] if ":" in x)}
                if int(headers.get("content-length", "0")):
                    await reader.readexactly(int(headers["content-length"]))
                status, extra, body = await self._route(target.split("?")[0], headers, conn)
                lines = [f"HTTP/1.1 {status} X", f"X-FEServer: {self.name}", f"Content-Length: {len(body)}", *extra]
                writer.write(("\r\n".join(lines) + "\r\n\r\n" + body).encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ssl.SSLError, IndexError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _route(self, path: str, headers: dict[str, str], conn: _Conn) -> tuple[int, list[str], str]:
        vdir = path.strip("/").split("/")[0].lower()
        if path.lower().endswith("/healthcheck.htm"):
            if vdir in self.unhealthy:
                return 503, [], "Service Unavailable"
            return 200, [], f"200 OK<br/>{self.fqdn}"
        self.hits.append((time.time(), path))
        if path.endswith("/slow"):
            await asyncio.sleep(HOLD_S)
        if path.endswith("/ntlm"):  # connection-bound auth: 401, 401 + challenge, then the connection is in
            auth = headers.get("authorization", "")
            if conn.authenticated or (auth.startswith("NTLM ") and conn.challenged):
                conn.authenticated = True
                return 200, [], self.name
            if auth.startswith("NTLM "):
                conn.challenged = True
                return 401, ["WWW-Authenticate: NTLM TlRMTVNTUAACAAAA"], ""
            return 401, ["WWW-Authenticate: NTLM", "WWW-Authenticate: Negotiate"], ""
        return 200, [], self.name


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


@dataclass
class Pki:
    ca_file: Path
    lb_pem: Path
    client: ssl.SSLContext
    servers: dict[str, ssl.SSLContext]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A trustme CA, the LB's namespace certificate and one leaf per server (also naming the namespace)."""
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA(organization_name="casprobe test CA")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    ca.issue_cert(NS, "autodiscover.lab.test").private_key_and_cert_chain_pem.write_to_path(str(folder / "lb.pem"))
    servers = {}
    for i in (1, 2, 3):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(f"mb{i}.lab.test", NS, "autodiscover.lab.test").configure_cert(ctx)
        servers[f"mb{i}"] = ctx
    return Pki(folder / "ca.pem", folder / "lb.pem", ssl.create_default_context(cafile=str(folder / "ca.pem")), servers)


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    """The lab's event loop, in a thread."""
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="module")
def backends(loop: LoopThread, pki: Pki) -> Iterator[dict[str, FakeCas]]:
    """Three fake Exchange servers on 127.0.3.11-13 (free ports)."""
    cas = {name: FakeCas(name, f"{name}.lab.test", f"127.0.3.1{name[-1]}", tls) for name, tls in pki.servers.items()}
    for server in cas.values():
        loop.run(server.start())
    yield cas
    for server in cas.values():
        loop.run(server.stop())


@dataclass
class Lab:
    mode: str
    loop: LoopThread
    proc: HaproxyProcess
    backends: dict[str, FakeCas]
    client: httpx.Client
    events: list[StateChange]
    port: int

    def backend_for(self, vdir: str) -> str:
        return backend_name(vdir) if self.mode == "l7" else L4_BACKEND

    def get(self, path: str, client: httpx.Client | None = None, **headers: str) -> httpx.Response:
        return (client or self.client).get(
            f"https://{NS_ADDRESS}:{self.port}{path}",
            headers={"Host": NS, **headers},
            extensions={"sni_hostname": NS},
        )

    def who(self, path: str, count: int) -> Counter[str]:
        """Send ``count`` requests (one connection each) and count which server answered; all must be 200."""
        seen: Counter[str] = Counter()
        for _ in range(count):
            response = self.get(path)
            assert response.status_code == 200, response.text
            seen[response.headers["X-FEServer"]] += 1
        return seen

    def wait_event(self, backend: str, server: str, new: str, since: float, timeout: float = 5.0) -> StateChange:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in list(self.events):
                if (ev.backend, ev.server, ev.new) == (backend, server, new) and ev.observed_at >= since:
                    return ev
            time.sleep(0.02)
        raise AssertionError(f"no {backend}/{server} -> {new} after {timeout} s; events: {self.events[-10:]}")

    def wait_all_up(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeApiError):
                if all(st.state == "UP" for st in self.proc.api.server_states().values()):
                    return
            time.sleep(0.02)
        raise AssertionError(f"not all UP: {self.proc.api.server_states()}")


def lb_settings(mode: str, pki: Pki, run_dir: Path, port: int) -> LbSettings:
    return LbSettings(
        mode="l7" if mode == "l7" else "l4",
        bind_address=NS_ADDRESS,
        port=port,
        ca_file=pki.ca_file,
        lb_pem=pki.lb_pem,
        run_dir=run_dir,
        inter_ms=INTER_MS,
        fall=FALL,
        rise=RISE,
        timeout_client_ms=SERVER_TIMEOUT_MS,
        timeout_server_ms=SERVER_TIMEOUT_MS,
        timeout_long_poll_ms=LONG_POLL_MS,
    )


def lb_servers(backends: dict[str, FakeCas]) -> list[LbBackendServer]:
    return [LbBackendServer(c.name, c.fqdn, c.address, c.port) for c in backends.values()]


@pytest.fixture(scope="module", params=["l7", "l4"])
def lab(
    request: pytest.FixtureRequest,
    loop: LoopThread,
    pki: Pki,
    backends: dict[str, FakeCas],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Lab]:
    """HAProxy in one shape in front of the three servers, with a StateWatcher recording every change."""
    mode = str(request.param)
    port = free_port(NS_ADDRESS)
    proc = HaproxyProcess(lb_settings(mode, pki, tmp_path_factory.mktemp(f"lb-{mode}"), port), lb_servers(backends))
    events: list[StateChange] = []
    watcher = StateWatcher(proc, events.append, interval_s=0.1)

    async def up() -> asyncio.Task[None]:
        await proc.start()
        return asyncio.create_task(watcher.run())

    task = loop.run(up())
    client = httpx.Client(verify=pki.client, limits=httpx.Limits(max_keepalive_connections=0), timeout=10)
    try:
        yield Lab(mode, loop, proc, backends, client, events, port)
    finally:
        client.close()
        loop.loop.call_soon_threadsafe(task.cancel)
        loop.run(proc.stop())


@pytest.fixture(autouse=True)
def _healthy(request: pytest.FixtureRequest) -> None:
    """Before each lab test: every server running, healthy and ready, and seen UP by HAProxy."""
    if "lab" not in request.fixturenames:
        return
    lab: Lab = request.getfixturevalue("lab")
    for cas in lab.backends.values():
        cas.unhealthy.clear()
        if not cas.running:
            lab.loop.run(cas.start())
    for backend, server in lab.proc.api.server_states():
        lab.proc.api.set_server_state(backend, server, "ready")
    lab.wait_all_up()


def test_requests_are_spread_over_all_servers(lab: Lab) -> None:
    """Round robin through the namespace reaches every server, for every vdir in l7."""
    for path in ("/mapi/emsmdb/", "/EWS/Exchange.asmx", "/owa/", "/nowhere"):
        seen = lab.who(path, 9)
        assert set(seen) == {"mb1", "mb2", "mb3"}, (path, seen)


def test_failing_healthcheck_takes_server_out_then_back(lab: Lab) -> None:
    """A 503 /mapi/healthcheck.htm gets the server DOWN within inter×fall+1 s and out of rotation; 200 undoes it."""
    backend = lab.backend_for("mapi")
    flipped = time.time()
    lab.backends["mb1"].unhealthy.add("mapi")
    down = lab.wait_event(backend, "mb1", "DOWN", flipped)
    lag = down.observed_at - down.at
    print(f"\n[{lab.mode}] DOWN after {down.at - flipped:.3f} s, poll saw it {lag:.3f} s later: {down.detail[:50]}")
    assert down.source == "log"
    assert "503" in down.detail
    assert 0 < down.at - flipped <= INTER_MS * FALL / 1000 + 1
    seen_at = time.time()
    assert "mb1" not in lab.who("/mapi/emsmdb/", 12)
    assert not [hit for hit in lab.backends["mb1"].hits if hit[0] >= seen_at and hit[1].startswith("/mapi/")]
    if lab.mode == "l7":  # scenario B: only the MAPI pool lost mb1
        assert "mb1" in lab.who("/ews/Exchange.asmx", 6)
        assert lab.proc.api.server_states()[("be_ews", "mb1")].state == "UP"
    fixed = time.time()
    lab.backends["mb1"].unhealthy.clear()
    up = lab.wait_event(backend, "mb1", "UP", fixed)
    print(f"[{lab.mode}] UP after {up.at - fixed:.3f} s ({up.source})")
    assert 0 < up.at - fixed <= INTER_MS * RISE / 1000 + 1
    assert lab.who("/mapi/emsmdb/", 6)["mb1"] >= 1


def redispatched(lab: Lab, server: str) -> int:
    rows = csv.DictReader(lab.proc.api.runtime("show stat").removeprefix("# ").splitlines())
    return sum(int(row["wredis"] or 0) for row in rows if row["svname"] == server)


def test_stopped_backend_is_redispatched_and_marked_down(lab: Lab) -> None:
    """While a stopped server is still believed UP, its requests are redispatched: clients see no error."""
    before = redispatched(lab, "mb2")
    stopped = time.time()
    lab.loop.run(lab.backends["mb2"].stop())
    answered: Counter[str] = Counter()
    deadline = time.monotonic() + 5
    while not [e for e in lab.events if e.server == "mb2" and e.new == "DOWN" and e.observed_at >= stopped]:
        assert time.monotonic() < deadline, "mb2 never went DOWN"
        answered += lab.who("/mapi/emsmdb/", 1)
    answered += lab.who("/mapi/emsmdb/", 6)
    down = lab.wait_event(lab.backend_for("mapi"), "mb2", "DOWN", stopped)
    print(f"\n[{lab.mode}] stopped backend DOWN after {down.at - stopped:.3f} s; answers {dict(answered)}")
    assert down.at - stopped <= INTER_MS * FALL / 1000 + 1
    assert "mb2" not in answered
    assert redispatched(lab, "mb2") > before  # the refused connections were really sent elsewhere


def test_runtime_maint_drain_and_ready(lab: Lab) -> None:
    """set_server_state maint/drain removes a server from rotation at once and ready brings it back."""
    backend = lab.backend_for("mapi")
    api = lab.proc.api
    for admin, state in (("maint", "MAINT"), ("drain", "DRAIN"), ("ready", "UP")):
        since = time.time()
        api.set_server_state(backend, "mb3", admin)  # type: ignore[arg-type]
        assert api.server_states()[(backend, "mb3")].state == state
        event = lab.wait_event(backend, "mb3", state, since)
        assert event.source == "log"
        assert event.at - since < 0.5
        seen = lab.who("/mapi/emsmdb/", 9)
        assert ("mb3" in seen) is (state == "UP"), (admin, seen)
    with pytest.raises(RuntimeApiError, match="No such backend"):
        api.set_server_state("be_nope", "mb3", "maint")
    with pytest.raises(RuntimeApiError, match="not a valid"):
        api.set_server_state(backend, "mb3; shutdown", "maint")


def test_ntlm_style_connection_auth_survives_the_lb(lab: Lab, pki: Pki) -> None:
    """A connection authenticated by a 401 handshake keeps talking to the same server connection."""
    with httpx.Client(verify=pki.client, timeout=10) as client:
        assert lab.get("/ews/ntlm", client).status_code == 401
        challenge = lab.get("/ews/ntlm", client, Authorization="NTLM TlRMTVNTUAABAAAA")
        assert challenge.status_code == 401
        done = lab.get("/ews/ntlm", client, Authorization="NTLM TlRMTVNTUAADAAAA")
        assert done.status_code == 200
        follow_ups = [lab.get("/ews/ntlm", client) for _ in range(6)]  # no Authorization, as exchangelib does
    assert [r.status_code for r in follow_ups] == [200] * 6
    assert {r.headers["X-FEServer"] for r in (challenge, done, *follow_ups)} == {done.headers["X-FEServer"]}


def test_restart_keeps_watching(lab: Lab) -> None:
    """restart() replaces the process (new pid); the namespace answers again and the watcher keeps working."""
    old_pid = lab.proc.pid
    started = time.monotonic()
    lab.loop.run(lab.proc.restart())
    print(f"\n[{lab.mode}] restart took {time.monotonic() - started:.3f} s")
    assert lab.proc.pid not in (None, old_pid)
    assert old_pid is not None
    assert not Path(f"/proc/{old_pid}").exists()
    assert set(lab.who("/mapi/emsmdb/", 6)) == {"mb1", "mb2", "mb3"}
    since = time.time()
    lab.proc.api.set_server_state(lab.backend_for("ews"), "mb1", "maint")
    lab.wait_event(lab.backend_for("ews"), "mb1", "MAINT", since)


def test_long_poll_vdir_outlasts_server_timeout(lab: Lab, pki: Pki) -> None:
    """A /mapi/ request held past timeout server and client succeeds; in l7 a held /ews/ one gets HAProxy's 504."""
    with httpx.Client(verify=pki.client, timeout=10) as client:
        held = lab.get("/mapi/slow", client)
        other = lab.get("/ews/slow", client)
    assert held.status_code == 200
    # l7: per-backend timeout server; l4: one TCP backend whose client and server timeouts are the long-poll one
    assert other.status_code == (504 if lab.mode == "l7" else 200)


def test_stop_leaves_no_process(loop: LoopThread, pki: Pki, backends: dict[str, FakeCas], tmp_path: Path) -> None:
    """stop() SIGTERMs and reaps HAProxy: neither its pid nor any process running its config remains."""
    proc = HaproxyProcess(lb_settings("l7", pki, tmp_path, free_port(NS_ADDRESS)), lb_servers(backends))
    loop.run(proc.start())
    pid = proc.pid
    assert pid is not None
    assert Path(f"/proc/{pid}").exists()
    started = time.monotonic()
    loop.run(proc.stop())
    print(f"\nstop took {time.monotonic() - started:.3f} s")
    assert proc.pid is None
    assert not Path(f"/proc/{pid}").exists()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                assert str(proc.cfg_path).encode() not in (entry / "cmdline").read_bytes(), entry.name
    loop.run(proc.stop())  # idempotent


def test_bind_conflict_fails_fast(loop: LoopThread, pki: Pki, backends: dict[str, FakeCas], tmp_path: Path) -> None:
    """A namespace address already in use makes start() raise HaproxyStartError quoting HAProxy's bind error."""
    with socket.socket() as squatter:
        squatter.bind((NS_ADDRESS, 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        proc = HaproxyProcess(lb_settings("l4", pki, tmp_path, port), lb_servers(backends))
        started = time.monotonic()
        with pytest.raises(HaproxyStartError, match=r"(?i)cannot bind|address already in use"):
            loop.run(proc.start())
        assert time.monotonic() - started < 3
        assert proc.pid is None


def test_watcher_reports_initial_states(
    loop: LoopThread, pki: Pki, backends: dict[str, FakeCas], tmp_path: Path
) -> None:
    """The first poll reports every server from UNKNOWN; a server failing from the start is reported DOWN."""
    backends["mb2"].unhealthy.add("mapi")
    proc = HaproxyProcess(lb_settings("l4", pki, tmp_path, free_port(NS_ADDRESS)), lb_servers(backends))
    events: list[StateChange] = []
    try:
        loop.run(proc.start())
        watcher = StateWatcher(proc, events.append)
        loop.run(watcher.poll_once())
        assert {(e.server, e.old) for e in events} == {(f"mb{i}", "UNKNOWN") for i in (1, 2, 3)}
        deadline = time.monotonic() + 3
        while ("mb2", "DOWN") not in {(e.server, e.new) for e in events}:
            assert time.monotonic() < deadline, events
            loop.run(watcher.poll_once())
            time.sleep(0.05)
    finally:
        backends["mb2"].unhealthy.clear()
        loop.run(proc.stop())
    assert os.path.exists(proc.log_path)
