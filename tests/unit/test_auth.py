"""Client authentication flows (casprobe.net.auth) against small stateful fake servers on httpx.MockTransport.

The fake IIS runs pyspnego's real acceptor (users from a temporary NTLM_USER_FILE), remembers an authenticated
"connection" like IIS, and can expose a fake TLS stream so that channel bindings and connection identity are checked
without sockets. Credential loaders and the secrecy of the password are tested at the end.
"""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import logging
import os
import pickle
import ssl
from collections.abc import Iterator
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import httpx
import pytest
import spnego
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from casprobe.errors import ConfigError, CredentialError
from casprobe.lab.ntlmcreds import channel_bindings_for, format_user_file_line
from casprobe.net.auth import (
    AuthFailure,
    AuthReport,
    AutoAuth,
    BasicAuth,
    BearerAuth,
    Challenge,
    SpnegoAuth,
    auth_report,
    parse_www_authenticate,
    tls_server_end_point,
)
from casprobe.net.credentials import BearerToken, Credentials, Secret

PASSWORD = "Sw0rdfish-Zq9!"
TOKEN = "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
URL = "https://mb1.lab.test/EWS/Exchange.asmx"
NTLM_OFFER = ("Negotiate", "NTLM")


@pytest.fixture(autouse=True)
def ntlm_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake servers' acceptor knows LAB\\alice, alice@lab.test and a plain bob, all with PASSWORD."""
    lines = [
        format_user_file_line("LAB", "alice", PASSWORD),
        format_user_file_line("", "alice@lab.test", PASSWORD),
        format_user_file_line("", "bob", PASSWORD),
    ]
    path = tmp_path / "ntlm_users"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(path))


_SHA256_WITH_RSA = bytes.fromhex("06092a864886f70d01010b")  # OID 1.2.840.113549.1.1.11


def _cert_der(hash_algorithm: Any = None, *, rsa_oid_suffix: int | None = None) -> bytes:
    """A DER certificate: trustme's, or self-signed with ``hash_algorithm``; ``rsa_oid_suffix`` relabels an RSA/SHA-256
    signature as another PKCS#1 algorithm (4 = MD5, 5 = SHA-1), which OpenSSL 3 no longer signs with."""
    if hash_algorithm is None:
        pem = trustme.CA().issue_cert("mb1.lab.test").cert_chain_pems[0].bytes()
        return ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))
    key: Any = rsa.generate_private_key(65537, 2048) if rsa_oid_suffix else ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mb1.lab.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hash_algorithm)
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    if rsa_oid_suffix:
        assert der.count(_SHA256_WITH_RSA) == 2
        der = der.replace(_SHA256_WITH_RSA, _SHA256_WITH_RSA[:-1] + bytes([rsa_oid_suffix]))
    return der


class FakeSSL:
    def __init__(self, der: bytes) -> None:
        self.der = der

    def getpeercert(self, binary_form: bool = False, /) -> Any:  # positional only, like the real ssl object's
        return self.der if binary_form else {}


class FakeStream:
    """Stands for one TCP connection: what httpx puts in response.extensions["network_stream"]."""

    def __init__(self, der: bytes | None) -> None:
        self.der = der

    def get_extra_info(self, name: str) -> Any:
        return FakeSSL(self.der) if name == "ssl_object" and self.der is not None else None


