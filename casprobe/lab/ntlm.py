"""IIS-like authentication layer of the lab: NTLM and Negotiate (pyspnego acceptor), Basic, a Bearer stub.

A pure-ASGI middleware placed in front of every simulated Exchange virtual directory. It follows:

- [MS-NLMP] §2.2.1 and §3.2.5: NEGOTIATE (type 1), CHALLENGE (type 2) and AUTHENTICATE (type 3) messages, carried
  over three legs of one TCP connection (protocols.md §5.1); RFC 4559 §4-5 for the ``Negotiate`` HTTP scheme,
  whose token may be SPNEGO-wrapped (RFC 4178, first byte 0x60) or raw NTLMSSP;
- RFC 5929 §4 ``tls-server-end-point`` channel bindings for Extended Protection (hash of this server's certificate:
  the signature's hash, SHA-256 when that is MD5 or SHA-1), the way requests-ntlm computes it;
- RFC 7617 (Basic) and RFC 6750 §3 (Bearer ``error="invalid_token"``), see :mod:`casprobe.lab.httpauth`.

IIS semantics: once a connection completes NTLM/Negotiate, later requests on it need no Authorization header; a new
type-1 (or SPNEGO init token) restarts the handshake; any failure answers a plain 401 listing the offered schemes
and forgets the connection's pending and authenticated state. Every 401 drains the request body without keeping it.

A TCP connection is identified by ``(scope["client"], scope["server"])``. **Run uvicorn with
``proxy_headers=False``**: with uvicorn's default (``proxy_headers=True``, ``forwarded_allow_ips`` 127.0.0.1) an
``X-Forwarded-For`` header from a loopback peer rewrites ``scope["client"]`` to ``(xff_ip, 0)`` and every connection
then shares one key (field-notes.md §1 "Per-connection identity"). Records expire after ``connection_ttl_s`` of idle
time (keep it a little above uvicorn's ``timeout_keep_alive``), bounded in number (LRU).

pyspnego's NTLM acceptor reads its users from the file named by the environment variable ``NTLM_USER_FILE``, re-read
on every handshake; write it with :func:`format_user_file_line` (from :mod:`casprobe.lab.ntlmcreds`, smbpasswd
hash lines, cheaper than plaintext).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import spnego
from spnego.exceptions import SpnegoError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from casprobe.lab.conntable import ConnectionTable
from casprobe.lab.httpauth import (
    KNOWN_SCHEMES,
    authorization_value,
    challenge_values,
    decode_base64_token,
    decode_basic,
    drain_body,
    send_unauthorized,
    split_credentials,
)
from casprobe.lab.ntlmcreds import certificate_hash, channel_bindings_for, format_user_file_line

__all__ = [
    "AuthConfig",
    "AuthMiddleware",
    "AuthStats",
    "certificate_hash",
    "channel_bindings_for",
    "format_user_file_line",
]

_log = logging.getLogger(__name__)

_NTLM_NEGOTIATE_PREFIX = b"NTLMSSP\x00\x01\x00\x00\x00"
_SPNEGO_INIT_TAG = 0x60  # [APPLICATION 0] GSS InitialContextToken, RFC 2743 §3.1
_REALM_RE = re.compile(r"[\x20-\x7e]*")


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Authentication settings of one server or virtual directory.

    ``offered`` lists the schemes in ``WWW-Authenticate`` order (any of Negotiate, NTLM, Basic, Bearer; matched
    case-insensitively and stored in canonical spelling). ``extended_protection`` demands a channel binding that
    matches this server's certificate on NTLM/Negotiate. ``realm`` is Basic's realm. ``connection_ttl_s`` is the
    idle lifetime of an authenticated-connection record, ``pending_ttl_s`` that of a half-done handshake,
    ``max_connections`` bounds each of the two tables. ``response_headers`` are added to every 401 sent here
    (for example ``("X-FEServer", "MB1")``).
    """

    offered: tuple[str, ...] = ("Negotiate", "NTLM")
    extended_protection: bool = False
    realm: str = ""
    connection_ttl_s: float = 120.0
    pending_ttl_s: float = 30.0
    max_connections: int = 65_536
    response_headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        canonical = {scheme.lower(): scheme for scheme in KNOWN_SCHEMES}
        offered = tuple(canonical.get(scheme.lower(), scheme) for scheme in self.offered)
        unknown = [scheme for scheme in offered if scheme not in KNOWN_SCHEMES]
        if not offered or unknown or len(set(offered)) != len(offered):
            raise ValueError(f"offered must be distinct schemes among {KNOWN_SCHEMES}, got {self.offered!r}")
        object.__setattr__(self, "offered", offered)
        if '"' in self.realm or "\\" in self.realm or not _REALM_RE.fullmatch(self.realm):
            raise ValueError("realm must be printable ASCII without quotes or backslashes")
        if not (self.connection_ttl_s > 0 and self.pending_ttl_s > 0):
            raise ValueError("connection_ttl_s and pending_ttl_s must be > 0")
        if self.max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        for name, value in self.response_headers:
            if not (name.isascii() and value.isascii()) or any(c in name + value for c in "\r\n\0"):
                raise ValueError("response_headers must be single-line ASCII")


