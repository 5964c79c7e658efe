"""Pre vs post comparison, part 2: the diff of two snapshots, as findings that can gate a change (issue 6).

Inputs are two :class:`~casprobe.compare_sources.Snapshot` of the same kind (two checks or two runs). Rows are
matched by DNS name × probe. Findings, in three groups (exit codes follow Nagios, architecture.md):

**Regressions** (CRITICAL, exit 2):

- ``failure``: a row that worked before fails after: ``ok`` → ``failing`` or ``degraded``, or ``degraded`` →
  ``failing`` (states in :mod:`casprobe.compare_sources`); the message gives the error classes and the detail.
  Two runs that both failed at times (``degraded`` on both sides) are not told apart by their error rates.
- ``missing``: a name, or a probe of a name, that was there before and is not after.
- ``latency``: for a phase of :data:`~casprobe.compare_sources.LATENCY_METRICS` timed on both sides, p50 or p95
  after ≥ ``factor`` × before **and** after − before ≥ ``min_ms`` (both, so that 2 ms → 5 ms is not a regression
  and neither is 400 ms → 430 ms).

**Changes to review** (WARNING, exit 1 when there is no regression), each compared only where both sides saw
something (what a failing row no longer shows is already told by its ``failure``):

- ``autodiscover_urls``: a handed-out URL changed; when the MAPI URLs now name a single server's own name and did
  not before, the message says so plainly (Outlook would then connect to that server and freeze in its maintenance).
- ``certificate``: per name, the set of certificates seen (subject, issuer, expiry, SAN, fingerprint/serial when
  known) differs.
- ``auth_offered`` / ``auth_used``: per row, the schemes offered by the server / used by casprobe differ.
- ``backends``: per name, the front ends (``X-FEServer``) differ; front ends through the **namespace** are compared
  only between two runs (a check sees one per probe, the one the load balancer happened to pick). And the mailbox's
  server (``X-CalculatedBETarget``) changed: one finding (target ``*``) naming every name it was seen through, since
  it is the mailbox's (its database's active copy moved), not a name's.

**Notes** (OK, never fail): ``improvement`` (failing or degraded before, better after), ``still_failing``,
``added`` (a name or probe that is new after).

Two inputs with no regression and no change compare clean (exit 0).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from casprobe.compare_sources import LATENCY_METRICS, CertFacts, RowSnapshot, Snapshot, SourceInfo
from casprobe.model import Severity, TargetKind

__all__ = [
    "ALL_PROBES",
    "JSON_FORMAT",
    "JSON_VERSION",
    "Comparison",
    "Finding",
    "FindingKind",
    "Thresholds",
    "compare",
    "severity_of",
]

JSON_FORMAT = "casprobe.compare"
JSON_VERSION = 1
#: ``Finding.probe`` of a finding about a whole name (and ``Finding.target`` of one about the mailbox).
ALL_PROBES = "*"


class FindingKind(StrEnum):
    """What a finding is about (closed set; see the module docstring). Declaration order is report order."""

    FAILURE = "failure"
    MISSING = "missing"
    LATENCY = "latency"
    AUTODISCOVER_URLS = "autodiscover_urls"
    CERTIFICATE = "certificate"
    AUTH_OFFERED = "auth_offered"
    AUTH_USED = "auth_used"
    BACKENDS = "backends"
    IMPROVEMENT = "improvement"
    STILL_FAILING = "still_failing"
    ADDED = "added"


_REGRESSIONS = (FindingKind.FAILURE, FindingKind.MISSING, FindingKind.LATENCY)
_NOTES = (FindingKind.IMPROVEMENT, FindingKind.STILL_FAILING, FindingKind.ADDED)


def severity_of(kind: FindingKind) -> Severity:
    """CRITICAL for a regression, OK for a note, WARNING for a change to review."""
    return Severity.CRITICAL if kind in _REGRESSIONS else Severity.OK if kind in _NOTES else Severity.WARNING


@dataclass(frozen=True, slots=True)
class Finding:
    """One difference between before and after.

    Attributes:
        kind: what it is about. severity: CRITICAL (regression), WARNING (change to review), OK (note).
        target: the DNS name. probe: the probe, or ``*`` for the name as a whole. before, after: the compared
        values in short text ("" when there is none). message: one or two plain sentences for people.
        label: how the inputs named the target (``mb1``), for display.
    """

    kind: FindingKind
    severity: Severity
    target: str
    probe: str
    before: str
    after: str
    message: str
    label: str = ""

    @property
    def where(self) -> str:
        """``mb1 mapi``, ``namespace (all probes)``: the row in words."""
        who = self.label or self.target
        if self.target == ALL_PROBES:
            return who
        return f"{who} (all probes)" if self.probe == ALL_PROBES else f"{who} {self.probe}"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a latency difference is a regression. Attributes: factor (after ≥ factor × before) and min_ms (after −
    before ≥ min_ms); both must hold."""

    factor: float = 2.0
    min_ms: float = 20.0