class FakeIIS:
    """A one-connection IIS-like server: offers schemes, runs pyspnego's acceptor, remembers an authenticated
    connection. ``challenge`` replaces the type-2 token sent back; ``new_connection_each_response`` gives every
    response its own connection (and state), like a client that lost its connection between legs."""

    def __init__(
        self,
        offers: list[str] | None = None,
        *,
        cert: bytes | None = None,
        enforce_binding: bool = False,
        challenge: str | None = None,
        new_connection_each_response: bool = False,
        final_token: bool = True,
    ) -> None:
        self.offers = list(NTLM_OFFER) if offers is None else offers
        self.cert = cert
        self.bindings = channel_bindings_for(cert) if enforce_binding and cert else None
        self.challenge = challenge
        self.new_connection_each_response = new_connection_each_response
        self.final_token = final_token
        self.stream = FakeStream(cert)
        self.context: Any = None
        self.principal: str | None = None
        self.seen: list[str | None] = []

    def _respond(self, status: int, headers: list[tuple[str, str]]) -> httpx.Response:
        extensions = {"network_stream": self.stream} if self.cert is not None else {}
        if self.new_connection_each_response:
            self.stream = FakeStream(self.cert)
            self.context, self.principal = None, None
        return httpx.Response(status, headers=headers, extensions=extensions)

    def _deny(self) -> httpx.Response:
        self.context, self.principal = None, None
        return self._respond(401, [("WWW-Authenticate", offer) for offer in self.offers])

    def __call__(self, request: httpx.Request) -> httpx.Response:
        value = request.headers.get("Authorization")
        self.seen.append(value)
        if value is None:
            return self._respond(200, []) if self.principal else self._deny()
        scheme, _, token = value.partition(" ")
        if scheme == "Basic":
            ok = base64.b64decode(token) == f"LAB\\alice:{PASSWORD}".encode()
            return self._respond(200, []) if ok else self._deny()
        if scheme == "Bearer":
            if token == TOKEN:
                return self._respond(200, [])
            return self._respond(401, [("WWW-Authenticate", 'Bearer error="invalid_token"')])
        raw = base64.b64decode(token)
        if raw.startswith(b"NTLMSSP\x00\x01") or raw[:1] == b"\x60":
            protocol = "ntlm" if scheme == "NTLM" else "negotiate"
            options = spnego.NegotiateOptions.use_ntlm if scheme == "NTLM" else spnego.NegotiateOptions.use_negotiate
            self.context = spnego.server(protocol=protocol, options=options, channel_bindings=self.bindings)
        if self.context is None:
            return self._deny()
        try:
            out = self.context.step(raw)
        except spnego.exceptions.SpnegoError:
            return self._deny()
        if not self.context.complete:
            text = self.challenge if self.challenge is not None else base64.b64encode(out).decode()
            return self._respond(401, [("WWW-Authenticate", f"{scheme} {text}".rstrip())])
        self.principal = self.context.client_principal
        headers = (
            [("WWW-Authenticate", f"{scheme} {base64.b64encode(out).decode()}")] if out and self.final_token else []
        )
        return self._respond(200, headers)


def _client(server: FakeIIS) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(server))


def _alice(username: str = "LAB\\alice", password: str = PASSWORD) -> Credentials:
    return Credentials(username, Secret(password))


def _decoded(value: str | None) -> bytes:
    assert value is not None
    return base64.b64decode(value.partition(" ")[2])


def _report(response: httpx.Response) -> AuthReport:
    report = auth_report(response)
    assert report is not None
    return report


# --- WWW-Authenticate parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["Negotiate", "NTLM", 'Basic realm="mb1.lab.test"'], ["Negotiate", "NTLM", "Basic"]),
        (['negotiate, ntlm, basic realm="a, b"'], ["Negotiate", "NTLM", "Basic"]),
        (["NTLM TlRMTVNTUAACAAAA==", "Negotiate"], ["NTLM", "Negotiate"]),
        (['Basic realm="x", charset="UTF-8", Bearer'], ["Basic", "Bearer"]),
        (["", " , ,", "=oops", '"quoted', "Digest realm=x"], ["Digest"]),
        ([], []),
    ],
)
def test_parse_www_authenticate_reads_schemes_from_every_header_form(values: list[str], expected: list[str]) -> None:
    """Separate headers, comma lists, quoted commas, token68 padding and garbage all yield the right schemes."""
    assert [c.scheme for c in parse_www_authenticate(values)] == expected


