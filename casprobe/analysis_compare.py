"""Namespace vs server names: disconnect time and error rate; and the backend distribution through the namespace.

**Disconnect time** of a name for a class of probes is the length of the *union* of the outage windows of those
probes (a moment counts once however many probes failed at it), an outage still open at the end of the run
counting until the end of the run (the end of the last stored result). It can therefore never exceed the run's
length. Classes: *new connections* (``mapi``, ``ews``, ``autodiscover``, ``health``, and any other probe: does a
new Outlook get in?) and *sessions* (``mapi-session``: does an Outlook that was already connected stay
connected?). Scopes: ``overall`` and ``during`` (the union of the maintenance windows; only when there are some);
the error rate of a scope counts the results that started in it.

**Backend distribution**: the namespace's results (every probe, failed or not) that carry an ``X-FEServer``
(upper-cased: Exchange sends the NetBIOS name), counted per time bucket of ``bucket_s`` seconds from the start of
the run, empty buckets included, so the moment the load balancer stopped sending to a drained server shows as the
point from which its count stays 0; ``seen`` gives each backend's first and last appearance. The default bucket is
a whole number of intervals chosen so that the run has at most :data:`TARGET_BUCKETS` buckets.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from casprobe.analysis_outages import AnalysisError, Row
from casprobe.analysis_phases import Phases, intersect, merge_spans, span_length
from casprobe.model import Outage, ProbeResult, TargetKind

__all__ = [
    "MAX_BUCKETS",
    "NEW_CONNECTIONS",
    "SESSIONS",
    "TARGET_BUCKETS",
    "BackendBucket",
    "BackendDistribution",
    "BackendSeen",
    "Disconnection",
    "backend_distribution",
    "compare",
    "default_bucket",
    "probe_class",
]

NEW_CONNECTIONS = "new connections"
SESSIONS = "sessions"
TARGET_BUCKETS = 120
MAX_BUCKETS = 100_000
_SESSION_PROBES = frozenset({"mapi-session"})


def probe_class(probe: str) -> str:
    """``sessions`` for the long-lived MAPI session, ``new connections`` for every other probe."""
    return SESSIONS if probe in _SESSION_PROBES else NEW_CONNECTIONS


@dataclass(frozen=True, slots=True)
class Disconnection:
    """How long one name was unusable for one class of probes, over one scope.

    Attributes:
        target, kind: the name. probe_class: ``new connections`` or ``sessions``. probes: the probes counted.
        scope: ``overall`` or ``during``. count / failures: results that started in the scope, and how many
        failed. disconnect_s: length of the union of the outage windows within the scope. outages: how many
        outages touch the scope.
    """

    target: str
    kind: TargetKind
    probe_class: str
    probes: tuple[str, ...]
    scope: str
    count: int
    failures: int
    disconnect_s: float
    outages: int

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.count if self.count else None


def outage_span(outage: Outage, run_end: float) -> tuple[float, float]:
    """An outage as a (start, end) span, an open one ending at ``run_end`` (never before its start)."""
    end = run_end if outage.end_mono is None else outage.end_mono
    return (outage.start_mono, max(end, outage.start_mono))


def _touches(span: tuple[float, float], scope: Sequence[tuple[float, float]]) -> bool:
    start, end = span
    return any((s <= start < e) or (start < e and end > s) for s, e in scope)


def compare(
    rows: dict[Row, list[ProbeResult]], found: Sequence[Outage], phases: Phases, run_end: float
) -> tuple[Disconnection, ...]:
    """One :class:`Disconnection` per name × probe class × scope (namespace names first)."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in sorted(rows, key=lambda r: r.kind is not TargetKind.NAMESPACE):
        groups.setdefault((row.target, probe_class(row.probe)), []).append(row)
    during = phases.during(run_end)
    scopes: list[tuple[str, list[tuple[float, float]] | None]] = [("overall", None)]
    if phases.windows:
        scopes.append(("during", during))
    out: list[Disconnection] = []
    for (target, klass), members in sorted(groups.items(), key=lambda g: g[0][1] != NEW_CONNECTIONS):
        probes = {row.probe for row in members}
        spans = [outage_span(o, run_end) for o in found if o.target == target and o.probe in probes]
        results = [r for row in members for r in rows[row]]
        for scope, window in scopes:
            if window is None:
                in_scope, union, touching = results, merge_spans(spans), len(spans)
            else:
                in_scope = [r for r in results if phases.phase_of(r.started_mono) == "during"]
                union = intersect(merge_spans(spans), window)
                touching = sum(1 for span in spans if _touches(span, window))
            failures = sum(1 for r in in_scope if not r.success)
            out.append(
                Disconnection(
                    target,
                    members[0].kind,
                    klass,
                    tuple(sorted(probes)),
                    scope,
                    len(in_scope),
                    failures,
                    span_length(union),
                    touching,
                )
            )
    # namespace first, then names in the order first seen; new connections before sessions; overall before during
    order = {row.target: i for i, row in enumerate(sorted(rows, key=lambda r: r.kind is not TargetKind.NAMESPACE))}
    out.sort(key=lambda d: (order[d.target], d.probe_class != NEW_CONNECTIONS, d.scope != "overall"))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class BackendBucket:
    """One time bucket of the namespace's answers.

    Attributes:
        start: the bucket's start (monotonic). counts: X-FEServer → results, by name.
        without: namespace results in the bucket that carry no X-FEServer (no answer at all, mostly).
    """

    start: float
    counts: tuple[tuple[str, int], ...]
    without: int = 0

    def count(self, server: str) -> int:
        return next((n for name, n in self.counts if name == server), 0)