@dataclass(frozen=True, slots=True)
class Comparison:
    """The diff of two inputs.

    Attributes:
        before, after: where each came from. thresholds: the latency thresholds used. findings: regressions, then
        changes to review, then notes, each in row order. rows: name × probe rows present on either side.
        notes: remarks about the comparison itself (one line each).
    """

    before: SourceInfo
    after: SourceInfo
    thresholds: Thresholds
    findings: tuple[Finding, ...]
    rows: int
    notes: tuple[str, ...] = ()

    @property
    def regressions(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.CRITICAL)

    @property
    def changes(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.WARNING)

    @property
    def informational(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.OK)

    @property
    def status(self) -> Severity:
        """CRITICAL with a regression, else WARNING with a change to review, else OK; its value is the exit code."""
        return max((f.severity for f in self.findings), default=Severity.OK)

    @property
    def verdict(self) -> str:
        """The outcome in one sentence."""
        if self.regressions or self.changes:
            return f"{_count(len(self.regressions), 'regression')}, {_count(len(self.changes), 'change')} to review"
        return "no differences" if not self.findings else "no regressions and no changes to review"

    def to_json(self) -> dict[str, Any]:
        """A versioned JSON-ready document (``format`` ``casprobe.compare``, ``version`` 1)."""
        return {
            "format": JSON_FORMAT,
            "version": JSON_VERSION,
            "status": self.status.name,
            "exit_code": int(self.status),
            "verdict": self.verdict,
            "before": asdict(self.before),
            "after": asdict(self.after),
            "thresholds": {"latency_factor": self.thresholds.factor, "latency_min_ms": self.thresholds.min_ms},
            "rows": self.rows,
            "summary": {
                "regressions": len(self.regressions),
                "changes": len(self.changes),
                "notes": len(self.informational),
            },
            "findings": [{**asdict(f), "kind": f.kind.value, "severity": f.severity.name} for f in self.findings],
            "notes": list(self.notes),
        }

    def render_json(self) -> str:
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"


# --- wording ------------------------------------------------------------------------------------------------------


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _ratio(before: float, after: float) -> str:
    return f"×{after / before:.1f}" if before > 0 else "from 0"


def _names(values: Iterable[str]) -> str:
    return ", ".join(values) or "none"


def _failure_text(row: RowSnapshot) -> str:
    classes = "/".join(row.error_classes) or "failed"
    detail = f": {row.detail}" if row.detail else ""
    if row.results > 1:
        return f"{row.failures} of {row.results} failed ({row.failures / row.results:.1%}), {classes}{detail}"
    return f"{classes}{detail}"


def _state_text(row: RowSnapshot) -> str:
    if row.state == "ok":
        return "OK" if row.results == 1 else f"OK ({row.results} results)"
    return ("FAILED: " if row.state == "failing" else "FAILED AT TIMES: ") + _failure_text(row)


# --- the diff -----------------------------------------------------------------------------------------------------