def test_parse_www_authenticate_keeps_tokens_and_parameters() -> None:
    """An NTLM token stays a token; Bearer parameters (quoted, with commas and spaces) are unquoted and kept."""
    bearer = (
        'Bearer client_id="00000002-0000-0ff1-ce00-000000000000", '
        'trusted_issuers="00000001-0000-0000-c000-000000000000@t1,x@t2", '
        'token_types="app_asserted_user_v1 service_asserted_app_v1", error="invalid_token"'
    )
    ntlm, basic, parsed_bearer = parse_www_authenticate(["NTLM TlRMTVNTUAACAAAA==", 'Basic Realm="a\\"b"', bearer])
    assert ntlm == Challenge("NTLM", "TlRMTVNTUAACAAAA==")
    assert basic.param("realm") == 'a"b'
    assert parsed_bearer.token is None
    assert parsed_bearer.param("trusted_issuers") == "00000001-0000-0000-c000-000000000000@t1,x@t2"
    assert parsed_bearer.param("token_types") == "app_asserted_user_v1 service_asserted_app_v1"
    assert parsed_bearer.param("ERROR") == "invalid_token"


def test_parse_www_authenticate_caps_hostile_input() -> None:
    """Thousands of challenges or a huge header are bounded, not parsed without limit."""
    assert len(parse_www_authenticate([", ".join(["NTLM"] * 5000)])) == 32
    assert parse_www_authenticate(["NTLM " + "A" * 100_000]) == ()
    assert len(parse_www_authenticate(["Basic"] * 1000)) == 32


# --- NTLM / Negotiate ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "scheme", "first_bytes"),
    [("ntlm", "NTLM", b"NTLMSSP\x00\x01\x00\x00\x00"), ("negotiate", "Negotiate", b"\x60")],
)
def test_spnego_legs_and_headers(protocol: str, scheme: str, first_bytes: bytes) -> None:
    """Anonymous request, then the first token, then the answer: three legs ending in 200 and a full report."""
    server = FakeIIS()
    auth = SpnegoAuth(_alice(), protocol)
    with _client(server) as client:
        response = client.post(URL, content=b"<soap/>", auth=auth)
    assert response.status_code == 200
    assert server.principal == "LAB\\alice"
    assert server.seen[0] is None
    assert _decoded(server.seen[1]).startswith(first_bytes)
    assert [str(value).partition(" ")[0] for value in server.seen[1:]] == [scheme, scheme]
    report = _report(response)
    assert report == auth.last_report
    assert report.offered == NTLM_OFFER
    assert report.method == scheme
    assert report.failure is None
    assert report.ok
    assert [(leg.status, leg.scheme) for leg in report.legs] == [(401, None), (401, scheme), (200, scheme)]
    assert all(leg.duration_s >= 0 for leg in report.legs)
    assert report.duration_s == pytest.approx(sum(leg.duration_s for leg in report.legs))


def test_the_ntlm_answer_message_is_type_3() -> None:
    """The third leg carries an NTLM AUTHENTICATE (type 3) message."""
    server = FakeIIS()
    with _client(server) as client:
        client.get(URL, auth=SpnegoAuth(_alice(), "ntlm"))
    assert _decoded(server.seen[2]).startswith(b"NTLMSSP\x00\x03\x00\x00\x00")


@pytest.mark.parametrize("username", ["LAB\\alice", "alice@lab.test", "bob"])
@pytest.mark.parametrize("protocol", ["ntlm", "negotiate"])
def test_user_name_forms(username: str, protocol: str) -> None:
    """Down-level, UPN and plain user names all authenticate as themselves."""
    server = FakeIIS()
    with _client(server) as client:
        response = client.get(URL, auth=SpnegoAuth(_alice(username), protocol))
    assert response.status_code == 200
    assert server.principal == username


def test_an_authenticated_connection_is_not_handshaken_again() -> None:
    """IIS semantics: the next request gets 200 at once, is sent without Authorization and reports one leg."""
    server = FakeIIS()
    auth = SpnegoAuth(_alice(), "ntlm")
    with _client(server) as client:
        client.get(URL, auth=auth)
        second = client.get(URL, auth=auth)
    assert server.seen[3:] == [None]
    report = _report(second)
    assert [(leg.status, leg.scheme) for leg in report.legs] == [(200, None)]
    assert report.method is None
    assert report.offered == ()
    assert report.ok


