"""Client-side HTTP authentication as Outlook does it: NTLM/Negotiate, Basic, Bearer, and choosing among them.

Each scheme is an ``httpx.Auth`` generator flow that yields every leg (style.md rule 6) and records what happened in
an :class:`AuthReport`: the schemes the first 401 offered, the one used, the status and duration of each leg
(``time.perf_counter`` around each yield, i.e. request sent to response headers, plus the draining of the previous
401 body), and a classified :class:`AuthFailure`. The report is put into the final response's extensions (read it
with :func:`auth_report`) and kept as ``auth.last_report`` (convenient, but shared by every request of that auth
object). Target failures are data: a flow never raises for what a server sends; it returns the last response.

Specifications followed:

- RFC 9110 §11.6.1: ``WWW-Authenticate`` challenges, parsed by :mod:`casprobe.net.authreport` (whose names are
  re-exported here, with the report types).
- RFC 4559 §4 (``Negotiate``) and [MS-NLMP] §2.2.1 (NEGOTIATE, CHALLENGE, AUTHENTICATE messages): three legs on
  **one TCP connection** (protocols.md §5.1). httpx returns the connection to its pool between legs and takes the
  first idle one back, so a client used by one thread at a time keeps it; each :class:`AuthLeg` names the
  connection that carried it, and a handshake split over two connections is reported as such.
- RFC 5929 §4.1 ``tls-server-end-point`` channel bindings ([MS-NLMP] §3.1.5.2.2, Extended Protection), taken from
  the certificate of the connection that carried the challenge.
- RFC 7617 (Basic, UTF-8 user-pass) and RFC 6750 §3 (Bearer, ``error="invalid_token"``); protocols.md §5.3.
- IIS semantics: a connection that completed NTLM/Negotiate serves later requests without Authorization, so the
  NTLM/Negotiate flows first send the request without it and only handshake on a 401 (unless ``preemptive``).

pyspnego is imported only when a handshake starts (style.md rule 9).
"""

from __future__ import annotations

import base64
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import httpx

from casprobe.errors import ConfigError
from casprobe.net.authreport import (
    KNOWN_SCHEMES,
    REPORT_EXTENSION,
    AuthFailure,
    AuthLeg,
    AuthRecorder,
    AuthReport,
    Challenge,
    auth_report,
    parse_www_authenticate,
    response_challenges,
)
from casprobe.net.credentials import BearerToken, Credentials, Secret

if TYPE_CHECKING:
    from spnego.channel_bindings import GssChannelBindings

__all__ = [
    "DEFAULT_PREFER",
    "KNOWN_SCHEMES",
    "REPORT_EXTENSION",
    "AuthFailure",
    "AuthLeg",
    "AuthReport",
    "AutoAuth",
    "BasicAuth",
    "BearerAuth",
    "Challenge",
    "SpnegoAuth",
    "auth_report",
    "parse_www_authenticate",
    "tls_server_end_point",
]

DEFAULT_PREFER: tuple[str, ...] = ("Negotiate", "NTLM", "Basic", "Bearer")
_MAX_TOKENS = 4  # client tokens in one NTLM/Negotiate handshake (NTLM uses 2)
_Flow = Generator[httpx.Request, httpx.Response, httpx.Response]  # a flow (or part of one) returns the last response


def _describe(exc: BaseException, secret: Secret | None) -> str:
    """A one-line description of a library exception, with the password (if it appears) masked."""
    text = " ".join(str(exc).split())[:200]
    if secret is not None and secret.reveal() and secret.reveal() in text:
        text = text.replace(secret.reveal(), "***")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _ReportingAuth(httpx.Auth):
    """Base of the flows: runs :meth:`_flow` with a recorder and publishes the report, whatever happens."""

    requires_response_body = False

    def __init__(self) -> None:
        self.last_report: AuthReport | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        recorder = AuthRecorder()
        response: httpx.Response | None = None
        try:
            response = yield from self._flow(request, recorder)
        finally:
            if response is None and recorder.failure is None:
                recorder.fail(AuthFailure.INTERRUPTED, "the transport failed during the authentication flow")
            report = recorder.snapshot()
            self.last_report = report
            if response is not None:
                response.extensions[REPORT_EXTENSION] = report

    def _flow(self, request: httpx.Request, rec: AuthRecorder) -> _Flow:
        """Default: send without Authorization; on 401 continue with :meth:`_continue`."""
        request.headers.pop("Authorization", None)
        response = yield from rec.leg(request, None)
        if response.status_code != 401:
            return response
        rec.first_401(response)
        return (yield from self._continue(request, response, rec))

    def _continue(self, request: httpx.Request, response: httpx.Response, rec: AuthRecorder) -> _Flow:
        raise NotImplementedError  # pragma: no cover

    def _offered(self, rec: AuthRecorder, scheme: str) -> bool:
        if scheme in rec.offered:
            return True
        listed = ", ".join(rec.offered) or "none (401 without a usable WWW-Authenticate)"
        rec.fail(AuthFailure.NO_COMMON_SCHEME, f"{scheme} not offered; offered: {listed}")
        return False


