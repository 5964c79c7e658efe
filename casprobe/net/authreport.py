"""What an authentication flow saw and did: ``WWW-Authenticate`` challenges, and the report of each request.

- RFC 9110 §11.6.1 (RFC 7235 §4.1): ``WWW-Authenticate`` carries one or more challenges per field line,
  ``auth-scheme [ 1*SP ( token68 / #auth-param ) ]``, separated by commas; IIS sends one per line
  (``Negotiate``, ``NTLM``, ``Basic realm="…"``), Exchange's modern auth adds ``Bearer`` with parameters
  (protocols.md §5.3). :func:`parse_www_authenticate` is tolerant like a client: malformed pieces are skipped,
  sizes and counts are capped, nothing is raised.
- :class:`AuthReport` is the frozen record the flows of :mod:`casprobe.net.auth` leave in
  ``response.extensions[REPORT_EXTENSION]``; :class:`AuthRecorder` is its mutable form during a flow.
"""

from __future__ import annotations

import enum
import logging
import re
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass

import httpx

__all__ = [
    "KNOWN_SCHEMES",
    "REPORT_EXTENSION",
    "AuthFailure",
    "AuthLeg",
    "AuthRecorder",
    "AuthReport",
    "Challenge",
    "auth_report",
    "offered_schemes",
    "parse_www_authenticate",
    "response_challenges",
]

_log = logging.getLogger("casprobe.net.auth")

KNOWN_SCHEMES: tuple[str, ...] = ("Negotiate", "NTLM", "Basic", "Bearer")
#: Key of the :class:`AuthReport` in ``response.extensions``.
REPORT_EXTENSION = "casprobe.auth_report"

_CANONICAL = {s.lower(): s for s in (*KNOWN_SCHEMES, "Digest", "Kerberos")}
_MAX_FIELDS = 32  # WWW-Authenticate field lines read from one response
_MAX_FIELD_LEN = 64 * 1024  # longer lines are ignored (IIS's own header limit)
_MAX_CHALLENGES = 32
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_SCHEME_RE = re.compile(_TOKEN)
_PARAM_RE = re.compile(rf'({_TOKEN})[ \t]*=[ \t]*({_TOKEN}|"(?:[^"\\]|\\.)*")')
_UNESCAPE_RE = re.compile(r"\\(.)")