def test_preemptive_sends_the_first_token_at_once() -> None:
    """With preemptive=True the first request already carries the NEGOTIATE message: two legs instead of three."""
    server = FakeIIS()
    with _client(server) as client:
        response = client.get(URL, auth=SpnegoAuth(_alice(), "ntlm", preemptive=True))
    assert response.status_code == 200
    assert _decoded(server.seen[0]).startswith(b"NTLMSSP\x00\x01")
    assert [leg.status for leg in _report(response).legs] == [401, 200]


def test_negotiate_final_token_is_processed() -> None:
    """The SPNEGO accept-completed token on the 200 is fed to the context (no detail noted); its absence is fine."""
    for final in (True, False):
        server = FakeIIS(cert=_cert_der(), final_token=final)
        with _client(server) as client:
            response = client.get(URL, auth=SpnegoAuth(_alice(), "negotiate"))
        assert response.status_code == 200
        assert _report(response).detail is None


@pytest.mark.parametrize("protocol", ["ntlm", "negotiate"])
def test_channel_binding_from_the_connection_certificate(protocol: str) -> None:
    """The binding is computed from the certificate of the connection that carried the challenge and is accepted by
    an acceptor enforcing it; without it, or with another certificate, the same server refuses."""
    cert = _cert_der()
    server = FakeIIS(cert=cert, enforce_binding=True)
    with _client(server) as client:
        response = client.get(URL, auth=SpnegoAuth(_alice(), protocol))
    assert response.status_code == 200
    assert _report(response).channel_binding

    server = FakeIIS(cert=cert, enforce_binding=True)
    with _client(server) as client:
        response = client.get(URL, auth=SpnegoAuth(_alice(), protocol, channel_binding=False))
    report = _report(response)
    assert response.status_code == 401
    assert report.failure is AuthFailure.REJECTED
    assert not report.channel_binding

    server = FakeIIS(cert=cert, enforce_binding=True)
    server.stream = FakeStream(_cert_der())  # a TLS-offloading middlebox: the client sees another certificate
    with _client(server) as client:
        response = client.get(URL, auth=SpnegoAuth(_alice(), protocol))
    assert response.status_code == 401
    assert _report(response).failure is AuthFailure.REJECTED


@pytest.mark.parametrize("protocol", ["ntlm", "negotiate"])
def test_wrong_password_is_rejected_not_raised(protocol: str) -> None:
    """A refused AUTHENTICATE message returns the 401 with failure "rejected" and an explanation."""
    server = FakeIIS()
    with _client(server) as client:
        response = client.get(URL, auth=SpnegoAuth(_alice(password="wrong"), protocol))
    report = _report(response)
    assert response.status_code == 401
    assert report.failure is AuthFailure.REJECTED
    assert report.detail is not None
    assert "bad credentials" in report.detail
    assert [leg.status for leg in report.legs] == [401, 401, 401]