class _Builder:
    def __init__(self, thresholds: Thresholds) -> None:
        self.thresholds = thresholds
        self.found: list[Finding] = []
        self.moves: dict[tuple[str, str], list[str]] = {}  # mailbox servers (before, after) -> names that saw it

    def mailbox_moves(self) -> None:
        """One finding per change of the mailbox's server, however many names showed it (it is the mailbox's)."""
        for (x, y), names in self.moves.items():
            text = f"the mailbox was on {x} before and on {y} after (seen through {', '.join(names)})"
            kind = FindingKind.BACKENDS
            self.found.append(Finding(kind, severity_of(kind), ALL_PROBES, ALL_PROBES, x, y, text, "the mailbox"))

    def add(
        self, kind: FindingKind, row: RowSnapshot, before: str, after: str, message: str, *, whole: bool = False
    ) -> None:
        probe = ALL_PROBES if whole else row.probe
        self.found.append(Finding(kind, severity_of(kind), row.name, probe, before, after, message, row.label))

    def state(self, b: RowSnapshot, a: RowSnapshot) -> None:
        where = f"{a.label or a.name} {a.probe}"
        states = (b.state, a.state)
        before, after = _state_text(b), _state_text(a)
        if states in (("ok", "failing"), ("ok", "degraded"), ("degraded", "failing")):
            was = "worked" if b.state == "ok" else "failed at times"
            now = "fails" if a.state == "failing" else "fails at times"
            self.add(FindingKind.FAILURE, a, before, after, f"{where} {was} before and {now} after: {_failure_text(a)}")
        elif b.state != "ok" and a.state != "failing" and states != ("degraded", "degraded"):
            now = "works after" if a.state == "ok" else "works after, failing at times"
            self.add(FindingKind.IMPROVEMENT, a, before, after, f"{where} failed before and {now}")
        elif states == ("failing", "failing"):
            self.add(FindingKind.STILL_FAILING, a, before, after, f"{where} failed before and still fails")

    def latency(self, b: RowSnapshot, a: RowSnapshot) -> None:
        factor, floor = self.thresholds.factor, self.thresholds.min_ms / 1000
        for metric in LATENCY_METRICS:
            lb, la = b.metric(metric), a.metric(metric)
            if lb is None or la is None:
                continue
            worse = [
                (name, x, y)
                for name, x, y in (("p50", lb.p50, la.p50), ("p95", lb.p95, la.p95))
                if y >= x * factor - 1e-12 and y - x >= floor - 1e-12
            ]
            if not worse:
                continue
            single = lb.n == 1 and la.n == 1
            steps = [f"{'' if single else n + ' '}{_ms(x)} → {_ms(y)} ({_ratio(x, y)})" for n, x, y in worse]
            text = f"{a.label or a.name} {a.probe}: {metric} latency {', '.join(steps[:1] if single else steps)}"
            before = _ms(lb.p50) if single else f"p50 {_ms(lb.p50)}, p95 {_ms(lb.p95)} (n={lb.n})"
            after = _ms(la.p50) if single else f"p50 {_ms(la.p50)}, p95 {_ms(la.p95)} (n={la.n})"
            self.add(FindingKind.LATENCY, a, f"{metric} {before}", f"{metric} {after}", text)

    def auth(self, b: RowSnapshot, a: RowSnapshot) -> None:
        where = f"{a.label or a.name} {a.probe}"
        for kind, x, y, verb in (
            (FindingKind.AUTH_OFFERED, b.auth_offered, a.auth_offered, "offered"),
            (FindingKind.AUTH_USED, b.auth_used, a.auth_used, "used"),
        ):
            if x and y and {s.lower() for s in x} != {s.lower() for s in y}:
                subject = "the server" if verb == "offered" else "casprobe"
                text = f"{where}: {subject} {verb} {_names(x)} before and {_names(y)} after"
                self.add(kind, a, _names(x), _names(y), text)

    def urls(self, b: RowSnapshot, a: RowSnapshot) -> None:
        if not b.urls or not a.urls or b.urls == a.urls:
            return
        old, new = dict(b.urls), dict(a.urls)
        keys = [k for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]
        before = "\n".join(f"{k.removeprefix('autodiscover.')}={_names(old.get(k, ()))}" for k in keys)
        after = "\n".join(f"{k.removeprefix('autodiscover.')}={_names(new.get(k, ()))}" for k in keys)
        where = a.label or a.name

        def hosts(urls: dict[str, tuple[str, ...]]) -> str:
            found = {urlsplit(u).hostname or "?" for k, v in urls.items() if ".mapi." in k for u in v}
            return _names(sorted(found))

        if "server" in a.url_naming and "server" not in b.url_naming:
            text = (
                f"Autodiscover on {where} now hands out MAPI URLs naming {hosts(new)}, a single server's own name, "
                f"instead of {hosts(old)}: Outlook would connect to that one server directly and freeze while it is "
                "in maintenance"
            )
        else:
            text = f"Autodiscover on {where} hands out different URLs ({_count(len(keys), 'URL')} changed)"
        self.add(FindingKind.AUTODISCOVER_URLS, a, before, after, text)

    def per_name(self, b: Sequence[RowSnapshot], a: Sequence[RowSnapshot], fronts: bool) -> bool:
        """Certificates and backends of one name; True when front ends differed but were not to be compared."""
        row = a[0]
        where = row.label or row.name
        old_certs = {c for r in b for c in r.certificates}
        new_certs = {c for r in a for c in r.certificates}
        if old_certs and new_certs and old_certs != new_certs:
            text = f"the certificate of {row.name} changed: {_cert_change(old_certs, new_certs)}"
            self.add(FindingKind.CERTIFICATE, row, _certs(old_certs), _certs(new_certs), text, whole=True)
        x, y = _union(b, "front_ends"), _union(a, "front_ends")
        skipped = not fronts and bool(x) and bool(y) and x != y
        if fronts and x and y and x != y:
            gone = [v for v in x if v not in y]
            text = f"{where}: answered by (X-FEServer) {_names(x)} before and {_names(y)} after"
            if gone:
                text += f" ({_names(gone)} no longer answer{'s' if len(gone) == 1 else ''})"
            self.add(FindingKind.BACKENDS, row, _names(x), _names(y), text, whole=True)
        x, y = _union(b, "back_ends"), _union(a, "back_ends")
        if x and y and x != y:
            self.moves.setdefault((_names(x), _names(y)), []).append(where)
        return skipped