def tls_server_end_point(cert_der: bytes) -> bytes:
    """Return the RFC 5929 §4.1 hash of a DER certificate: its signature's hash, SHA-256 for MD5/SHA-1/none."""
    from casprobe.net.tls import channel_binding_hash

    return channel_binding_hash(cert_der)


def _channel_bindings(response: httpx.Response) -> tuple[GssChannelBindings | None, str | None]:
    """The binding for the connection that carried ``response``, or None and why."""
    from spnego.channel_bindings import GssChannelBindings

    stream: Any = response.extensions.get("network_stream")
    if stream is None:
        return None, "no channel binding: the transport exposes no connection"
    try:
        ssl_object = stream.get_extra_info("ssl_object")
        cert = ssl_object.getpeercert(True) if ssl_object is not None else None  # positional: see field-notes §1
    except (AttributeError, TypeError, ValueError) as exc:
        return None, f"no channel binding: the connection gave no certificate ({type(exc).__name__})"
    if not cert:
        return None, "no channel binding: not a TLS connection"
    try:
        digest = tls_server_end_point(cert)
    except (ValueError, TypeError) as exc:
        return None, f"no channel binding: unreadable server certificate ({type(exc).__name__})"
    return GssChannelBindings(application_data=b"tls-server-end-point:" + digest), None


def _decode_token(text: str) -> bytes:
    raw = base64.b64decode(text, validate=True)
    if not raw:
        raise ValueError("empty token")
    return raw


