"""What every probe shares: its settings, its context, its signature, and the recorder that builds its result.

A probe is one module in ``casprobe/probes/`` exporting ``probe(ctx: ProbeContext) -> ProbeResult`` (and one line
in :data:`casprobe.probes.PROBES`). It never raises for a target's failure: it records steps on a
:class:`Recorder` and returns :meth:`Recorder.success` or :meth:`Recorder.failure`; an exception that escapes the
probe's body is classified by :func:`casprobe.net.transport.classify` (``internal`` for a bug).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from casprobe.errors import ConfigError
from casprobe.model import ErrorClass, PhaseTimings, ProbeResult, Severity, Step, Target, TlsFacts
from casprobe.net.resolve import Resolver
from casprobe.net.transport import Exchange, ProbeClient, TransportOptions, classify

if TYPE_CHECKING:
    from casprobe.net.credentials import BearerToken, Credentials

__all__ = ["AuthChoice", "ProbeContext", "ProbeFn", "ProbeSettings", "Recorder"]

AuthChoice = Literal["auto", "ntlm", "negotiate", "basic", "bearer"]


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """What the user asked for, common to every target of a run.

    Attributes:
        mailbox: the SMTP address to probe as (Autodiscover, MAPI, EWS); None limits probes to what needs none.
        credentials / bearer: authentication material (references to secrets, never the secret in clear).
        auth: the method: ``auto`` picks from WWW-Authenticate as Outlook would.
        channel_binding: send the TLS channel binding with NTLM/Negotiate (Extended Protection).
        transport: TLS and per-operation timeout, body limit.
        timeout_s: each probe's whole deadline.
        mapi_notification_wait_s: hold a NotificationWait this long (0 = skip NotificationWait and PING).
        cert_warn_days: a certificate expiring within this many days makes a result a warning.
        domain: the SMTP domain Autodiscover starts from (defaults to the mailbox's).
        namespace: the load-balanced name of the run (``outlook.contoso.com``), so that Autodiscover can tell
            URLs naming the namespace from URLs naming one server; None = the namespace target's name.
        server_names: the servers' own names of the run (``mb1.contoso.com``), for the same purpose.
    """

    mailbox: str | None = None
    credentials: Credentials | None = None
    bearer: BearerToken | None = None
    auth: AuthChoice = "auto"
    channel_binding: bool = True
    transport: TransportOptions = field(default_factory=TransportOptions)
    timeout_s: float = 20.0
    mapi_notification_wait_s: float = 0.0
    cert_warn_days: int = 30
    domain: str | None = None
    namespace: str | None = None
    server_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProbeContext:
    """One probe of one target: what to probe, with which settings, resolving how, until when (monotonic)."""

    target: Target
    settings: ProbeSettings
    resolver: Resolver
    deadline: float

    def mailbox(self, probe: str) -> str:
        """The mailbox a probe acts as; a probe that needs one and has none is a configuration error."""
        mailbox = self.settings.mailbox
        if not mailbox or "@" not in mailbox:
            raise ConfigError(f"the {probe} probe needs a mailbox SMTP address (user@domain)")
        return mailbox

    def client(self, target: Target | None = None, *, auth: object = None) -> ProbeClient:
        """A fresh HTTP client for this probe (or for another name it must visit, e.g. a redirect target)."""
        import httpx

        return ProbeClient(
            target or self.target,
            resolver=self.resolver,
            options=self.settings.transport,
            deadline=self.deadline,
            auth=auth if isinstance(auth, httpx.Auth) else None,
        )


ProbeFn = Callable[[ProbeContext], ProbeResult]


class Recorder:
    """Accumulates a probe's steps and facts, then builds its :class:`ProbeResult`."""

    def __init__(self, ctx: ProbeContext, probe: str) -> None:
        self.ctx = ctx
        self.probe = probe
        self.started_at = time.time()
        self.started_mono = time.monotonic()
        self._t0 = time.perf_counter()
        self.steps: list[Step] = []
        self.facts: list[tuple[str, str]] = []
        self.main: Exchange | None = None
        self.tls: TlsFacts | None = None
        self.auth_offered: tuple[str, ...] = ()
        self.auth_used: str | None = None

    def fact(self, name: str, value: object) -> None:
        self.facts.append((name, str(value)))

    def exchange(self, name: str, exchange: Exchange, *, ok: bool, detail: str = "", **extra: object) -> Step:
        """Record a step that was an HTTP exchange; the last one recorded is the probe's main request."""
        error_class = extra.pop("error_class", None)
        response_code = extra.pop("response_code", None)
        step = Step(
            name=name,
            ok=ok,
            detail=detail,
            error_class=error_class if isinstance(error_class, ErrorClass) else None,
            status_code=exchange.status,
            duration=exchange.timings.total or 0.0,
            address=exchange.address,
            fe_server=exchange.fe_server,
            be_server=exchange.be_server,
            response_code=response_code if isinstance(response_code, int) else None,
        )
        self.steps.append(step)
        self.main = exchange
        if self.tls is None and exchange.tls is not None:
            self.tls = exchange.tls
        return step

    def note(self, name: str, *, ok: bool, detail: str = "", error_class: ErrorClass | None = None) -> Step:
        """Record a step that was not an HTTP exchange (a decision, a parse, a skipped candidate)."""
        step = Step(name=name, ok=ok, detail=detail, error_class=error_class)
        self.steps.append(step)
        return step

    def _result(self, success: bool, severity: Severity, error_class: ErrorClass | None, detail: str) -> ProbeResult:
        duration = time.perf_counter() - self._t0
        main = self.main
        phases = PhaseTimings()
        if main is not None:
            t = main.timings
            phases = PhaseTimings(t.resolve, t.connect, t.tls, t.auth, t.first_byte, duration)
        else:
            phases = PhaseTimings(total=duration)
        return ProbeResult(
            target=self.ctx.target,
            probe=self.probe,
            success=success,
            severity=severity,
            error_class=error_class,
            detail=detail,
            started_at=self.started_at,
            duration=duration,
            phases=phases,
            address=main.address if main else None,
            fe_server=main.fe_server if main else None,
            be_server=main.be_server if main else None,
            tls=self.tls,
            auth_offered=self.auth_offered,
            auth_used=self.auth_used,
            steps=tuple(self.steps),
            facts=tuple(self.facts),
            started_mono=self.started_mono,
        )

    def success(self, detail: str = "") -> ProbeResult:
        """A successful probe; a warning when the certificate expires within ``cert_warn_days``."""
        tls = self.tls
        warn_days = self.ctx.settings.cert_warn_days
        if tls is not None and tls.days_left is not None and tls.days_left < warn_days:
            note = f"certificate expires in {tls.days_left} days"
            return self._result(True, Severity.WARNING, None, f"{detail}; {note}" if detail else note)
        return self._result(True, Severity.OK, None, detail)

    def failure(self, error_class: ErrorClass, detail: str) -> ProbeResult:
        return self._result(False, Severity.CRITICAL, error_class, detail)

    def from_exception(self, exc: BaseException, step: str) -> ProbeResult:
        """A probe ended by an exception: classify it, record the failed step, maybe look at the certificate."""
        error_class, detail = classify(exc)
        self.note(step, ok=False, detail=detail, error_class=error_class)
        if error_class is ErrorClass.TLS and self.tls is None:
            self.inspect_certificate()
        if error_class is ErrorClass.INTERNAL:  # a bug in casprobe says nothing about the target
            return self._result(False, Severity.UNKNOWN, error_class, detail)
        return self.failure(error_class, detail)

    def inspect_certificate(self) -> None:
        """After a TLS failure: look (unverified) at the certificate the target presents and say what is wrong."""
        from casprobe.net.tls import inspect_certificate as inspect

        target = self.ctx.target
        try:
            address = target.address or self.ctx.resolver.resolve(target.name, target.port, 2.0).address
        except OSError:
            return
        remaining = max(0.2, min(3.0, self.ctx.deadline - time.monotonic()))
        facts = inspect(address, target.port, target.name, remaining, self.ctx.settings.transport.tls)
        if facts is not None:
            self.tls = facts
            problems = []
            if facts.name_match is False:
                problems.append(f"the certificate does not name {target.name} (it names {', '.join(facts.san)})")
            if facts.days_left is not None and facts.days_left < 0:
                problems.append(f"the certificate expired {-facts.days_left} days ago")
            if problems:
                self.note("certificate inspection", ok=False, detail="; ".join(problems), error_class=ErrorClass.TLS)
