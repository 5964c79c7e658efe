"""Why an exchangelib call failed, in casprobe's error classes (casprobe.load.ews_errors, the Mac load user)."""

from __future__ import annotations

import socket
import ssl

import pytest
import requests
import urllib3.exceptions
from exchangelib.errors import (
    ErrorMailboxStoreUnavailable,
    ErrorServerBusy,
    MalformedResponseError,
    TransportError,
    UnauthorizedError,
)

from casprobe.load.ews_errors import classify
from casprobe.model import ErrorClass


def _wrapped(inner: BaseException, outer: BaseException) -> BaseException:
    outer.__cause__ = inner
    return outer


@pytest.mark.parametrize(
    ("exc", "expected", "detail"),
    [
        (UnauthorizedError("401"), ErrorClass.AUTH, "credentials refused"),
        (
            _wrapped(ConnectionRefusedError(111, "refused"), requests.exceptions.ConnectionError("x")),
            ErrorClass.CONNECT,
            "connection refused",
        ),
        (requests.exceptions.ReadTimeout("slow"), ErrorClass.TIMEOUT, "read timeout"),
        (requests.exceptions.ConnectTimeout("no answer"), ErrorClass.TIMEOUT, "connect timeout"),
        (_wrapped(socket.gaierror(-2, "Name or service not known"), TransportError("x")), ErrorClass.DNS, "resolve"),
        (_wrapped(ConnectionResetError(104, "reset"), TransportError("x")), ErrorClass.CONNECT, "reset"),
        (urllib3.exceptions.ProtocolError("Connection aborted."), ErrorClass.CONNECT, "closed"),
        (ErrorMailboxStoreUnavailable("moving"), ErrorClass.PROTOCOL, "ErrorMailboxStoreUnavailable"),
        (MalformedResponseError("Unknown failure. Code: 503"), ErrorClass.HTTP_STATUS, "HTTP 503"),
        (MalformedResponseError("not XML"), ErrorClass.PROTOCOL, "malformed"),
        (ValueError("a bug"), ErrorClass.INTERNAL, "ValueError"),
    ],
)
def test_failures_get_their_class_and_a_short_detail(exc: BaseException, expected: ErrorClass, detail: str) -> None:
    """Transport failures are found under exchangelib's wrapping; EWS errors keep their response code."""
    error_class, text = classify(exc)
    assert error_class is expected
    assert detail in text
    assert len(text) <= 120


def test_an_untrusted_certificate_is_tls_and_says_why() -> None:
    """A certificate verification failure anywhere in the chain is class tls with the verifier's message."""
    inner = ssl.SSLCertVerificationError(1, "certificate verify failed")
    inner.verify_message = "unable to get local issuer certificate"
    error_class, text = classify(_wrapped(inner, requests.exceptions.SSLError("x")))
    assert error_class is ErrorClass.TLS
    assert "unable to get local issuer certificate" in text


def test_a_cycle_in_the_chain_ends() -> None:
    """A chain that loops (cause pointing back) is walked once, bounded."""
    first, second = ErrorServerBusy("busy"), TransportError("t")
    first.__context__, second.__context__ = second, first
    error_class, _ = classify(first)
    assert error_class in (ErrorClass.PROTOCOL, ErrorClass.HTTP_STATUS)
