"""The network layer: pin parsing, resolution, certificate facts, and how failures are classified."""

from __future__ import annotations

import datetime as dt
import gzip
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from casprobe.errors import ConfigError
from casprobe.model import ErrorClass, Target
from casprobe.net.resolve import DnsFailure, Pin, Resolver, parse_pin
from casprobe.net.tls import TlsOptions, certificate_facts, channel_binding_hash, name_matches
from casprobe.net.transport import ProbeClient, TransportOptions, classify


@pytest.mark.parametrize(
    ("text", "pin"),
    [
        ("outlook.contoso.com:127.0.0.11", Pin("outlook.contoso.com", "127.0.0.11")),
        ("Outlook.Contoso.com.:127.0.0.11:8443", Pin("outlook.contoso.com", "127.0.0.11", 8443)),
        ("mb1.contoso.com:[::1]:443", Pin("mb1.contoso.com", "::1", 443)),
        ("mb1.contoso.com:[2001:db8::1]", Pin("mb1.contoso.com", "2001:db8::1")),
    ],
)
def test_resolve_option_is_parsed_like_curl(text: str, pin: Pin) -> None:
    """--resolve NAME:ADDR[:PORT] with IPv6 in brackets, names case-folded."""
    assert parse_pin(text) == pin


@pytest.mark.parametrize(
    "text", ["nohost", "name:", ":1.2.3.4", "name:not-an-ip", "name:1.2.3.4:0", "name:1.2.3.4:http", "n:[::1"]
)
def test_bad_resolve_options_are_config_errors(text: str) -> None:
    """A malformed --resolve is refused with a message quoting it."""
    with pytest.raises(ConfigError, match="--resolve"):
        parse_pin(text)


def test_pinned_names_skip_dns_and_unknown_names_fail_as_dns() -> None:
    """Pins answer at once; an unresolvable name raises DnsFailure (classified as dns)."""
    resolver = Resolver({"outlook.lab.test": "127.0.0.10"})
    resolved = resolver.resolve("OUTLOOK.lab.test", 443, 1.0)
    assert resolved.address == "127.0.0.10"
    assert resolved.pinned
    assert resolver.resolve("127.0.0.5", 443, 1.0).address == "127.0.0.5"
    with pytest.raises(DnsFailure) as info:
        resolver.resolve("no-such-host.invalid", 443, 2.0)
    assert classify(info.value)[0] is ErrorClass.DNS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _cert(leaf: trustme.LeafCert) -> x509.Certificate:
    return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())


def test_names_match_exactly_by_wildcard_or_ip(ca: trustme.CA) -> None:
    """subjectAltName matching: exact, one-label wildcard, IP; never the parent domain or two labels."""
    cert = _cert(ca.issue_cert("mb1.contoso.com", "*.lab.contoso.com", "127.0.0.11"))
    assert name_matches("MB1.contoso.com", cert)
    assert name_matches("outlook.lab.contoso.com", cert)
    assert name_matches("127.0.0.11", cert)
    assert not name_matches("lab.contoso.com", cert)
    assert not name_matches("a.b.lab.contoso.com", cert)
    assert not name_matches("mb2.contoso.com", cert)
    assert not name_matches("127.0.0.12", cert)


def test_certificate_facts_report_expiry_and_names(ca: trustme.CA) -> None:
    """Days left, subject, issuer, SANs and name match come from the presented certificate."""
    expires = dt.datetime(2030, 1, 31, tzinfo=dt.UTC)
    leaf = ca.issue_cert("mb1.contoso.com", "outlook.contoso.com", not_after=expires)
    der = _cert(leaf).public_bytes(encoding=__import__("cryptography").hazmat.primitives.serialization.Encoding.DER)
    facts = certificate_facts(
        der,
        "outlook.contoso.com",
        version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
        verified=True,
        verification_disabled=False,
        now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
    )
    assert facts.days_left == 30
    assert facts.name_match is True
    assert facts.san == ("mb1.contoso.com", "outlook.contoso.com")
    assert "casprobe" not in facts.issuer  # trustme's CA, not ours
    assert len(channel_binding_hash(der)) == 32  # SHA-256-signed certificate → SHA-256 binding


