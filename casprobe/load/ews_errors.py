"""Why an exchangelib call failed, in casprobe's error classes (the Outlook for Mac load user, locustfiles/).

exchangelib re-raises what requests and urllib3 raise, and wraps EWS answers in its own exceptions; the class
comes from walking the exception chain (causes, contexts, urllib3's ``reason`` and the first ``args``; bounded):

- below EWS: ``auth`` for a 401 (UnauthorizedError), ``dns``, ``tls`` (untrusted certificate, handshake),
  ``connect`` (refused, reset, closed), ``timeout`` (connect or read) — refused is checked before timeouts,
  because urllib3's NewConnectionError is a ConnectTimeoutError subclass;
- EWS itself: ``http_status`` for an unexpected HTTP status (503, a redirect, X-CasErrorCode), ``protocol`` for
  EWS error responses and SOAP faults (the response code named, e.g. ``ErrorMailboxStoreUnavailable`` while a
  database moves, classified as the EWS probe does) and malformed answers;
- anything else: ``internal`` (a bug; still counted, never raised).

Details are short and of bounded variety (no URLs, ids or times), so Locust's failure table stays readable.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator
from http.client import RemoteDisconnected

import requests
import urllib3.exceptions
from exchangelib.errors import (
    CASError,
    EWSError,
    MalformedResponseError,
    RedirectError,
    ResponseMessageError,
    SOAPError,
    TransportError,
    UnauthorizedError,
)

from casprobe.model import ErrorClass
from casprobe.probes.ews import classify_code

__all__ = ["classify"]

_MAX_CHAIN = 24
_STATUS = re.compile(r"Code: (\d{3})\b")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its causes and contexts, and what urllib3/requests wrap (``reason``, ``args``), bounded."""
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < _MAX_CHAIN:
        item = todo.pop(0)
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        nested = [item.__cause__, item.__context__, getattr(item, "reason", None), *item.args[:2]]
        todo.extend(n for n in nested if isinstance(n, BaseException))


def _transport(chain: list[BaseException]) -> tuple[ErrorClass, str] | None:
    """What failed below EWS (DNS, TLS, TCP, timeouts), whatever exchangelib re-raised it as."""
    checks: list[tuple[type[BaseException] | tuple[type[BaseException], ...], ErrorClass, str | None]] = [
        (UnauthorizedError, ErrorClass.AUTH, "credentials refused (HTTP 401)"),
        ((socket.gaierror, urllib3.exceptions.NameResolutionError), ErrorClass.DNS, "the name does not resolve"),
        (ssl.SSLCertVerificationError, ErrorClass.TLS, None),
        (ConnectionRefusedError, ErrorClass.CONNECT, "connection refused"),  # before timeouts: urllib3's
        # NewConnectionError is a ConnectTimeoutError subclass; requests raises ConnectTimeout only for real ones
        (
            requests.exceptions.ConnectTimeout,
            ErrorClass.TIMEOUT,
            "no answer to the TCP/TLS connection attempt (connect timeout)",
        ),
        (
            (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError),
            ErrorClass.TIMEOUT,
            "the server stopped answering (read timeout)",
        ),
        (ssl.SSLError, ErrorClass.TLS, None),
        (requests.exceptions.SSLError, ErrorClass.TLS, "TLS handshake failed"),
        (
            (
                ConnectionResetError,
                BrokenPipeError,
                RemoteDisconnected,
                requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.ProtocolError,
            ),
            ErrorClass.CONNECT,
            "connection reset or closed by the server",
        ),
        ((requests.exceptions.ConnectionError, urllib3.exceptions.NewConnectionError), ErrorClass.CONNECT, None),
    ]
    for kinds, error_class, detail in checks:
        for item in chain:
            if isinstance(item, kinds):
                if isinstance(item, ssl.SSLCertVerificationError):
                    return error_class, f"certificate not trusted: {item.verify_message or item.reason}"
                if isinstance(item, ssl.SSLError):
                    return error_class, f"TLS handshake failed: {item.reason or item.__class__.__name__}"
                return error_class, detail or f"cannot connect ({item.__class__.__name__})"
    return None


def _ews(error: EWSError) -> tuple[ErrorClass, str]:
    """What an EWS-level failure (exchangelib's own exceptions) means, from the original one."""
    name, text = error.__class__.__name__, str(error)
    if isinstance(error, CASError):
        status = getattr(error.response, "status_code", "?")
        return ErrorClass.HTTP_STATUS, f"HTTP {status} with X-CasErrorCode {error.cas_error[:40]}"
    if isinstance(error, RedirectError):
        return ErrorClass.HTTP_STATUS, "redirected (HTTP 301/302)"
    if text.startswith("Caused by "):  # ErrorServerBusy / ErrorInternalServerTransientError from an HTTP answer
        cause = text.removeprefix("Caused by ")
        if "redirect" in cause:
            cause = "HTTP 302 to the generic error page"
        return ErrorClass.HTTP_STATUS, cause.removesuffix(" response")[:60]
    if isinstance(error, MalformedResponseError):
        status = _STATUS.search(text)
        if status is not None:
            return ErrorClass.HTTP_STATUS, f"HTTP {status.group(1)}"
        return ErrorClass.PROTOCOL, "malformed EWS answer"
    if isinstance(error, ResponseMessageError | SOAPError):
        code = name if name.startswith("Error") else None
        return classify_code(code), code or "SOAP fault"
    if isinstance(error, TransportError):
        return ErrorClass.PROTOCOL, f"{name}: {text[:60]}"
    return ErrorClass.PROTOCOL, name


def classify(exc: BaseException) -> tuple[ErrorClass, str]:
    """The error class and a short detail of a failed exchangelib call (see the module docstring)."""
    chain = list(_chain(exc))
    found = _transport(chain)
    if found is not None:
        return found
    ews = [item for item in chain if isinstance(item, EWSError)]
    if ews:
        return _ews(ews[-1])  # the innermost: what exchangelib re-raised ("Reraised from …") is its context
    return ErrorClass.INTERNAL, f"{exc.__class__.__name__}: {str(exc)[:60]}"