class AuthFailure(enum.StrEnum):
    """Why authentication did not succeed (a closed set: safe as a metric label; the details go to ``detail``)."""

    REJECTED = "rejected"  # the server refused the credentials (or the channel binding)
    BAD_CHALLENGE = "bad challenge"  # the server's challenge could not be read
    NO_COMMON_SCHEME = "no common scheme"  # the 401 offered nothing this flow can do
    CONNECTION_CHANGED = "connection changed"  # the handshake's legs did not share one TCP connection
    CLIENT_ERROR = "client error"  # the client could not build a token (e.g. unsupported user name)
    INTERRUPTED = "interrupted"  # the transport failed mid-flow (httpx raised; see the probe's error)


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header.

    Attributes:
        scheme: canonical spelling for known schemes (Negotiate, NTLM, Basic, Bearer, Digest, Kerberos), else as sent.
        token: the text after the scheme when it is not auth-params (token68: an NTLM/Negotiate token), unchecked.
        params: auth-params in order, names lower-cased, quoted values unquoted.
    """

    scheme: str
    token: str | None = None
    params: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        """Return the first value of parameter ``name`` (case-insensitive), or None."""
        name = name.lower()
        return next((value for key, value in self.params if key == name), None)


def _split_elements(value: str) -> list[str]:
    """Split a field value on the commas outside quoted strings."""
    parts: list[str] = []
    start, quoted, escaped = 0, False, False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return [part.strip(" \t") for part in parts if part.strip(" \t")]


def _param(match: re.Match[str]) -> tuple[str, str]:
    value = match.group(2)
    if value.startswith('"'):
        value = _UNESCAPE_RE.sub(r"\1", value[1:-1])
    return match.group(1).lower(), value


def parse_www_authenticate(values: Iterable[str]) -> tuple[Challenge, ...]:
    """Parse the ``WWW-Authenticate`` field lines of a response into challenges; garbage is skipped, never raised."""
    found: list[tuple[str, str | None, list[tuple[str, str]]]] = []
    for count, value in enumerate(values):
        if count >= _MAX_FIELDS:
            break
        if len(value) > _MAX_FIELD_LEN:
            continue
        for element in _split_elements(value):
            match = _PARAM_RE.fullmatch(element)
            if match:  # an auth-param continuing the previous challenge
                if found:
                    found[-1][2].append(_param(match))
                continue
            scheme, _, rest = element.replace("\t", " ").partition(" ")
            if not _SCHEME_RE.fullmatch(scheme) or len(found) >= _MAX_CHALLENGES:
                continue
            rest = rest.strip()
            match = _PARAM_RE.fullmatch(rest)
            params = [_param(match)] if match else []
            token = rest if rest and not match else None
            found.append((_CANONICAL.get(scheme.lower(), scheme), token, params))
    return tuple(Challenge(scheme, token, tuple(params)) for scheme, token, params in found)


def response_challenges(response: httpx.Response) -> tuple[Challenge, ...]:
    """The challenges of all ``WWW-Authenticate`` field lines of ``response``."""
    return parse_www_authenticate(response.headers.get_list("www-authenticate"))


def offered_schemes(challenges: Iterable[Challenge]) -> tuple[str, ...]:
    """The distinct schemes of ``challenges``, in order."""
    return tuple(dict.fromkeys(c.scheme for c in challenges))


@dataclass(frozen=True, slots=True)
class AuthLeg:
    """One request/response round trip of an authentication flow.

    Attributes:
        status: HTTP status of the response.
        duration_s: seconds from handing the request to httpx to its response headers.
        scheme: the scheme of the Authorization header sent on this leg; None when sent without one.
        connection: which TCP connection carried it (1 = the first seen in this flow, 2 = another…); None if unknown.
    """

    status: int
    duration_s: float
    scheme: str | None
    connection: int | None = None


@dataclass(frozen=True, slots=True)
class AuthReport:
    """What an authentication flow did for one request.

    Attributes:
        offered: schemes listed by the first 401 (empty when no 401 came first).
        method: the scheme the flow authenticated with (or tried to); None when none was needed or possible.
        legs: every round trip, in order.
        failure: why it failed, or None.
        detail: a human sentence about the failure or an oddity (never a secret), or None.
        channel_binding: whether a tls-server-end-point binding was sent.
    """

    offered: tuple[str, ...]
    method: str | None
    legs: tuple[AuthLeg, ...]
    failure: AuthFailure | None = None
    detail: str | None = None
    channel_binding: bool = False

    @property
    def ok(self) -> bool:
        """True when nothing failed (the final status may still be an error of the application)."""
        return self.failure is None

    @property
    def duration_s(self) -> float:
        """Total time of all legs."""
        return sum(leg.duration_s for leg in self.legs)


def auth_report(response: httpx.Response) -> AuthReport | None:
    """Return the :class:`AuthReport` a flow of this module left in ``response.extensions``, if any."""
    report = response.extensions.get(REPORT_EXTENSION)
    return report if isinstance(report, AuthReport) else None


class AuthRecorder:
    """The mutable state of one flow run; :meth:`snapshot` freezes it into an :class:`AuthReport`."""

    def __init__(self) -> None:
        self.offered: tuple[str, ...] = ()
        self.method: str | None = None
        self.legs: list[AuthLeg] = []
        self.failure: AuthFailure | None = None
        self.detail: str | None = None
        self.channel_binding = False
        self._streams: list[object] = []
        self._seen_401 = False

    def leg(
        self, request: httpx.Request, scheme: str | None
    ) -> Generator[httpx.Request, httpx.Response, httpx.Response]:
        """Send ``request`` (``yield from`` it) and record the leg."""
        start = time.perf_counter()
        response = yield request
        leg = AuthLeg(response.status_code, time.perf_counter() - start, scheme, self._connection(response))
        self.legs.append(leg)
        _log.debug("auth leg %d (%s): %d in %.1f ms", len(self.legs), scheme, leg.status, leg.duration_s * 1000)
        return response

    def first_401(self, response: httpx.Response) -> tuple[Challenge, ...]:
        """The challenges of a 401; the first 401 of the flow sets ``offered``."""
        challenges = response_challenges(response)
        if not self._seen_401:
            self._seen_401 = True
            self.offered = offered_schemes(challenges)
        return challenges

    def _connection(self, response: httpx.Response) -> int | None:
        stream = response.extensions.get("network_stream")
        if stream is None:
            return None
        for number, seen in enumerate(self._streams, start=1):
            if seen is stream:
                return number
        self._streams.append(stream)
        return len(self._streams)

    def fail(self, failure: AuthFailure, detail: str) -> None:
        """Record the outcome (``detail`` is a sentence for people; it must never hold a secret)."""
        self.failure, self.detail = failure, detail
        _log.debug("authentication failed: %s (%s)", failure.value, detail)

    def snapshot(self) -> AuthReport:
        """The frozen report of what was recorded so far."""
        return AuthReport(self.offered, self.method, tuple(self.legs), self.failure, self.detail, self.channel_binding)
