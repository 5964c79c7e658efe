"""In-process tests of the lab's authentication layer (casprobe.lab.ntlm and helpers), no sockets."""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import spnego
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from starlette.types import Message, Receive, Scope, Send

from casprobe.lab.conntable import ConnectionTable
from casprobe.lab.httpauth import challenge_values, decode_basic, split_credentials
from casprobe.lab.ntlm import AuthConfig, AuthMiddleware
from casprobe.lab.ntlmcreds import certificate_hash, format_user_file_line

PASSWORD = "Passw0rd-unit!"
SERVER = ("127.0.0.61", 443)


@pytest.fixture
def user_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An NTLM_USER_FILE with LAB\\alice and a UPN user, set in the environment for this test."""
    path = tmp_path / "users"
    lines = [format_user_file_line("LAB", "alice", PASSWORD), format_user_file_line("", "carol@lab.test", PASSWORD)]
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(path))
    return path


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    size = 0
    more = True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    state = scope.get("state", {})
    body = json.dumps({"user": state.get("user"), "method": state.get("auth_method"), "size": size}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@dataclass
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    messages: list[Message] = field(default_factory=list)

    def get_list(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name]

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    mw: AuthMiddleware,
    authorization: str | None = None,
    *,
    client: tuple[str, int] = ("127.0.0.1", 50000),
    path: str = "/ews/exchange.asmx",
    method: str = "POST",
    chunks: Iterable[bytes] = (b"",),
    scope_type: str = "http",
) -> Reply:
    pending = list(chunks)
    sent: list[Message] = []

    async def receive() -> Message:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    scope = {
        "type": scope_type,
        "method": method,
        "path": path,
        "headers": headers,
        "client": client,
        "server": SERVER,
    }
    asyncio.run(mw(scope, receive, send))
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    if start is None:
        return Reply(0, [], body, sent)
    return Reply(start["status"], list(start["headers"]), body, sent)


def make_mw(config: AuthConfig | None = None, clock: Clock | None = None, **kwargs: Any) -> AuthMiddleware:
    def verify(user: str, password: str) -> str | None:
        return "LAB\\alice" if user.lower() in ("lab\\alice", "alice") and password == PASSWORD else None

    return AuthMiddleware(
        echo_app,
        config or AuthConfig(offered=("Negotiate", "NTLM", "Basic", "Bearer"), realm="mb1.lab.test"),
        server_cert_der=kwargs.pop("server_cert_der", None),
        verify_basic=kwargs.pop("verify_basic", verify),
        is_anonymous=lambda p: p.endswith("/healthcheck.htm"),
        clock=clock or Clock(),
    )


def handshake(
    mw: AuthMiddleware,
    *,
    scheme: str = "NTLM",
    password: str = PASSWORD,
    client: tuple[str, int] = ("127.0.0.1", 50000),
    user: str = "LAB\\alice",
) -> Reply:
    protocol = "ntlm" if scheme == "NTLM" else "negotiate"
    options = spnego.NegotiateOptions.use_ntlm if scheme == "NTLM" else spnego.NegotiateOptions.use_negotiate
    ctx = spnego.client(user, password, hostname="mb1.lab.test", service="HTTP", protocol=protocol, options=options)
    reply = call(mw, f"{scheme} {base64.b64encode(ctx.step() or b'').decode()}", client=client)
    assert reply.status == 401
    (challenge,) = reply.get_list(b"www-authenticate")
    token = base64.b64decode(challenge.split(b" ", 1)[1])
    return call(mw, f"{scheme} {base64.b64encode(ctx.step(token) or b'').decode()}", client=client)


def test_user_file_line_matches_ms_nlmp_vectors() -> None:
    """The smbpasswd line carries LMOWFv1/NTOWFv1 of "Password" as given in [MS-NLMP] §4.2.2.1.1."""
    line = format_user_file_line("LAB", "alice", "Password")
    assert line == "LAB\\alice:1000:E52CAC67419A9A224A3B108F3FA6CB6D:A4F49C406510BDCAB6824EE7C30FD852:[U]:LCT-00000000"
    assert format_user_file_line("", "carol@lab.test", "Password").startswith("carol@lab.test:1000:")


@pytest.mark.parametrize(
    ("domain", "user", "password"),
    [
        ("LA:B", "alice", "x"),
        ("LAB", "al\\ice", "x"),
        ("LAB", "", "x"),
        ("LAB", "a\nb", "x"),
        ("LAB", "a", "a" * 32 + ":" + "b" * 32),
    ],
)
def test_user_file_line_rejects_unsafe_input(domain: str, user: str, password: str) -> None:
    """Separators or line breaks in names, and hash-pair-looking passwords, are refused without echoing the password."""
    with pytest.raises(ValueError, match="must not") as info:
        format_user_file_line(domain, user, password)
    assert "bbbb" not in str(info.value)


def _self_signed(algorithm: hashes.SHA256 | hashes.SHA384) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mb1.lab.test")])
    now = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, algorithm)
    )
    return cert.public_bytes(Encoding.DER)


def test_certificate_hash_follows_signature_algorithm() -> None:
    """tls-server-end-point uses the certificate's signature hash (SHA-384 here) and SHA-256 for a SHA-256 one."""
    der384 = _self_signed(hashes.SHA384())
    der256 = _self_signed(hashes.SHA256())
    assert certificate_hash(der384) == hashlib.sha384(der384).digest()
    assert certificate_hash(der256) == hashlib.sha256(der256).digest()