class _Server:
    """A loopback TLS server that runs one scripted behaviour per connection."""

    def __init__(self, context: ssl.SSLContext | None, behaviour: str) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.context, self.behaviour = context, behaviour
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
            conn.recv(65536)
            if self.behaviour == "trickle":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                while not self.stop.is_set():
                    conn.sendall(b"x")
                    time.sleep(0.05)
            elif self.behaviour == "header-trickle":
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 1000:
                    if self.stop.is_set():
                        break
                    conn.sendall(bytes([byte]))
                    time.sleep(0.3)
            elif self.behaviour == "silent":
                self.stop.wait(30)
            elif self.behaviour == "garbage":
                conn.sendall(b"\x00\x01NOT HTTP AT ALL\r\n\r\n")
            elif self.behaviour == "gzip-bomb":
                bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))
                head = f"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {len(bomb)}\r\n\r\n"
                conn.sendall(head.encode() + bomb)
            elif self.behaviour == "huge":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 52428800\r\n\r\n")
                chunk = b"x" * 65536
                for _ in range(800):
                    conn.sendall(chunk)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def served(ca: trustme.CA, tmp_path: Path) -> tuple[trustme.CA, Path]:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ca, ca_file


def _failure(client: ProbeClient) -> BaseException:
    try:
        client.request("GET", "/")
    except Exception as exc:
        return exc
    raise AssertionError("the request should have failed")


def _client(port: int, ca_file: Path, deadline_s: float, name: str = "probe.test") -> ProbeClient:
    options = TransportOptions(tls=TlsOptions(ca_file=ca_file), timeout_s=deadline_s, max_body=1024 * 1024)
    target = Target(name, port=port, address="127.0.0.1")
    return ProbeClient(target, resolver=Resolver(), options=options, deadline=time.monotonic() + deadline_s)


@pytest.mark.parametrize(
    ("behaviour", "expected", "name"),
    [
        ("trickle", ErrorClass.TIMEOUT, "probe.test"),
        ("silent", ErrorClass.TIMEOUT, "probe.test"),
        ("garbage", ErrorClass.PROTOCOL, "probe.test"),
        ("huge", ErrorClass.CONTENT, "probe.test"),
        ("gzip-bomb", ErrorClass.CONTENT, "probe.test"),
        ("silent", ErrorClass.TLS, "other.test"),
    ],
)
def test_hostile_answers_are_classified_within_the_deadline(
    served: tuple[trustme.CA, Path], behaviour: str, expected: ErrorClass, name: str
) -> None:
    """Trickling, silent, non-HTTP, oversized answers and a certificate for another name each map to their
    class, and the request ends within its deadline."""
    ca, ca_file = served
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("probe.test").configure_cert(context)
    server = _Server(context, behaviour)
    started = time.monotonic()
    try:
        with _client(server.port, ca_file, 1.5, name) as client:
            failure = _failure(client)
    finally:
        server.close()
    assert classify(failure)[0] is expected
    assert time.monotonic() - started < 3.0


def test_a_closed_port_is_a_connect_error(served: tuple[trustme.CA, Path]) -> None:
    """Nothing listening: connection refused, class connect, at once."""
    with socket.socket() as probe_port:
        probe_port.bind(("127.0.0.1", 0))
        port = probe_port.getsockname()[1]
    with _client(port, served[1], 2.0) as client:
        error_class, detail = classify(_failure(client))
    assert error_class is ErrorClass.CONNECT
    assert "refused" in detail


def test_an_unreadable_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    """--ca-file naming a missing file is the user's mistake (exit 3), not a probe failure."""
    with pytest.raises(ConfigError, match="CA bundle"):
        _client(443, tmp_path / "missing.pem", 1.0)


@pytest.mark.parametrize("behaviour", ["trickle", "header-trickle"])
def test_the_deadline_holds_even_when_every_read_beats_the_read_timeout(
    served: tuple[trustme.CA, Path], behaviour: str
) -> None:
    """A server that sends a byte just often enough to keep each read alive (body or headers) is still cut at
    the request's deadline, not at the end of its trickle."""
    ca, ca_file = served
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("probe.test").configure_cert(context)
    server = _Server(context, behaviour)
    options = TransportOptions(tls=TlsOptions(ca_file=ca_file), timeout_s=5.0)
    target = Target("probe.test", port=server.port, address="127.0.0.1")
    started = time.monotonic()
    try:
        with ProbeClient(target, resolver=Resolver(), options=options, deadline=started + 1.2) as client:
            failure = _failure(client)
    finally:
        server.close()
    elapsed = time.monotonic() - started
    assert classify(failure)[0] is ErrorClass.TIMEOUT
    assert 1.1 < elapsed < 1.8