class SpnegoAuth(_ReportingAuth):
    """NTLM or Negotiate (SPNEGO; NTLM inside it when Kerberos is not available) with pyspnego.

    The request goes first without Authorization (IIS lets an authenticated connection through; a 401 tells
    which schemes the server offers), or with the first token at once when ``preemptive`` (one round trip less
    on a fresh connection, a needless new handshake on an authenticated one). The request body is re-sent on
    every leg. ``channel_binding`` adds the tls-server-end-point binding of the connection that carried the
    challenge (needed by servers enforcing Extended Protection).
    """

    requires_request_body = True

    def __init__(
        self,
        credentials: Credentials,
        protocol: str = "ntlm",
        *,
        channel_binding: bool = True,
        preemptive: bool = False,
    ) -> None:
        super().__init__()
        if protocol not in ("ntlm", "negotiate"):
            raise ConfigError(f"protocol must be 'ntlm' or 'negotiate', not {protocol!r}")
        self.credentials = credentials
        self.protocol = protocol
        self.scheme = "NTLM" if protocol == "ntlm" else "Negotiate"
        self.channel_binding = channel_binding
        self.preemptive = preemptive

    def __repr__(self) -> str:
        return (
            f"SpnegoAuth(username={self.credentials.username!r}, protocol={self.protocol!r}, "
            f"channel_binding={self.channel_binding}, preemptive={self.preemptive})"
        )

    def _flow(self, request: httpx.Request, rec: AuthRecorder) -> _Flow:
        if not self.preemptive:
            return (yield from super()._flow(request, rec))
        return (yield from self._handshake(request, None, rec))

    def _continue(self, request: httpx.Request, response: httpx.Response, rec: AuthRecorder) -> _Flow:
        if not self._offered(rec, self.scheme):
            return response
        return (yield from self._handshake(request, response, rec))

    def _new_context(self, request: httpx.Request) -> Any:
        import spnego

        options = spnego.NegotiateOptions.use_ntlm if self.protocol == "ntlm" else spnego.NegotiateOptions.use_negotiate
        return spnego.client(
            self.credentials.username,
            self.credentials.secret.reveal(),
            hostname=request.url.host,
            service="HTTP",
            protocol=self.protocol,
            options=options,
        )

    def _handshake(self, request: httpx.Request, response: httpx.Response | None, rec: AuthRecorder) -> _Flow:
        """Send tokens until the server stops challenging; ``response`` is the anonymous 401, if one was sent."""
        secret = self.credentials.secret
        rec.method = self.scheme
        try:
            context = self._new_context(request)
            token = context.step()
        except Exception as exc:  # pyspnego refuses e.g. an unusable user name or a missing mechanism
            rec.fail(AuthFailure.CLIENT_ERROR, f"cannot start {self.scheme}: {_describe(exc, secret)}")
            if response is None:  # preemptive: nothing was sent yet, send it bare so the caller gets a response
                return (yield from rec.leg(request, None))
            return response
        sent = 0
        while True:
            request.headers["Authorization"] = f"{self.scheme} {base64.b64encode(token).decode('ascii')}"
            challenge_leg = rec.legs[-1] if rec.legs else None
            response = yield from rec.leg(request, self.scheme)
            sent += 1
            challenges = rec.first_401(response) if response.status_code == 401 else response_challenges(response)
            text = next((c.token for c in challenges if c.scheme == self.scheme and c.token), None)
            if response.status_code != 401:
                if text is not None and not context.complete:  # the final (mutual authentication) token
                    try:
                        context.step(_decode_token(text))
                    except Exception as exc:  # the request succeeded: note it, do not fail it
                        rec.detail = f"the server's final token did not verify: {_describe(exc, secret)}"
                return response
            if text is None or context.complete or sent >= _MAX_TOKENS:
                self._rejected(rec, sent, challenge_leg)
                return response
            cbt, why = _channel_bindings(response) if self.channel_binding else (None, None)
            try:
                token = context.step(_decode_token(text), channel_bindings=cbt)
            except Exception as exc:  # hostile input: SpnegoError, ValueError, struct.error, IndexError…
                failure = AuthFailure.BAD_CHALLENGE if sent == 1 else AuthFailure.REJECTED
                rec.fail(failure, f"{self.scheme} challenge refused by the client: {_describe(exc, secret)}")
                return response
            if cbt is not None:
                rec.channel_binding = True
            elif why is not None:
                rec.detail = why
            if not token:
                rec.fail(AuthFailure.BAD_CHALLENGE, f"{self.scheme} challenge produced no answer token")
                return response

    def _rejected(self, rec: AuthRecorder, sent: int, challenge_leg: AuthLeg | None) -> None:
        if sent == 1:
            if self.scheme not in rec.offered:
                self._offered(rec, self.scheme)
            else:
                rec.fail(
                    AuthFailure.REJECTED, f"the server refused the {self.scheme} NEGOTIATE token without a challenge"
                )
            return
        before, after = (challenge_leg.connection if challenge_leg else None), rec.legs[-1].connection
        if before is not None and after is not None and before != after:
            rec.fail(
                AuthFailure.CONNECTION_CHANGED,
                f"the {self.scheme} challenge came on connection {before} and the answer went on connection "
                f"{after}: the handshake needs one connection",
            )
            return
        binding = "with" if rec.channel_binding else "without"
        rec.fail(
            AuthFailure.REJECTED,
            f"rejected (bad credentials, or a channel binding the server refused); the answer went {binding} "
            "a channel binding",
        )


class _HeaderAuth(_ReportingAuth):
    """Base of the one-leg schemes: ``preemptive`` sends the header with the request, else only after a 401."""

    scheme = ""

    def __init__(self, preemptive: bool) -> None:
        super().__init__()
        self.preemptive = preemptive
        self.requires_request_body = not preemptive  # a second leg re-sends the body

    def _flow(self, request: httpx.Request, rec: AuthRecorder) -> _Flow:
        if self.preemptive:
            return (yield from self._send(request, rec))
        return (yield from super()._flow(request, rec))

    def _continue(self, request: httpx.Request, response: httpx.Response, rec: AuthRecorder) -> _Flow:
        if not self._offered(rec, self.scheme):
            return response
        return (yield from self._send(request, rec))

    def _send(self, request: httpx.Request, rec: AuthRecorder) -> _Flow:
        rec.method = self.scheme
        request.headers["Authorization"] = f"{self.scheme} {self._credentials()}"
        response = yield from rec.leg(request, self.scheme)
        if response.status_code == 401:
            challenge = next((c for c in rec.first_401(response) if c.scheme == self.scheme), None)
            rec.fail(AuthFailure.REJECTED, self._refusal(challenge))
        return response

    def _credentials(self) -> str:
        raise NotImplementedError  # pragma: no cover

    def _refusal(self, challenge: Challenge | None) -> str:
        raise NotImplementedError  # pragma: no cover