def test_config_canonicalises_and_validates() -> None:
    """Scheme names are matched case-insensitively and stored canonically; unknown or duplicate schemes fail."""
    assert AuthConfig(offered=("ntlm", "NEGOTIATE", "basic")).offered == ("NTLM", "Negotiate", "Basic")
    for bad in [(), ("Digest",), ("NTLM", "ntlm")]:
        with pytest.raises(ValueError, match="offered"):
            AuthConfig(offered=bad)
    with pytest.raises(ValueError, match="realm"):
        AuthConfig(realm='a"b')
    with pytest.raises(ValueError, match="extended_protection"):
        make_mw(AuthConfig(extended_protection=True))


def test_header_helpers() -> None:
    """Credentials split on the first space, Basic decodes UTF-8 then Latin-1, challenges keep the offer order."""
    assert split_credentials(b"NTLM  abc= ") == ("NTLM", "abc=")
    assert split_credentials(b"\xff NTLM") is None
    assert split_credentials(b"NTLM " + b"A" * 20000) is None
    assert decode_basic(base64.b64encode("jos\u00e9:pw:x".encode()).decode()) == ("jos\u00e9", "pw:x")
    assert decode_basic(base64.b64encode(b"jos\xe9:pw").decode()) == ("jos\u00e9", "pw")
    assert decode_basic(base64.b64encode(b"nocolon").decode()) is None
    assert decode_basic("%%%") is None
    assert challenge_values(("Negotiate", "Basic", "Bearer"), "r", bearer_error=True) == [
        b"Negotiate",
        b'Basic realm="r"',
        b'Bearer error="invalid_token"',
    ]


def test_anonymous_request_gets_one_challenge_per_offer(user_file: Path) -> None:
    """A request without credentials gets 401, small text/html with Content-Length and each offer on its own line."""
    reply = call(make_mw(), method="POST", chunks=[b"a" * 10, b"b" * 5])
    assert reply.status == 401
    assert reply.get_list(b"www-authenticate") == [b"Negotiate", b"NTLM", b'Basic realm="mb1.lab.test"', b"Bearer"]
    assert reply.get_list(b"content-type") == [b"text/html"]
    assert reply.get_list(b"content-length") == [str(len(reply.body)).encode()]
    assert 0 < len(reply.body) < 1024


def test_head_401_has_no_body(user_file: Path) -> None:
    """A HEAD answered 401 keeps Content-Length but sends no body bytes."""
    reply = call(make_mw(), method="HEAD")
    assert reply.status == 401
    assert reply.body == b""
    assert int(reply.get_list(b"content-length")[0]) > 0


def test_drain_counts_every_chunk_and_skips_send_on_disconnect(user_file: Path) -> None:
    """The 401 path reads all body chunks; when the client has gone away nothing is sent."""
    mw = make_mw()
    call(mw, chunks=[b"x" * 1000] * 7)
    assert mw.stats.drained_bytes == 7000

    async def gone() -> Message:
        return {"type": "http.disconnect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/ews/",
        "headers": [],
        "client": ("127.0.0.1", 1),
        "server": SERVER,
    }
    asyncio.run(mw(scope, gone, send))
    assert sent == []