@dataclass(frozen=True, slots=True)
class BackendSeen:
    """One backend as seen through the namespace: how often, first and last time (monotonic)."""

    server: str
    count: int
    first_mono: float
    last_mono: float


@dataclass(frozen=True, slots=True)
class BackendDistribution:
    """Who answered through the namespace over time.

    Attributes:
        bucket_s: bucket width in seconds. buckets: from the start of the run to its end, empty ones included.
        seen: every backend, ordered by name.
    """

    bucket_s: float
    buckets: tuple[BackendBucket, ...] = ()
    seen: tuple[BackendSeen, ...] = ()


def default_bucket(interval_s: float, run_length: float) -> float:
    """A whole number of intervals giving at most :data:`TARGET_BUCKETS` buckets over ``run_length``."""
    k = max(1, math.ceil(run_length / (interval_s * TARGET_BUCKETS)))
    return interval_s * k


def backend_distribution(
    results: Iterable[ProbeResult], *, start: float, end: float, bucket_s: float
) -> BackendDistribution:
    """Bucket the namespace results between ``start`` and ``end`` (monotonic) by X-FEServer."""
    if not math.isfinite(bucket_s) or bucket_s <= 0:
        raise AnalysisError(f"the bucket must be a positive number of seconds, got {bucket_s!r}")
    span = max(end - start, 0.0)
    n = math.floor(span / bucket_s) + 1
    if n > MAX_BUCKETS:
        raise AnalysisError(f"{bucket_s} s buckets would make {n} buckets over {span:.0f} s (at most {MAX_BUCKETS})")
    counts: list[Counter[str]] = [Counter() for _ in range(n)]
    without = [0] * n
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    total: Counter[str] = Counter()
    for result in results:
        t = result.started_mono
        if result.target.kind is not TargetKind.NAMESPACE or not start <= t <= end:
            continue
        index = min(math.floor((t - start) / bucket_s), n - 1)
        server = (result.fe_server or "").strip().upper()
        if not server:
            without[index] += 1
            continue
        counts[index][server] += 1
        total[server] += 1
        first[server] = min(first.get(server, t), t)
        last[server] = max(last.get(server, t), t)
    buckets = tuple(BackendBucket(start + i * bucket_s, tuple(sorted(counts[i].items())), without[i]) for i in range(n))
    seen = tuple(BackendSeen(s, total[s], first[s], last[s]) for s in sorted(total))
    return BackendDistribution(bucket_s, buckets, seen)