@dataclass(slots=True)
class AuthStats:
    """Counters of one middleware instance (read by tests and benchmarks; mutated only by the middleware)."""

    challenges: int = 0  # 401s listing the offered schemes
    handshakes_started: int = 0
    handshakes_completed: int = 0
    handshakes_failed: int = 0
    basic_accepted: int = 0
    basic_rejected: int = 0
    drained_bytes: int = 0  # request body bytes read and discarded by 401 answers


@dataclass(frozen=True, slots=True)
class _Pending:
    scheme: str
    context: spnego.ContextProxy


@dataclass(frozen=True, slots=True)
class _Authenticated:
    principal: str
    method: str


@dataclass(frozen=True, slots=True)
class _Outcome:
    """Result of one handshake leg: a challenge to send, a success, or a failure (all fields empty)."""

    challenge: bytes | None = None
    principal: str | None = None
    final_token: bytes | None = None


_FAILED = _Outcome()


def _connection_key(scope: Scope) -> Hashable | None:
    client = scope.get("client")
    if not client:
        return None
    server = scope.get("server")
    return (tuple(client), tuple(server) if server else None)


def _describe(exc: Exception) -> str:
    if isinstance(exc, SpnegoError):  # pyspnego's messages carry no secrets; keep one short line
        return " ".join(str(exc).split())[:200]
    return f"malformed token ({type(exc).__name__})"