def test_ntlm_handshake_then_connection_is_authenticated(user_file: Path) -> None:
    """After type 1/2/3 the app sees the principal; the same connection then needs no header, another does."""
    mw = make_mw()
    reply = handshake(mw)
    assert reply.status == 200
    assert reply.json() == {"user": "LAB\\alice", "method": "NTLM", "size": 0}
    assert call(mw).json()["user"] == "LAB\\alice"
    assert call(mw, client=("127.0.0.1", 50001)).status == 401
    assert mw.stats.handshakes_completed == 1


def test_upn_user_and_spnego_final_token(user_file: Path) -> None:
    """A SPNEGO handshake for a UPN user succeeds and the 200 carries the acceptor's final Negotiate token."""
    mw = make_mw()
    reply = handshake(mw, scheme="Negotiate", user="carol@lab.test")
    assert reply.json()["user"] == "carol@lab.test"
    assert reply.json()["method"] == "Negotiate"
    (final,) = reply.get_list(b"www-authenticate")
    assert final.startswith(b"Negotiate ")


def test_wrong_password_drops_connection_state(user_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong password answers 401 with the offer list, logs one warning without secrets and unauthenticates."""
    mw = make_mw()
    assert handshake(mw).status == 200
    caplog.set_level(logging.WARNING, logger="casprobe.lab.ntlm")
    reply = handshake(mw, password="wrong-secret")
    assert reply.status == 401
    assert len(reply.get_list(b"www-authenticate")) == 4
    assert call(mw).status == 401
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "wrong-secret" not in caplog.text
    assert caplog.records[0].exc_info is None


def test_type3_on_another_connection_or_scheme_is_refused(user_file: Path) -> None:
    """A handshake continued on a different connection key or under a different scheme fails cleanly."""
    mw = make_mw()
    ctx = spnego.client("LAB\\alice", PASSWORD, protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
    reply = call(mw, f"NTLM {base64.b64encode(ctx.step() or b'').decode()}")
    token = base64.b64decode(reply.get_list(b"www-authenticate")[0].split(b" ", 1)[1])
    type3 = base64.b64encode(ctx.step(token) or b"").decode()
    assert call(mw, f"NTLM {type3}", client=("127.0.0.1", 50009)).status == 401
    assert call(mw, f"Negotiate {type3}").status == 401
    assert call(mw, f"NTLM {type3}").status == 401  # the pending context was dropped by the failure
    assert mw.stats.handshakes_completed == 0


def test_pending_and_authenticated_records_expire(user_file: Path) -> None:
    """Records follow their idle TTLs: a renewed connection stays, an idle one needs a new handshake."""
    clock = Clock()
    mw = make_mw(AuthConfig(offered=("NTLM",), connection_ttl_s=10, pending_ttl_s=5), clock)
    assert handshake(mw).status == 200
    for _ in range(3):
        clock.now += 8
        assert call(mw).status == 200
    clock.now += 11
    assert call(mw).status == 401
    ctx = spnego.client("LAB\\alice", PASSWORD, protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
    reply = call(mw, f"NTLM {base64.b64encode(ctx.step() or b'').decode()}")
    token = base64.b64decode(reply.get_list(b"www-authenticate")[0].split(b" ", 1)[1])
    clock.now += 6
    assert call(mw, f"NTLM {base64.b64encode(ctx.step(token) or b'').decode()}").status == 401


def test_connection_table_is_bounded() -> None:
    """The table evicts least recently used records beyond its bound and counts evictions."""
    table: ConnectionTable[int] = ConnectionTable(60, 3, Clock())
    for i in range(10):
        table.put(i, i)
    assert len(table) == 3
    assert table.get(0) is None
    assert table.get(9) == 9
    assert table.evictions == 7


def test_lru_bound_applies_to_connections(user_file: Path) -> None:
    """With max_connections=2 the oldest authenticated connection is forgotten when a third authenticates."""
    mw = make_mw(AuthConfig(offered=("NTLM",), max_connections=2))
    for port in (1, 2, 3):
        assert handshake(mw, client=("127.0.0.1", port)).status == 200
    assert [call(mw, client=("127.0.0.1", p)).status for p in (1, 2, 3)] == [401, 200, 200]


def test_basic_bearer_and_unoffered_schemes(user_file: Path) -> None:
    """Basic is checked per request; Bearer is always refused with invalid_token; unoffered schemes never verify."""
    calls: list[str] = []

    def verify(user: str, password: str) -> str | None:
        calls.append(user)
        return "LAB\\alice" if password == PASSWORD else None

    mw = make_mw(verify_basic=verify)
    good = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    reply = call(mw, f"basic {good}")
    assert reply.json() == {"user": "LAB\\alice", "method": "Basic", "size": 0}
    assert call(mw).status == 401  # Basic does not authenticate the connection
    assert call(mw, "Basic " + base64.b64encode(b"alice:nope").decode()).status == 401
    bearer = call(mw, "Bearer eyJ0eXAi.x.y")
    assert bearer.status == 401
    assert b'Bearer error="invalid_token"' in bearer.get_list(b"www-authenticate")
    ntlm_only = make_mw(AuthConfig(offered=("NTLM",)), verify_basic=verify)
    refused = call(ntlm_only, f"Basic {good}")
    assert refused.status == 401
    assert refused.get_list(b"www-authenticate") == [b"NTLM"]
    assert call(ntlm_only, "Bearer abc").get_list(b"www-authenticate") == [b"NTLM"]
    assert calls == ["alice", "alice"]


def test_basic_verifier_exception_is_a_401(user_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A verifier that raises turns into a 401 and a warning, never a 500, and the password is not logged."""

    def broken(user: str, password: str) -> str | None:
        raise KeyError(password)

    mw = make_mw(verify_basic=broken)
    reply = call(mw, "Basic " + base64.b64encode(b"alice:s3cret-value").decode())
    assert reply.status == 401
    assert "s3cret-value" not in caplog.text
    assert [r.getMessage() for r in caplog.records] == [
        "Basic credentials rejected for user 'alice': verifier raised KeyError"
    ]


def _garbage() -> Iterator[str]:
    yield "NTLM %%%not-base64%%%"
    yield "NTLM"
    yield "NTLM " + base64.b64encode(bytes(range(256)) * 3).decode()
    yield "NTLM " + base64.b64encode(b"NTLMSSP\x00\x01\x00\x00\x00\x07").decode()
    yield "NTLM " + base64.b64encode(b"NTLMSSP\x00\x03\x00\x00\x00" + b"\x00" * 12).decode()
    yield "Negotiate " + base64.b64encode(b"\x60\x05\x00").decode()
    yield "NTLM " + base64.b64encode(b"\x60\x82\x01\x00" + b"\x00" * 40).decode()
    yield "Negotiate " + base64.b64encode(b"\xa1\x03\x02\x01\x00").decode()
    yield "Digest username=x"


@pytest.mark.parametrize("authorization", list(_garbage()))
def test_garbage_tokens_are_plain_401(user_file: Path, authorization: str, caplog: pytest.LogCaptureFixture) -> None:
    """Malformed credentials answer 401 with the offer list and at most one warning line, never an exception."""
    mw = make_mw()
    reply = call(mw, authorization)
    assert reply.status == 401
    assert len(reply.get_list(b"www-authenticate")) == 4
    assert all(r.levelno <= logging.WARNING and r.exc_info is None for r in caplog.records)
    assert len(caplog.records) <= 1
    assert handshake(mw).status == 200


def test_missing_user_file_is_a_401(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without NTLM_USER_FILE the acceptor cannot start: the client gets 401, not a 500."""
    monkeypatch.delenv("NTLM_USER_FILE", raising=False)
    mw = make_mw()
    ctx = spnego.client("LAB\\alice", PASSWORD, protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
    reply = call(mw, f"NTLM {base64.b64encode(ctx.step() or b'').decode()}")
    assert reply.status == 401
    assert len(reply.get_list(b"www-authenticate")) == 4


def test_anonymous_paths_and_websockets(user_file: Path) -> None:
    """Anonymous paths pass through untouched (no principal); a websocket upgrade is closed."""
    mw = make_mw()
    reply = call(mw, path="/mapi/healthcheck.htm", method="GET")
    assert reply.status == 200
    assert reply.json()["user"] is None
    ws = call(mw, scope_type="websocket", path="/mapi/x")
    assert ws.messages == [{"type": "websocket.close", "code": 1008}]
