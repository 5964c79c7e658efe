"""The data that travels between casprobe's stages: frozen, slotted dataclasses only.

``config/CLI → Target → probes → ProbeResult → exporters / store / analysis``. A probe never raises for a target's
failure: it returns a :class:`ProbeResult` whose ``error_class`` says what kind of failure it was, from a closed
set that is safe to use as a metric label, and whose ``detail`` says the rest in words.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

__all__ = [
    "ErrorClass",
    "LabEventRecord",
    "LoadDisconnect",
    "LoadRun",
    "Marker",
    "Outage",
    "PhaseTimings",
    "ProbeResult",
    "RequestStat",
    "RunInfo",
    "Severity",
    "Step",
    "Target",
    "TargetKind",
    "TlsFacts",
]


class ErrorClass(StrEnum):
    """Why a probe failed (closed set; bounded cardinality as a metric label).

    - ``dns``: the name does not resolve.
    - ``connect``: TCP connect refused, unreachable, reset before anything was exchanged.
    - ``tls``: handshake failed, certificate invalid, expired, untrusted or for another name.
    - ``timeout``: a deadline passed (connect, read, or the probe's own deadline).
    - ``http_status``: an HTTP status the protocol does not expect (5xx, 404, 503 from a draining server…).
    - ``auth``: no common authentication method, credentials refused, channel binding refused.
    - ``protocol``: the server answered, but not as the protocol says (bad framing, MAPI X-ResponseCode ≠ 0,
      Autodiscover error document, redirect loop, EWS error response class).
    - ``content``: a well-formed answer that says something is wrong or is not what was expected (no mapiHttp
      block, mailbox not found, wrong health check body, body too large).
    - ``internal``: a bug in casprobe (reported, not raised, so one probe cannot sink a run).
    """

    DNS = "dns"
    CONNECT = "connect"
    TLS = "tls"
    TIMEOUT = "timeout"
    HTTP_STATUS = "http_status"
    AUTH = "auth"
    PROTOCOL = "protocol"
    CONTENT = "content"
    INTERNAL = "internal"


class Severity(IntEnum):
    """How bad a result is; the values are the Nagios exit codes."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


class TargetKind(StrEnum):
    NAMESPACE = "namespace"
    SERVER = "server"


@dataclass(frozen=True, slots=True)
class Target:
    """A name to probe.

    Attributes:
        name: the DNS name used in URLs, Host and SNI (``outlook.contoso.com``, ``mb1.contoso.com``).
        kind: the load-balanced namespace, or one server's own name.
        port: HTTPS port.
        address: a pinned address (``--resolve`` or the lab profile); None means resolve with the system.
        label: how reports name it (``namespace``, ``mb1``); defaults to the name.
    """

    name: str
    kind: TargetKind = TargetKind.SERVER
    port: int = 443
    address: str | None = None
    label: str = ""

    @property
    def display(self) -> str:
        return self.label or self.name

    def origin(self) -> str:
        return f"https://{self.name}" if self.port == 443 else f"https://{self.name}:{self.port}"


@dataclass(frozen=True, slots=True)
class PhaseTimings:
    """Where the time of one request (or of a whole probe, summed) went, in seconds; None = did not happen.

    Attributes:
        resolve: name → address.
        connect: TCP connect.
        tls: TLS handshake.
        auth: each authentication leg (401 round trips and the authenticated request itself).
        first_byte: request sent → first response byte (server processing).
        total: the whole request (or probe), wall clock.
    """

    resolve: float | None = None
    connect: float | None = None
    tls: float | None = None
    auth: tuple[float, ...] = ()
    first_byte: float | None = None
    total: float | None = None

    def as_dict(self) -> dict[str, float]:
        """Flat phase → seconds (auth legs as ``auth_1``, ``auth_2``, …), skipping phases that did not happen."""
        out = {k: v for k, v in (("resolve", self.resolve), ("connect", self.connect), ("tls", self.tls)) if v}
        out.update({f"auth_{i}": leg for i, leg in enumerate(self.auth, 1)})
        if self.first_byte is not None:
            out["first_byte"] = self.first_byte
        if self.total is not None:
            out["total"] = self.total
        return out


@dataclass(frozen=True, slots=True)
class TlsFacts:
    """What the TLS handshake showed.

    Attributes:
        version: ``TLSv1.3``. cipher: the negotiated cipher suite.
        verified: the chain verified against the trust store (False when verification is off or failed).
        name_match: the certificate names the host that was asked for.
        not_after: expiry as an ISO 8601 string (UTC). days_left: whole days until then (negative = expired).
        subject, issuer: distinguished names. san: subjectAltName DNS names.
        verification_disabled: the user switched verification off for this run (shown in every output).
    """

    version: str | None = None
    cipher: str | None = None
    verified: bool = False
    name_match: bool | None = None
    not_after: str | None = None
    days_left: int | None = None
    subject: str = ""
    issuer: str = ""
    san: tuple[str, ...] = ()
    verification_disabled: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a probe, as the Remote Connectivity Analyzer shows them: what was tried and what came back.

    Attributes:
        name: ``POST /mapi/emsmdb (Connect)``, ``Autodiscover candidate https://lab.test/…``.
        ok: the step did what it should.
        detail: one line for a person.
        error_class: why it failed, when it did.
        status_code: the HTTP status, when there was one.
        duration: seconds.
        address: the address connected to.
        fe_server, be_server: ``X-FEServer`` and ``X-CalculatedBETarget`` / ``X-BEServer`` of the answer.
        response_code: MAPI/HTTP ``X-ResponseCode`` (or another protocol code), when there was one.
    """

    name: str
    ok: bool
    detail: str = ""
    error_class: ErrorClass | None = None
    status_code: int | None = None
    duration: float = 0.0
    address: str | None = None
    fe_server: str | None = None
    be_server: str | None = None
    response_code: int | None = None


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one probe of one target.

    Attributes:
        target: what was probed. probe: ``health``, ``autodiscover``, ``mapi``, ``ews``.
        success: it worked. severity: OK, WARNING (worked, with a caveat such as a certificate about to
            expire) or CRITICAL.
        error_class, detail: why it failed (None / empty on success), or the caveat.
        started_at: ``time.time()`` at start (a timestamp); duration: seconds (``perf_counter``).
        started_mono: ``time.monotonic()`` at start: what durations and outage windows are computed from, and
            what compares with the lab's event log (system-wide clock on Linux); 0.0 when unknown.
        phases: the timings of the probe's main request (the one that decides success), with the total
            of the whole probe.
        address: the address connected to. fe_server / be_server: who answered and who holds the mailbox.
        tls: TLS facts of the first connection. auth_offered: schemes offered by the server;
            auth_used: the one used.
        steps: the trace. facts: protocol-specific findings as (name, value) pairs (URLs handed out,
            ServerVersionInfo, MAPI codes…), for display and comparison.
    """

    target: Target
    probe: str
    success: bool
    severity: Severity
    error_class: ErrorClass | None = None
    detail: str = ""
    started_at: float = 0.0
    duration: float = 0.0
    phases: PhaseTimings = field(default_factory=PhaseTimings)
    address: str | None = None
    fe_server: str | None = None
    be_server: str | None = None
    tls: TlsFacts | None = None
    auth_offered: tuple[str, ...] = ()
    auth_used: str | None = None
    steps: tuple[Step, ...] = ()
    facts: tuple[tuple[str, str], ...] = ()
    started_mono: float = 0.0

    def fact(self, name: str) -> str | None:
        return next((value for key, value in self.facts if key == name), None)


@dataclass(frozen=True, slots=True)
class Marker:
    """A note put on a run's timeline (``casprobe mark``, a key in the live view).

    Attributes:
        wall: ``time.time()``; mono: ``time.monotonic()`` (system-wide on Linux); text; source: ``user`` or
        ``watch``.
    """

    wall: float
    mono: float
    text: str
    source: str = "user"


@dataclass(frozen=True, slots=True)
class LabEventRecord:
    """One line of the lab's event log as a run store keeps it (the ground truth of a rehearsal).

    Attributes:
        seq: the lab's sequence number; wall / mono: when it happened; kind: ``maintenance.start``,
        ``haproxy.server``, …; data: its fields as a JSON object text (kept verbatim).
    """

    seq: int
    wall: float
    mono: float
    kind: str
    data: str = "{}"


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What a run was: its settings as they were, for reports that are rebuilt long after.

    Attributes:
        run_id: a UUID; started_at / ended_at: ``time.time()``; casprobe_version; interval_s: the schedule;
        targets: the names probed, as ``label=name`` strings; probes: the probe names (``mapi-session`` is the
        long-lived MAPI session); tls_verification: False when the user switched it off; settings: the rest as
        a JSON object text (never a secret); host: where it ran from.
    """

    run_id: str
    started_at: float
    casprobe_version: str
    interval_s: float
    targets: tuple[str, ...]
    probes: tuple[str, ...]
    tls_verification: bool = True
    settings: str = "{}"
    host: str = ""
    ended_at: float | None = None


@dataclass(frozen=True, slots=True)
class Outage:
    """A window in which one name × probe failed: from its first failed result to the first success after it.

    Attributes:
        target / probe: which row; start_wall, start_mono: when the first failed probe started; end_wall,
        end_mono: when the first successful probe after it started (None = still failing at the end of the
        run); failures: how many results failed in it; error_classes: the classes seen, most frequent first;
        first_detail: the first failure's detail.
    """

    target: str
    probe: str
    start_wall: float
    start_mono: float
    end_wall: float | None
    end_mono: float | None
    failures: int
    error_classes: tuple[str, ...]
    first_detail: str = ""

    @property
    def duration(self) -> float | None:
        return None if self.end_mono is None else self.end_mono - self.start_mono


@dataclass(frozen=True, slots=True)
class LoadDisconnect:
    """One interval in which one simulated client of a load run could not work (locustfiles/, issue 5).

    It opens at the client's first failed request and closes at its first successful request after that (for the
    Outlook user: an Execute, the request that does work; a Connect alone is not yet work).

    Attributes:
        cohort: ``namespace`` or the server label (``mb1``) whose own name the client was given; user: the
        simulated client's id; client: ``outlook`` (MAPI/HTTP) or ``mac`` (EWS); name: the host it used;
        started_at / ended_at: wall clock (``ended_at`` None = still cut off when the load stopped); failures:
        requests that failed in it; error_classes: the classes seen, in order of first appearance; detail: the
        first failure's description.
    """

    cohort: str
    user: str
    client: str
    name: str
    started_at: float
    ended_at: float | None
    failures: int
    error_classes: tuple[str, ...]
    detail: str = ""

    def duration(self, run_end: float) -> float:
        """Seconds cut off; an interval still open counts up to ``run_end``."""
        end = self.ended_at if self.ended_at is not None else max(run_end, self.started_at)
        return max(0.0, end - self.started_at)


@dataclass(frozen=True, slots=True)
class RequestStat:
    """Locust's figures for one request type of a load run (times in milliseconds; None when nothing was timed).

    Attributes: kind (Locust's request type, e.g. ``MAPI``), name (``Execute``), count, failures, median_ms,
    p95_ms, max_ms.
    """

    kind: str
    name: str
    count: int
    failures: int
    median_ms: float | None = None
    p95_ms: float | None = None
    max_ms: float | None = None


@dataclass(frozen=True, slots=True)
class LoadRun:
    """A load run as a run store keeps it, beside the probes' results.

    Attributes:
        started_at / ended_at: wall clock; source: what generated it (``locust 2.47.0, 2 workers``); cohorts:
        (cohort, simulated clients) pairs; stats: Locust's per-request-type figures; settings: the rest as a JSON
        object text (never a secret); id: the store's number for it (0 before it is stored).
    """

    started_at: float
    ended_at: float
    source: str
    cohorts: tuple[tuple[str, int], ...]
    stats: tuple[RequestStat, ...] = ()
    settings: str = "{}"
    id: int = 0