class AuthMiddleware:
    """Pure-ASGI IIS-like authentication in front of one lab app (see the module docstring; proxy_headers=False).

    ``verify_basic(user, password)`` returns the canonical principal or None; ``is_anonymous(path)`` marks paths
    passed through untouched (healthcheck.htm, Autodiscover v2). On success the app sees
    ``scope["state"]["user"]`` and ``scope["state"]["auth_method"]`` ("NTLM", "Negotiate" or "Basic").
    """

    def __init__(
        self,
        app: ASGIApp,
        config: AuthConfig,
        *,
        server_cert_der: bytes | None,
        verify_basic: Callable[[str, str], str | None],
        is_anonymous: Callable[[str], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if config.extended_protection and server_cert_der is None:
            raise ValueError("extended_protection needs server_cert_der")
        self.app = app
        self.config = config
        self.stats = AuthStats()
        self._verify_basic = verify_basic
        self._is_anonymous = is_anonymous
        self._bindings = (
            channel_bindings_for(server_cert_der) if config.extended_protection and server_cert_der else None
        )
        self._schemes = {scheme.lower(): scheme for scheme in config.offered}
        self._offers = challenge_values(config.offered, config.realm)
        self._bearer_offers = challenge_values(config.offered, config.realm, bearer_error=True)
        self._extra = [(n.lower().encode("ascii"), v.encode("ascii")) for n, v in config.response_headers]
        self._pending: ConnectionTable[_Pending] = ConnectionTable(config.pending_ttl_s, config.max_connections, clock)
        self._authed: ConnectionTable[_Authenticated] = ConnectionTable(
            config.connection_ttl_s, config.max_connections, clock
        )
        if {"NTLM", "Negotiate"} & set(config.offered) and not os.path.isfile(os.environ.get("NTLM_USER_FILE", "")):
            _log.warning("NTLM/Negotiate offered but NTLM_USER_FILE does not name a file: handshakes will fail")

    def forget_connection(self, key: Hashable) -> None:
        """Drop what is recorded for a TCP connection that opened afresh or closed (see ``ServerHost``)."""
        self._pending.pop(key)
        self._authed.pop(key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or self._is_anonymous(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        if kind == "websocket":  # the lab serves none; never let an unauthenticated upgrade through
            await send({"type": "websocket.close", "code": 1008})
            return
        key = _connection_key(scope)
        value = authorization_value(scope["headers"])
        if value is None:
            record = self._authed.get(key) if key is not None else None
            if record is None:
                await self._deny(scope, receive, send, self._offers)
            else:
                await self._grant(scope, receive, send, record.principal, record.method, None)
            return
        credentials = split_credentials(value)
        scheme = self._schemes.get(credentials[0].lower()) if credentials else None
        if credentials is None or scheme is None:
            await self._deny(scope, receive, send, self._offers)
            return
        token = credentials[1]
        if scheme == "Basic":
            principal = self._check_basic(token)
            if principal is None:
                await self._deny(scope, receive, send, self._offers)
            else:
                await self._grant(scope, receive, send, principal, "Basic", None)
            return
        if scheme == "Bearer":  # not implemented in the lab: every token is refused
            await self._deny(scope, receive, send, self._bearer_offers)
            return
        outcome = self._step(key, scheme, token)
        if outcome.challenge is not None:
            challenge = scheme.encode("ascii") + b" " + base64.b64encode(outcome.challenge)
            await self._deny(scope, receive, send, [challenge], counted=False)
        elif outcome.principal is not None:
            await self._grant(scope, receive, send, outcome.principal, scheme, outcome.final_token)
        else:
            await self._deny(scope, receive, send, self._offers)

    def _check_basic(self, token: str) -> str | None:
        pair = decode_basic(token)
        if pair is None:
            _log.warning("Basic credentials rejected: malformed")
            self.stats.basic_rejected += 1
            return None
        user, password = pair
        try:
            principal = self._verify_basic(user, password)
            reason = "wrong user or password"
        except Exception as exc:  # a lab verifier bug must not turn hostile input into a 500
            principal, reason = None, f"verifier raised {type(exc).__name__}"
        if principal is None:
            _log.warning("Basic credentials rejected for user %.64r: %s", user, reason)
            self.stats.basic_rejected += 1
            return None
        self.stats.basic_accepted += 1
        return principal

    def _step(self, key: Hashable | None, scheme: str, token: str) -> _Outcome:
        """Run one NTLM/Negotiate leg for the connection ``key``; never raises."""
        raw = decode_base64_token(token) if token else None
        if key is None or not raw:
            return self._fail(key, scheme, "no client address" if key is None else "empty or invalid base64 token")
        if raw.startswith(_NTLM_NEGOTIATE_PREFIX) or raw[0] == _SPNEGO_INIT_TAG:
            self._pending.pop(key)
            self._authed.pop(key)
            self.stats.handshakes_started += 1
            try:
                pending = _Pending(scheme, self._new_context(scheme))
            except Exception as exc:  # e.g. OperationNotAvailableError: NTLM_USER_FILE missing
                return self._fail(key, scheme, _describe(exc))
        else:
            found = self._pending.pop(key)
            if found is None or found.scheme != scheme:
                return self._fail(key, scheme, "token without a handshake in progress")
            pending = found
        try:
            out = pending.context.step(raw)
        except Exception as exc:  # pyspnego raises KeyError/struct.error/ValueError on garbage too
            return self._fail(key, scheme, _describe(exc))
        if not pending.context.complete:
            if not out:
                return self._fail(key, scheme, "acceptor produced no challenge")
            self._pending.put(key, pending)
            return _Outcome(challenge=out)
        principal = pending.context.client_principal
        if not principal:
            return self._fail(key, scheme, "no client principal")
        self._authed.put(key, _Authenticated(principal, scheme))
        self.stats.handshakes_completed += 1
        return _Outcome(principal=principal, final_token=out or None)

    def _new_context(self, scheme: str) -> spnego.ContextProxy:
        if scheme == "NTLM":
            protocol, options = "ntlm", spnego.NegotiateOptions.use_ntlm
        else:
            protocol, options = "negotiate", spnego.NegotiateOptions.use_negotiate
        return spnego.server(protocol=protocol, options=options, channel_bindings=self._bindings)

    def _fail(self, key: Hashable | None, scheme: str, reason: str) -> _Outcome:
        if key is not None:
            self._pending.pop(key)
            self._authed.pop(key)
        self.stats.handshakes_failed += 1
        _log.warning("%s authentication rejected for %s: %s", scheme, key, reason)
        return _FAILED

    async def _deny(
        self, scope: Scope, receive: Receive, send: Send, challenges: list[bytes], *, counted: bool = True
    ) -> None:
        drained, disconnected = await drain_body(receive)
        self.stats.drained_bytes += drained
        if counted:
            self.stats.challenges += 1
        if not disconnected:
            await send_unauthorized(send, challenges, self._extra, head=scope.get("method") == "HEAD")

    async def _grant(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        principal: str,
        method: str,
        final_token: bytes | None,
    ) -> None:
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["user"] = principal
        state["auth_method"] = method
        if final_token is None:
            await self.app(scope, receive, send)
            return
        header = (b"www-authenticate", method.encode("ascii") + b" " + base64.b64encode(final_token))

        async def send_with_token(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_token)