def _union(rows: Sequence[RowSnapshot], attr: str) -> list[str]:
    return sorted({value for row in rows for value in getattr(row, attr)})


def _certs(certs: set[CertFacts]) -> str:
    return "\n".join(sorted(c.describe() for c in certs))


def _cert_change(old: set[CertFacts], new: set[CertFacts]) -> str:
    gone, came = old - new, new - old
    if len(gone) != 1 or len(came) != 1:
        parts = [f"no longer seen: {_certs(gone)}"] if gone else []
        return "; ".join(parts + ([f"newly seen: {_certs(came)}"] if came else [])).replace("\n", "; ")
    (x,), (y,) = gone, came
    parts = [
        f"{label} {getattr(x, attr) or '?'} → {getattr(y, attr) or '?'}"
        for attr, label in (("fingerprint", "fingerprint"), ("serial", "serial"), ("issuer", "issuer"))
        if getattr(x, attr) != getattr(y, attr) and (getattr(x, attr) or getattr(y, attr))
    ]
    if x.not_after != y.not_after:
        parts.append(f"expiry {x.not_after or '?'} → {y.not_after or '?'}")
    if x.subject != y.subject:
        parts.append(f"subject {x.subject or '?'} → {y.subject or '?'}")
    if x.san != y.san:
        parts.append(f"names {_names(x.san)} → {_names(y.san)}")
    return "; ".join(parts) or "a different certificate"


def _by_name(snapshot: Snapshot) -> dict[str, list[RowSnapshot]]:
    out: dict[str, list[RowSnapshot]] = {}
    for row in snapshot.rows:
        out.setdefault(row.name, []).append(row)
    return out


def _presence(build: _Builder, b: Sequence[RowSnapshot], a: Sequence[RowSnapshot]) -> None:
    """A whole name missing (or new) after: one finding for the name, not one per probe."""
    missing = not a
    rows = b if missing else a
    probes = _names(r.probe for r in rows)
    said = "was probed before and is missing after" if missing else "is new after"
    kind = FindingKind.MISSING if missing else FindingKind.ADDED
    build.add(
        kind, rows[0], probes if b else "", probes if a else "", f"{rows[0].display} ({probes}) {said}", whole=True
    )


def _rows(build: _Builder, b_rows: Sequence[RowSnapshot], a_rows: Sequence[RowSnapshot]) -> None:
    b_probe, a_probe = {r.probe: r for r in b_rows}, {r.probe: r for r in a_rows}
    for probe in dict.fromkeys([*b_probe, *a_probe]):
        b, a = b_probe.get(probe), a_probe.get(probe)
        if a is None or b is None:
            row = a or b
            assert row is not None
            said = "was probed before and is missing after" if a is None else "is new after"
            kind = FindingKind.MISSING if a is None else FindingKind.ADDED
            build.add(
                kind, row, "probed" if b else "", "probed" if a else "", f"{row.label or row.name} {probe} {said}"
            )
            continue
        build.state(b, a)
        build.latency(b, a)
        build.urls(b, a)
        build.auth(b, a)


def compare(before: Snapshot, after: Snapshot, thresholds: Thresholds | None = None) -> Comparison:
    """The findings between ``before`` and ``after`` (see the module docstring)."""
    thresholds = thresholds or Thresholds()
    build = _Builder(thresholds)
    old, new = _by_name(before), _by_name(after)
    both_runs = before.source.kind == after.source.kind == "run"
    notes: list[str] = []
    for name in dict.fromkeys([*old, *new]):
        b_rows, a_rows = old.get(name, []), new.get(name, [])
        if not a_rows or not b_rows:
            _presence(build, b_rows, a_rows)
            continue
        _rows(build, b_rows, a_rows)
        namespace = a_rows[0].kind is TargetKind.NAMESPACE
        if build.per_name(b_rows, a_rows, fronts=both_runs or not namespace):
            notes.append(
                f"front ends through {name} differ but are not compared: a check sees one per probe, the one "
                "the load balancer picked (compare two runs for that)"
            )
    build.mailbox_moves()
    if before.source.tls_verification != after.source.tls_verification:
        off = "before" if not before.source.tls_verification else "after"
        notes.append(f"TLS verification was off {off}: certificates seen then were not verified")
    notes += [f"before: {n}" for n in before.source.notes] + [f"after: {n}" for n in after.source.notes]
    order = list(FindingKind)
    findings = sorted(build.found, key=lambda f: order.index(f.kind))  # stable: row order within a kind
    count = len({(r.name, r.probe) for r in (*before.rows, *after.rows)})
    return Comparison(before.source, after.source, thresholds, tuple(findings), count, tuple(notes))
