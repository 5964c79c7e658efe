"""TLS: the client's SSL context, and the facts of a handshake (version, cipher, chain, name, expiry).

Verification is on by default; ``insecure`` switches it off explicitly and every result then says so. When a
verified handshake fails, :func:`inspect_certificate` connects once more without verification, only to read
which certificate the server presents, so that "expired 3 days ago" or "issued for mail.contoso.com" can be
reported instead of a bare "certificate verify failed".
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from casprobe.errors import ConfigError
from casprobe.model import TlsFacts

__all__ = [
    "TlsOptions",
    "certificate_facts",
    "channel_binding_hash",
    "facts_from_ssl_object",
    "inspect_certificate",
    "make_ssl_context",
    "name_matches",
]


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """How to verify servers.

    Attributes:
        ca_file: trust these CAs (PEM) instead of the system store.
        insecure: do not verify chain or name (explicit; shown in every output).
    """

    ca_file: Path | None = None
    insecure: bool = False


def make_ssl_context(options: TlsOptions) -> ssl.SSLContext:
    if options.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif options.ca_file is not None:
        try:
            context = ssl.create_default_context(cafile=str(options.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot use {options.ca_file} as a CA bundle: {exc}") from exc
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def name_matches(host: str, cert: x509.Certificate) -> bool:
    """RFC 6125 matching of ``host`` against the certificate's subjectAltName (DNS and IP), one-label wildcards."""
    san = _san(cert)
    if san is None:
        return False
    host = host.lower().rstrip(".")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        return ip in san.get_values_for_type(x509.IPAddress)
    for pattern in san.get_values_for_type(x509.DNSName):
        pattern = pattern.lower().rstrip(".")
        if pattern == host:
            return True
        if pattern.startswith("*.") and "." in host and host.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def certificate_facts(
    der: bytes | None,
    host: str,
    *,
    version: str | None,
    cipher: str | None,
    verified: bool,
    verification_disabled: bool,
    now: dt.datetime | None = None,
) -> TlsFacts:
    """Facts about a peer certificate (DER) presented to a client that asked for ``host``."""
    if not der:
        return TlsFacts(version=version, cipher=cipher, verified=verified, verification_disabled=verification_disabled)
    cert = x509.load_der_x509_certificate(der)
    now = now or dt.datetime.now(dt.UTC)
    not_after = cert.not_valid_after_utc
    san = _san(cert)
    names = tuple(san.get_values_for_type(x509.DNSName)) if san is not None else ()
    return TlsFacts(
        version=version,
        cipher=cipher,
        verified=verified,
        name_match=name_matches(host, cert),
        not_after=not_after.isoformat(),
        days_left=(not_after - now).days,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        san=names,
        verification_disabled=verification_disabled,
    )


def facts_from_ssl_object(ssl_object: ssl.SSLObject | ssl.SSLSocket, host: str, options: TlsOptions) -> TlsFacts:
    cipher = ssl_object.cipher()
    return certificate_facts(
        ssl_object.getpeercert(True),
        host,
        version=ssl_object.version(),
        cipher=cipher[0] if cipher else None,
        verified=not options.insecure,
        verification_disabled=options.insecure,
    )


def inspect_certificate(address: str, port: int, host: str, timeout: float, options: TlsOptions) -> TlsFacts | None:
    """Handshake without verification only to read the presented certificate; None if even that fails."""
    context = make_ssl_context(TlsOptions(insecure=True))
    try:
        with (
            socket.create_connection((address, port), timeout=max(timeout, 0.05)) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            facts = facts_from_ssl_object(tls, host, TlsOptions(insecure=True))
    except (OSError, ssl.SSLError, ValueError):
        return None
    return TlsFacts(
        version=facts.version,
        cipher=facts.cipher,
        verified=False,
        name_match=facts.name_match,
        not_after=facts.not_after,
        days_left=facts.days_left,
        subject=facts.subject,
        issuer=facts.issuer,
        san=facts.san,
        verification_disabled=options.insecure,
    )


def channel_binding_hash(der: bytes) -> bytes:
    """RFC 5929 ``tls-server-end-point``: the certificate hashed with its signature hash (SHA-256 for MD5/SHA-1)."""
    cert = x509.load_der_x509_certificate(der)
    algorithm = cert.signature_hash_algorithm
    if algorithm is None or algorithm.name in ("md5", "sha1"):
        return hashlib.sha256(der).digest()
    digest = hashes.Hash(algorithm)
    digest.update(der)
    return digest.finalize()