def _real_challenge() -> bytes:
    client = spnego.client("LAB\\alice", PASSWORD, protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
    server = spnego.server(protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
    challenge = server.step(client.step())
    assert challenge is not None
    return challenge


@pytest.mark.parametrize(
    "challenge",
    [
        "!!!not-base64!!!",
        base64.b64encode(b"hello, not NTLMSSP").decode(),
        "truncated",
        base64.b64encode(b"NTLMSSP\x00\x03\x00\x00\x00" + b"\x00" * 60).decode(),
        "AAAA",
    ],
    ids=["bad-base64", "not-ntlmssp", "truncated", "wrong-type", "zeros"],
)
def test_garbage_challenge_is_a_bad_challenge(challenge: str) -> None:
    """A malformed CHALLENGE message ends the flow with failure "bad challenge" and the 401, never an exception."""
    if challenge == "truncated":  # a real CHALLENGE message cut inside its fixed header
        challenge = base64.b64encode(_real_challenge()[:20]).decode()
    server = FakeIIS(challenge=challenge)
    with _client(server) as client:
        response = client.get(URL, auth=SpnegoAuth(_alice(), "ntlm"))
    report = _report(response)
    assert response.status_code == 401
    assert report.failure is AuthFailure.BAD_CHALLENGE
    assert len(report.legs) == 2


def test_negotiate_refused_without_a_challenge_is_rejected() -> None:
    """A 401 that answers the first token with only the bare offers means the server refused it: "rejected"."""
    server = FakeIIS(challenge="")
    with _client(server) as client:
        response = client.get(URL, auth=SpnegoAuth(_alice(), "ntlm"))
    assert _report(response).failure is AuthFailure.REJECTED


def test_handshake_split_over_two_connections_is_reported() -> None:
    """When the answer travels on another connection than the challenge, the report says so."""
    server = FakeIIS(cert=_cert_der(), new_connection_each_response=True)
    with _client(server) as client:
        response = client.get(URL, auth=SpnegoAuth(_alice(), "ntlm"))
    report = _report(response)
    assert response.status_code == 401
    assert report.failure is AuthFailure.CONNECTION_CHANGED
    assert [leg.connection for leg in report.legs] == [1, 2, 3]


@pytest.mark.parametrize(
    ("offers", "listed"),
    [(["Basic realm=x", "Digest realm=y"], "Basic, Digest"), ([], "none")],
)
def test_no_common_scheme_lists_the_offers(offers: list[str], listed: str) -> None:
    """A 401 without NTLM ends with failure "no common scheme" naming what was offered."""
    server = FakeIIS(offers)
    with _client(server) as client:
        response = client.get(URL, auth=SpnegoAuth(_alice(), "ntlm"))
    report = _report(response)
    assert response.status_code == 401
    assert report.failure is AuthFailure.NO_COMMON_SCHEME
    assert report.detail is not None
    assert listed in report.detail
    assert len(report.legs) == 1


def test_transport_failure_mid_flow_is_recorded() -> None:
    """When httpx raises during a leg, the exception propagates and last_report says "interrupted" with the legs."""
    server = FakeIIS()

    def handler(request: httpx.Request) -> httpx.Response:
        if len(server.seen) == 2:
            raise httpx.ReadError("connection reset")
        return server(request)

    auth = SpnegoAuth(_alice(), "ntlm")
    with httpx.Client(transport=httpx.MockTransport(handler)) as client, pytest.raises(httpx.ReadError):
        client.get(URL, auth=auth)
    assert auth.last_report is not None
    assert auth.last_report.failure is AuthFailure.INTERRUPTED
    assert [leg.status for leg in auth.last_report.legs] == [401, 401]


def test_the_report_is_frozen() -> None:
    """The published report cannot be changed by its readers."""
    with _client(FakeIIS()) as client:
        report = _report(client.get(URL, auth=SpnegoAuth(_alice(), "ntlm")))
    with pytest.raises(FrozenInstanceError):
        report.method = "Basic"  # type: ignore[misc]


def test_bad_protocol_is_a_config_error() -> None:
    """Only "ntlm" and "negotiate" are protocols of SpnegoAuth."""
    with pytest.raises(ConfigError):
        SpnegoAuth(_alice(), "kerberos")


# --- Basic, Bearer ---------------------------------------------------------------------------------------------------


def test_basic_preemptive_and_after_a_401() -> None:
    """Basic goes with the request (one leg) or after a 401 offering it (two legs); UTF-8 user-pass."""
    offers = ['Basic realm="mb1.lab.test"']
    with _client(FakeIIS(offers)) as client:
        response = client.get(URL, auth=BasicAuth(_alice()))
        assert response.status_code == 200
        assert [leg.scheme for leg in _report(response).legs] == ["Basic"]
        response = client.get(URL, auth=BasicAuth(_alice(), preemptive=False))
        assert [(leg.status, leg.scheme) for leg in _report(response).legs] == [(401, None), (200, "Basic")]
        assert _report(response).offered == ("Basic",)
    header = BasicAuth(Credentials("LAB\\jürgen", Secret("pässword")))._credentials()
    assert base64.b64decode(header) == "LAB\\jürgen:pässword".encode()


def test_basic_wrong_password_and_bad_user_name() -> None:
    """A refused Basic password is "rejected"; a user name with ':' cannot be sent with Basic at all."""
    with _client(FakeIIS(["Basic realm=x"])) as client:
        response = client.get(URL, auth=BasicAuth(_alice(password="wrong")))
    assert response.status_code == 401
    assert _report(response).failure is AuthFailure.REJECTED
    assert _report(response).offered == ("Basic",)
    with pytest.raises(ConfigError):
        BasicAuth(Credentials("a:b", Secret("x")))


def test_bearer_header_and_invalid_token() -> None:
    """Bearer sends the token; a refused one is "rejected" quoting the server's error code."""
    server = FakeIIS(["Bearer"])
    with _client(server) as client:
        ok = client.get(URL, auth=BearerAuth(BearerToken(Secret(TOKEN))))
        bad = client.get(URL, auth=BearerAuth(BearerToken(Secret("wrong"))))
    assert server.seen[0] == f"Bearer {TOKEN}"
    assert ok.status_code == 200
    assert _report(ok).method == "Bearer"
    assert _report(bad).failure is AuthFailure.REJECTED
    assert "invalid_token" in (_report(bad).detail or "")


# --- AutoAuth --------------------------------------------------------------------------------------------------------

BEARER_OFFER = 'Bearer client_id="00000002-0000-0ff1-ce00-000000000000", trusted_issuers="a@b,c@d"'


@pytest.mark.parametrize(
    ("offers", "with_password", "with_token", "prefer", "expected"),
    [
        (["Negotiate", "NTLM", "Basic realm=x"], True, False, None, "Negotiate"),
        (['Negotiate, NTLM, Basic realm="x, y"'], True, False, None, "Negotiate"),
        (["NTLM", 'Basic realm="x"'], True, False, None, "NTLM"),
        (["Basic realm=x"], True, False, None, "Basic"),
        (["Basic realm=x", BEARER_OFFER], True, True, None, "Basic"),
        (["Basic realm=x", BEARER_OFFER], True, True, ("Bearer", "Negotiate", "NTLM", "Basic"), "Bearer"),
        (["Negotiate", "NTLM", BEARER_OFFER], False, True, None, "Bearer"),
        (["negotiate", "ntlm"], True, False, ("ntlm", "negotiate"), "NTLM"),
    ],
)
def test_auto_auth_chooses_like_outlook(
    offers: list[str], with_password: bool, with_token: bool, prefer: tuple[str, ...] | None, expected: str
) -> None:
    """Negotiate/NTLM first, Basic only when alone, Bearer when a token is configured and offered (or preferred)."""
    kwargs: dict[str, Any] = {"prefer": prefer} if prefer else {}
    auth = AutoAuth(_alice() if with_password else None, BearerToken(Secret(TOKEN)) if with_token else None, **kwargs)
    with _client(FakeIIS(offers)) as client:
        response = client.get(URL, auth=auth)
    report = _report(response)
    assert response.status_code == 200
    assert report.method == expected
    assert report.legs[0].scheme is None
    assert report.legs[-1].scheme == expected
    assert report.offered == tuple(c.scheme for c in parse_www_authenticate(offers))


def test_auto_auth_without_a_usable_scheme() -> None:
    """Bearer offered but no token configured: "no common scheme", naming the offer."""
    with _client(FakeIIS([BEARER_OFFER])) as client:
        response = client.get(URL, auth=AutoAuth(_alice()))
    report = _report(response)
    assert report.failure is AuthFailure.NO_COMMON_SCHEME
    assert report.detail is not None
    assert "Bearer" in report.detail


@pytest.mark.parametrize("prefer", [(), ("NTLM", "Kerberos"), ("NTLM", "ntlm")])
def test_auto_auth_bad_configuration(prefer: tuple[str, ...]) -> None:
    """An empty, unknown or repeated preference is a configuration error, as is having nothing to send."""
    with pytest.raises(ConfigError):
        AutoAuth(_alice(), prefer=prefer)
    with pytest.raises(ConfigError):
        AutoAuth(None)


# --- Channel binding hash --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "suffix", "expected"),
    [
        (hashes.SHA256(), None, "sha256"),
        (hashes.SHA384(), None, "sha384"),
        (hashes.SHA512(), None, "sha512"),
        (hashes.SHA256(), 11, "sha256"),
        (hashes.SHA256(), 5, "sha256"),
        (hashes.SHA256(), 4, "sha256"),
        (hashes.SHA256(), 12, "sha384"),
    ],
    ids=["ecdsa-sha256", "ecdsa-sha384", "ecdsa-sha512", "rsa-sha256", "rsa-sha1", "rsa-md5", "rsa-sha384-label"],
)
def test_tls_server_end_point_uses_the_signature_hash(
    algorithm: hashes.HashAlgorithm, suffix: int | None, expected: str
) -> None:
    """RFC 5929 §4.1: the certificate's signature hash, except SHA-1 and MD5 which become SHA-256."""
    der = _cert_der(algorithm, rsa_oid_suffix=suffix)
    assert tls_server_end_point(der) == hashlib.new(expected, der).digest()


# --- Credentials -----------------------------------------------------------------------------------------------------


def test_credentials_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The password comes from the variable as is; missing or empty variables are clear errors."""
    monkeypatch.setenv("CASPROBE_TEST_PW", f" {PASSWORD}")
    assert Credentials.from_env("LAB\\alice", "CASPROBE_TEST_PW").secret.reveal() == f" {PASSWORD}"
    monkeypatch.setenv("CASPROBE_TEST_PW", "")
    with pytest.raises(CredentialError, match="is empty"):
        Credentials.from_env("LAB\\alice", "CASPROBE_TEST_PW")
    monkeypatch.delenv("CASPROBE_TEST_PW")
    with pytest.raises(CredentialError, match=r"CASPROBE_TEST_PW.*not set"):
        Credentials.from_env("LAB\\alice", "CASPROBE_TEST_PW")


def test_credentials_from_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The first line, stripped; a 0600 file is silent, a group/world-readable one logs a warning."""
    path = tmp_path / "pw"
    path.write_text(f"  {PASSWORD}  \nsecond line\n")
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        assert Credentials.from_file("LAB\\alice", path).secret.reveal() == PASSWORD
    assert not caplog.records
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        Credentials.from_file("LAB\\alice", path)
    assert any("chmod 600" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("", "is empty"),
        ("\n\n", "is empty"),
        (b"\xff\xfe\x00", "not UTF-8"),
        ("dir", "cannot read"),
    ],
)
def test_credentials_from_bad_file(tmp_path: Path, content: str | bytes | None, message: str) -> None:
    """Missing, empty, undecodable and unreadable files are CredentialErrors naming the file."""
    path = tmp_path / "pw"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(CredentialError, match=message) as info:
        Credentials.from_file("LAB\\alice", path)
    assert str(path) in str(info.value)


