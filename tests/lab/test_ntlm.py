"""The lab's authentication layer on a real uvicorn TLS server on loopback, driven by real clients.

One server (127.0.0.61, free port, trustme leaf for mb1.lab.test, ``proxy_headers=False``) serves three virtual
directories, each behind its own :class:`AuthMiddleware`: ``/ep/`` (Negotiate+NTLM, Extended Protection),
``/open/`` (Negotiate+NTLM+Basic+Bearer, no EP) and ``/neg/`` (Negotiate only, EP). Clients pin mb1.lab.test to the
address while keeping SNI and Host, and trust only the test CA.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import ssl
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import spnego
import trustme
import urllib3.util.connection
import uvicorn
from requests_ntlm import HttpNtlmAuth
from spnego.channel_bindings import GssChannelBindings
from starlette.routing import Mount, Router
from starlette.types import Receive, Scope, Send

from casprobe.lab.host import tracking_protocol
from casprobe.lab.ntlm import AuthConfig, AuthMiddleware, channel_bindings_for, format_user_file_line

pytestmark = [pytest.mark.lab, pytest.mark.timeout(60)]

ADDR = "127.0.0.61"
NAME = "mb1.lab.test"
USER = "LAB\\alice"
PASSWORD = "Lab-Passw0rd!"
OPEN_OFFERS = [b"Negotiate", b"NTLM", b'Basic realm="mb1.lab.test"', b"Bearer"]


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    size = 0
    more = True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    state = scope.get("state", {})
    body = json.dumps({"user": state.get("user"), "method": state.get("auth_method"), "size": size}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass
class Lab:
    port: int
    ca_file: Path
    cert_der: bytes
    vdirs: dict[str, AuthMiddleware]
    basic_calls: list[str]

    def url(self, path: str) -> str:
        return f"https://{NAME}:{self.port}{path}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Start the TLS server in a background thread with NTLM_USER_FILE set; stop it after the module."""
    folder = tmp_path_factory.mktemp("ntlm-lab")
    ca = trustme.CA(organization_name="casprobe test CA")
    leaf = ca.issue_cert(NAME)
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    leaf.private_key_pem.write_to_path(str(folder / "mb1.key"))
    (folder / "mb1.crt").write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    cert_der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    users = folder / "users"
    users.write_text(format_user_file_line("LAB", "alice", PASSWORD) + "\n")
    basic_calls: list[str] = []

    def verify_basic(user: str, password: str) -> str | None:
        basic_calls.append(user)
        return USER if user.lower() in ("lab\\alice", "alice") and password == PASSWORD else None

    def vdir(offered: tuple[str, ...], ep: bool) -> AuthMiddleware:
        config = AuthConfig(offered=offered, extended_protection=ep, realm=NAME, connection_ttl_s=30)
        return AuthMiddleware(
            echo_app,
            config,
            server_cert_der=cert_der,
            verify_basic=verify_basic,
            is_anonymous=lambda path: path.endswith("/healthcheck.htm"),
        )

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((ADDR, 0))
    server_options: dict[str, Any] = {
        "ssl_certfile": str(folder / "mb1.crt"),
        "ssl_keyfile": str(folder / "mb1.key"),
        "proxy_headers": False,  # keep scope["client"] the real peer: the NTLM connection key
        "timeout_graceful_shutdown": 1,
        "lifespan": "off",
        # the middleware is loop-agnostic; with uvloop a client socket kept alive by a failing test's traceback
        # made loop close hang (TLS shutdown), turning one failure into a 10 s teardown error
        "loop": "asyncio",
        "ws": "none",
        "log_config": None,  # leave logging alone so caplog sees the server's records
        "access_log": False,
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NTLM_USER_FILE", str(users))
        vdirs = {
            "ep": vdir(("Negotiate", "NTLM"), True),
            "open": vdir(("Negotiate", "NTLM", "Basic", "Bearer"), False),
            "neg": vdir(("Negotiate",), True),
        }
        app = Router(routes=[Mount(f"/{name}", app=mw) for name, mw in vdirs.items()])
        config = uvicorn.Config(app, **server_options)
        config.load()

        def forget(key: Any) -> None:
            for layer in vdirs.values():
                layer.forget_connection(key)

        config.http_protocol_class = tracking_protocol(config.http_protocol_class, forget)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "uvicorn did not start"
        try:
            yield Lab(sock.getsockname()[1], folder / "ca.pem", cert_der, vdirs, basic_calls)
        finally:
            server.should_exit = True
            thread.join(10)
            sock.close()


@pytest.fixture
def pinned(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolve mb1.lab.test to the lab address for urllib3 (requests) inside this test only."""
    original = urllib3.util.connection.create_connection

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        host, port = address
        return original((ADDR if host == NAME else host, port), *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)


SessionFactory = Callable[..., requests.Session]


@pytest.fixture
def session(lab: Lab) -> Iterator[SessionFactory]:
    """Factory of requests sessions trusting only the test CA (trust_env off), all closed at the end of the test."""
    opened: list[requests.Session] = []

    def factory(auth: requests.auth.AuthBase | None = None) -> requests.Session:
        s = requests.Session()
        s.trust_env = False
        s.verify = str(lab.ca_file)
        s.auth = auth
        opened.append(s)
        return s

    yield factory
    for s in opened:
        s.close()


def client_context(lab: Lab) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(lab.ca_file))


class RawConnection:
    """One TLS connection to the lab speaking minimal HTTP/1.1, so tests control exactly what goes on it."""

    def __init__(self, lab: Lab, source_port: int = 0) -> None:
        raw = socket.create_connection((ADDR, lab.port), timeout=20, source_address=("127.0.0.1", source_port))
        self.sock = client_context(lab).wrap_socket(raw, server_hostname=NAME)
        self.reader = self.sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def reset(self) -> None:
        """Close with a TCP reset (SO_LINGER 0): no TIME_WAIT, so the same source port can connect again at once."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.close()

    def peer_bindings(self) -> GssChannelBindings:
        return channel_bindings_for(self.sock.getpeercert(True) or b"")

    def send_head(self, method: str, path: str, headers: dict[str, str], length: int) -> None:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {NAME}", f"Content-Length: {length}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def read_response(self) -> tuple[int, list[tuple[str, str]], bytes]:
        status = int(self.reader.readline().split()[1])
        headers: list[tuple[str, str]] = []
        while (line := self.reader.readline().rstrip(b"\r\n")) != b"":
            name, _, value = line.decode().partition(":")
            headers.append((name.strip().lower(), value.strip()))
        length = int(next(v for n, v in headers if n == "content-length"))
        return status, headers, self.reader.read(length)

    def request(
        self, path: str, authorization: str | None = None, body: bytes = b""
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {} if authorization is None else {"Authorization": authorization}
        self.send_head("POST", path, headers, len(body))
        self.sock.sendall(body)
        return self.read_response()


def challenges(headers: list[tuple[str, str]]) -> list[bytes]:
    return [v.encode() for n, v in headers if n == "www-authenticate"]


def raw_ntlm(
    conn: RawConnection, path: str, *, password: str = PASSWORD, scheme: str = "NTLM", protocol: str = "ntlm"
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Run a full type 1/2/3 exchange with pyspnego as initiator (with channel bindings) on one raw connection."""
    options = spnego.NegotiateOptions.use_ntlm if protocol == "ntlm" else spnego.NegotiateOptions.use_negotiate
    ctx = spnego.client(
        USER,
        password,
        hostname=NAME,
        service="HTTP",
        protocol=protocol,
        options=options,
        channel_bindings=conn.peer_bindings(),
    )
    status, headers, _ = conn.request(path, f"{scheme} {base64.b64encode(ctx.step() or b'').decode()}")
    assert status == 401
    (challenge,) = challenges(headers)
    token = ctx.step(base64.b64decode(challenge.split(b" ", 1)[1]))
    return conn.request(path, f"{scheme} {base64.b64encode(token or b'').decode()}", b"payload")


@pytest.fixture
def raw(lab: Lab) -> Iterator[Callable[[], RawConnection]]:
    """Factory of raw connections, all closed at the end of the test."""
    opened: list[RawConnection] = []

    def factory() -> RawConnection:
        opened.append(RawConnection(lab))
        return opened[-1]

    yield factory
    for conn in opened:
        conn.close()


@pytest.fixture
def quiet_server(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail the test if the server logged an error or any traceback while it ran."""
    caplog.set_level(logging.WARNING)
    yield
    bad = [r for r in caplog.records if r.levelno > logging.WARNING or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


@pytest.mark.usefixtures("pinned", "quiet_server")
def test_requests_ntlm_passes_extended_protection(lab: Lab, session: SessionFactory) -> None:
    """requests-ntlm sends tls-server-end-point bindings and authenticates as LAB\\alice on an EP vdir."""
    response = session(HttpNtlmAuth(USER, PASSWORD)).post(lab.url("/ep/ews"), data=b"x" * 1000)
    assert response.status_code == 200
    assert response.json() == {"user": USER, "method": "NTLM", "size": 1000}


@pytest.mark.usefixtures("pinned", "quiet_server")
def test_requests_ntlm_without_cbt_is_refused_under_extended_protection(lab: Lab, session: SessionFactory) -> None:
    """Without channel bindings the same client gets 401 from the EP vdir."""
    response = session(HttpNtlmAuth(USER, PASSWORD, send_cbt=False)).get(lab.url("/ep/ews"))
    assert response.status_code == 401


@pytest.mark.usefixtures("pinned", "quiet_server")
@pytest.mark.parametrize("send_cbt", [True, False])
def test_requests_ntlm_without_extended_protection(lab: Lab, session: SessionFactory, send_cbt: bool) -> None:
    """With EP off the client authenticates whether or not it sends channel bindings."""
    response = session(HttpNtlmAuth(USER, PASSWORD, send_cbt=send_cbt)).get(lab.url("/open/ews"))
    assert response.status_code == 200
    assert response.json()["user"] == USER


@pytest.mark.usefixtures("pinned", "quiet_server")
def test_iis_connection_semantics_with_requests(lab: Lab, session: SessionFactory) -> None:
    """After the handshake the pooled connection needs no Authorization; a new connection gets 401."""
    s = session(HttpNtlmAuth(USER, PASSWORD))
    assert s.get(lab.url("/ep/mapi")).status_code == 200
    completed = lab.vdirs["ep"].stats.handshakes_completed
    s.auth = None
    again = s.post(lab.url("/ep/mapi"), data=b"more")
    assert again.status_code == 200
    assert again.json() == {"user": USER, "method": "NTLM", "size": 4}
    assert "authorization" not in {k.lower() for k in again.request.headers}
    assert lab.vdirs["ep"].stats.handshakes_completed == completed
    assert session().get(lab.url("/ep/mapi")).status_code == 401


@pytest.mark.usefixtures("quiet_server")
def test_iis_connection_semantics_raw(raw: Callable[[], RawConnection]) -> None:
    """On one raw connection: handshake, then header-less requests get 200; a second connection gets 401."""
    conn = raw()
    status, _, body = raw_ntlm(conn, "/ep/ews")
    assert (status, json.loads(body)["user"]) == (200, USER)
    for _ in range(3):
        assert conn.request("/ep/ews")[0] == 200
    other = raw()
    status, headers, _ = other.request("/ep/ews")
    assert status == 401
    assert challenges(headers) == [b"Negotiate", b"NTLM"]
    # a new type 1 on the authenticated connection restarts the handshake and a failure unauthenticates it
    assert raw_ntlm(conn, "/ep/ews", password="not-it")[0] == 401
    assert conn.request("/ep/ews")[0] == 401


def test_a_new_connection_on_the_same_source_port_is_not_authenticated(lab: Lab) -> None:
    """The identity belongs to the TCP connection, not to its 4-tuple: a later connection reusing the client's
    source port (as a load balancer's server-side connections can) starts unauthenticated.

    ASGI never signals a closed connection; the lab learns it from uvicorn's protocol (``tracking_protocol``)."""
    first = RawConnection(lab)
    port = first.sock.getsockname()[1]
    assert raw_ntlm(first, "/ep/ews")[0] == 200
    assert first.request("/ep/ews")[0] == 200
    first.reset()
    deadline = time.monotonic() + 10
    while True:
        try:
            again = RawConnection(lab, source_port=port)
            break
        except OSError:  # the reset may take a moment to free the port
            assert time.monotonic() < deadline, "source port never became free"
            time.sleep(0.05)
    try:
        assert again.sock.getsockname()[1] == port
        status, headers, _ = again.request("/ep/ews")
        assert status == 401
        assert challenges(headers) == [b"Negotiate", b"NTLM"]
    finally:
        again.close()


@pytest.mark.usefixtures("pinned", "quiet_server")
def test_wrong_password_is_401(lab: Lab, session: SessionFactory) -> None:
    """A wrong password ends in 401 (requests-ntlm does not retry after a failed type 3)."""
    assert session(HttpNtlmAuth(USER, "bad-password")).get(lab.url("/open/ews")).status_code == 401


def _type3_without_type1() -> bytes:
    """A genuine AUTHENTICATE message produced against a private acceptor, to replay where no type 1 was sent."""
    client = spnego.client(USER, PASSWORD, protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
    acceptor = spnego.server(protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
    return client.step(acceptor.step(client.step())) or b""


@pytest.mark.usefixtures("quiet_server")
def test_garbage_tokens_get_401_and_server_keeps_serving(
    lab: Lab, raw: Callable[[], RawConnection], caplog: pytest.LogCaptureFixture
) -> None:
    """Random bytes, bad base64, a lone type 3 and truncated NTLMSSP each get the offer list; others still log in."""
    tokens = [
        "NTLM " + base64.b64encode(os.urandom(64)).decode(),
        "NTLM ###not*base64###",
        "NTLM " + base64.b64encode(_type3_without_type1()).decode(),
        "Negotiate " + base64.b64encode(b"NTLMSSP\x00\x01\x00\x00\x00\x05").decode(),
        "Negotiate " + base64.b64encode(os.urandom(3)).decode(),
    ]
    conn = raw()
    for token in tokens:
        status, headers, _ = conn.request("/open/ews", token, b"body")
        assert status == 401, token
        assert challenges(headers) == OPEN_OFFERS
    # a type 3 cut short after a genuine type 1 on the same connection
    ctx = spnego.client(USER, PASSWORD, protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
    _, headers, _ = conn.request("/open/ews", f"NTLM {base64.b64encode(ctx.step() or b'').decode()}")
    type3 = ctx.step(base64.b64decode(challenges(headers)[0].split(b" ", 1)[1])) or b""
    status, headers, _ = conn.request("/open/ews", f"NTLM {base64.b64encode(type3[:40]).decode()}")
    assert (status, challenges(headers)) == (401, OPEN_OFFERS)
    assert len([r for r in caplog.records if r.name == "casprobe.lab.ntlm"]) == len(tokens) + 1
    assert raw_ntlm(conn, "/open/ews")[0] == 200
    assert raw_ntlm(raw(), "/open/ews")[0] == 200


@pytest.mark.usefixtures("pinned", "quiet_server")
def test_basic_good_bad_and_not_offered(lab: Lab, session: SessionFactory) -> None:
    """Basic authenticates per request where offered, fails on a bad password, is never checked where not offered."""
    ok = session().get(lab.url("/open/ews"), auth=(USER, PASSWORD))
    assert ok.status_code == 200
    assert ok.json() == {"user": USER, "method": "Basic", "size": 0}
    assert session().get(lab.url("/open/ews"), auth=(USER, "nope")).status_code == 401
    calls = len(lab.basic_calls)
    refused = session().get(lab.url("/ep/ews"), auth=(USER, PASSWORD))
    assert refused.status_code == 401
    assert len(lab.basic_calls) == calls
    bearer = session().get(lab.url("/open/ews"), headers={"Authorization": "Bearer abc.def.ghi"})
    assert bearer.status_code == 401
    assert 'Bearer error="invalid_token"' in bearer.headers["www-authenticate"]


@pytest.mark.usefixtures("quiet_server")
@pytest.mark.parametrize("send_cbt", [True, False])
def test_spnego_negotiate_through_httpx(lab: Lab, send_cbt: bool) -> None:
    """A SPNEGO-wrapped Negotiate handshake over one httpx connection passes EP with bindings, fails without."""
    url = f"https://{ADDR}:{lab.port}/neg/mapi/emsmdb"
    ext = {"sni_hostname": NAME}
    with httpx.Client(verify=client_context(lab), trust_env=False, headers={"Host": NAME}) as client:
        first = client.post(url, content=b"abc", extensions=ext)
        assert (first.status_code, first.headers.get_list("www-authenticate")) == (401, ["Negotiate"])
        peer = first.extensions["network_stream"].get_extra_info("ssl_object").getpeercert(True)
        ctx = spnego.client(
            USER,
            PASSWORD,
            hostname=NAME,
            service="HTTP",
            protocol="negotiate",
            options=spnego.NegotiateOptions.use_negotiate,
            channel_bindings=channel_bindings_for(peer) if send_cbt else None,
        )
        init = ctx.step() or b""
        assert init[:1] == b"\x60"
        second = client.post(url, content=b"abc", extensions=ext, headers={"Authorization": _neg(init)})
        assert second.status_code == 401
        challenge = second.headers["www-authenticate"].split(" ", 1)[1]
        third = client.post(
            url, content=b"abc", extensions=ext, headers={"Authorization": _neg(ctx.step(base64.b64decode(challenge)))}
        )
        if not send_cbt:
            assert third.status_code == 401
            return
        assert third.status_code == 200
        assert third.json() == {"user": USER, "method": "Negotiate", "size": 3}
        ctx.step(base64.b64decode(third.headers["www-authenticate"].split(" ", 1)[1]))
        assert ctx.complete
        assert client.get(url, extensions=ext).status_code == 200


def _neg(token: bytes | None) -> str:
    return "Negotiate " + base64.b64encode(token or b"").decode()


@pytest.mark.usefixtures("pinned", "quiet_server")
def test_raw_ntlmssp_under_negotiate_with_requests_ntlm(lab: Lab, session: SessionFactory) -> None:
    """Against a Negotiate-only vdir requests-ntlm sends raw NTLMSSP under Negotiate, which is accepted."""
    response = session(HttpNtlmAuth(USER, PASSWORD)).get(lab.url("/neg/ews"))
    assert response.status_code == 200
    assert response.json()["method"] == "Negotiate"


@pytest.mark.usefixtures("quiet_server")
def test_large_unauthenticated_body_is_drained_not_held(lab: Lab, raw: Callable[[], RawConnection]) -> None:
    """A 20 MiB body without credentials gets 401 while server-side Python memory stays far below the body size."""
    size = 20 * 1024 * 1024
    chunk = memoryview(bytes(256 * 1024))
    conn = raw()
    before = lab.vdirs["open"].stats.drained_bytes
    tracemalloc.start()
    try:
        conn.send_head("POST", "/open/ews", {}, size)
        for offset in range(0, size, len(chunk)):
            conn.sock.sendall(chunk[: min(len(chunk), size - offset)])
        status, headers, _ = conn.read_response()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 401
    assert challenges(headers) == OPEN_OFFERS
    assert lab.vdirs["open"].stats.drained_bytes - before == size
    assert peak < 4 * 1024 * 1024, peak
    assert conn.request("/open/ews", body=b"after")[0] == 401  # the connection stayed in sync