class BasicAuth(_HeaderAuth):
    """RFC 7617 Basic with UTF-8 user-pass; ``preemptive`` (the default, like httpx) sends it with the request."""

    scheme = "Basic"

    def __init__(self, credentials: Credentials, *, preemptive: bool = True) -> None:
        super().__init__(preemptive)
        if ":" in credentials.username:
            raise ConfigError("a Basic user name cannot contain ':' (RFC 7617 §2)")
        self.credentials = credentials

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.credentials.username!r}, preemptive={self.preemptive})"

    def _credentials(self) -> str:
        pair = f"{self.credentials.username}:{self.credentials.secret.reveal()}".encode()
        return base64.b64encode(pair).decode("ascii")

    def _refusal(self, challenge: Challenge | None) -> str:
        return "rejected: the server refused the Basic user name or password"


class BearerAuth(_HeaderAuth):
    """RFC 6750 ``Authorization: Bearer``; ``preemptive`` (the default) sends it with the request."""

    scheme = "Bearer"

    def __init__(self, token: BearerToken, *, preemptive: bool = True) -> None:
        super().__init__(preemptive)
        self.token = token

    def __repr__(self) -> str:
        return f"BearerAuth(token=***, preemptive={self.preemptive})"

    def _credentials(self) -> str:
        return self.token.secret.reveal()

    def _refusal(self, challenge: Challenge | None) -> str:
        error = (challenge.param("error") if challenge else None) or "no error code"
        return f"rejected: the server refused the bearer token ({error[:64]})"


class AutoAuth(_ReportingAuth):
    """Send the request without Authorization, then pick among the offered schemes as Outlook does.

    The first scheme of ``prefer`` that the 401 offers and that can be used (NTLM/Negotiate/Basic need
    ``credentials``, Bearer needs ``bearer``) continues the same request. With the default order Basic is used
    only when neither Negotiate nor NTLM is offered; put "Bearer" first to model a modern-auth Outlook.
    """

    requires_request_body = True

    def __init__(
        self,
        credentials: Credentials | None,
        bearer: BearerToken | None = None,
        *,
        prefer: tuple[str, ...] = DEFAULT_PREFER,
        channel_binding: bool = True,
    ) -> None:
        super().__init__()
        _canonical = {s.lower(): s for s in KNOWN_SCHEMES}
        canonical = tuple(_canonical.get(s.lower(), s) for s in prefer)
        if not canonical or any(s not in KNOWN_SCHEMES for s in canonical) or len(set(canonical)) != len(canonical):
            raise ConfigError(f"prefer must list distinct schemes among {', '.join(KNOWN_SCHEMES)}; got {prefer!r}")
        if credentials is None and bearer is None:
            raise ConfigError("AutoAuth needs credentials, a bearer token, or both")
        self.prefer = canonical
        self._flows: dict[str, SpnegoAuth | _HeaderAuth] = {}
        if credentials is not None:
            self._flows["Negotiate"] = SpnegoAuth(credentials, "negotiate", channel_binding=channel_binding)
            self._flows["NTLM"] = SpnegoAuth(credentials, "ntlm", channel_binding=channel_binding)
            if ":" not in credentials.username:
                self._flows["Basic"] = BasicAuth(credentials, preemptive=False)
        if bearer is not None:
            self._flows["Bearer"] = BearerAuth(bearer, preemptive=False)

    def __repr__(self) -> str:
        return f"AutoAuth(prefer={self.prefer!r}, usable={tuple(self._flows)!r})"

    def _continue(self, request: httpx.Request, response: httpx.Response, rec: AuthRecorder) -> _Flow:
        for scheme in self.prefer:
            if scheme in rec.offered and scheme in self._flows:
                return (yield from self._flows[scheme]._continue(request, response, rec))
        offered = ", ".join(rec.offered) or "none (401 without a usable WWW-Authenticate)"
        rec.fail(AuthFailure.NO_COMMON_SCHEME, f"offered: {offered}; usable here: {', '.join(self._flows)}")
        return response