def test_credentials_from_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    """The prompt is refused without a terminal and uses getpass with one."""
    with pytest.raises(CredentialError, match="no terminal"):
        Credentials.from_prompt("LAB\\alice")  # pytest's stdin is not a tty

    class Tty:
        def isatty(self) -> bool:
            return True

    asked: list[str] = []
    monkeypatch.setattr("sys.stdin", Tty())

    def getpass(prompt: str) -> str:
        asked.append(prompt)
        return PASSWORD

    monkeypatch.setattr("getpass.getpass", getpass)
    assert Credentials.from_prompt("LAB\\alice").secret.reveal() == PASSWORD
    assert asked == ["Password for LAB\\alice: "]


@pytest.mark.parametrize("username", ["", "LAB\\", "\\alice", "alice@", "@lab.test", "ali\nce"])
def test_bad_user_names(username: str) -> None:
    """Empty parts of DOMAIN\\user or user@domain, and control characters, are refused."""
    with pytest.raises(CredentialError):
        Credentials(username, Secret("x"))


def test_bearer_token_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bearer token comes from a variable or a file; characters outside b64token are refused without echo."""
    monkeypatch.setenv("CASPROBE_TEST_TOKEN", f"{TOKEN}\n")
    assert BearerToken.from_env("CASPROBE_TEST_TOKEN").secret.reveal() == TOKEN
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    assert BearerToken.from_file(path).secret.reveal() == TOKEN
    with pytest.raises(CredentialError) as info:
        BearerToken(Secret("bad token " + PASSWORD))
    assert PASSWORD not in str(info.value)


def test_secret_hides_its_value() -> None:
    """A Secret prints as ***, in f-strings too, cannot be pickled, and copies to itself."""
    secret = Secret(PASSWORD)
    assert repr(secret) == str(secret) == f"{secret}" == "***"
    assert secret.reveal() == PASSWORD
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        pickle.dumps(Credentials("LAB\\alice", secret))
    assert copy.copy(secret) is secret
    assert copy.deepcopy(secret) is secret


# --- No password anywhere --------------------------------------------------------------------------------------------


def _texts(obj: object) -> Iterator[str]:
    yield repr(obj)
    yield str(obj)


def test_the_password_appears_in_no_repr_exception_report_or_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every object, report, exception message and log line produced along the flows is free of the password."""
    caplog.set_level(logging.DEBUG)
    credentials = _alice()
    token = BearerToken(Secret(TOKEN))
    auths: list[httpx.Auth] = [
        SpnegoAuth(credentials, "ntlm"),
        SpnegoAuth(credentials, "negotiate", preemptive=True),
        BasicAuth(credentials),
        BearerAuth(token),
        AutoAuth(credentials, token),
    ]
    texts: list[str] = []
    for auth in auths:
        for server in (FakeIIS(["Negotiate", "NTLM", "Basic realm=x", "Bearer"]), FakeIIS(challenge="AAAA")):
            with _client(server) as client:
                response = client.get(URL, auth=auth)
            texts += [*_texts(auth), *_texts(_report(response)), *_texts(response.headers)]
    for auth in (SpnegoAuth(_alice(password="wrong" + PASSWORD), "ntlm"), BasicAuth(_alice(password="x" + PASSWORD))):
        with _client(FakeIIS(["NTLM", "Basic realm=x"])) as client:
            texts += _texts(_report(client.get(URL, auth=auth)))
    texts += [*_texts(credentials), *_texts(credentials.secret), *_texts(token)]
    errors: list[BaseException] = []
    for attempt in (
        lambda: BearerToken(Secret(PASSWORD + " ")),
        lambda: Credentials("ali\nce", Secret(PASSWORD)),
        lambda: pickle.dumps(credentials),
    ):
        try:
            attempt()
        except (CredentialError, TypeError) as exc:
            errors.append(exc)
    bad = tmp_path / "pw"
    bad.write_bytes(PASSWORD.encode() + b"\xff\n")
    try:
        Credentials.from_file("LAB\\alice", bad)
    except CredentialError as exc:
        errors.append(exc)
    assert len(errors) == 4
    texts += [text for exc in errors for text in _texts(exc)]
    texts += [record.getMessage() for record in caplog.records]
    basic_b64 = base64.b64encode(f"LAB\\alice:{PASSWORD}".encode()).decode()
    for text in texts:
        assert PASSWORD not in text
        assert basic_b64 not in text
    assert os.environ.get("NTLM_USER_FILE")  # the flows ran against the real acceptor
