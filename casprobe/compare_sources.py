"""Pre vs post comparison, part 1: a check JSON document or a run store, read into one snapshot per name × probe.

What a file is, is decided by its content, never by its name: a file that starts with SQLite's header
(``SQLite format 3\\0``, sqlite.org/fileformat.html §1.3) is a run store (:mod:`casprobe.store`); anything else must be
the document ``casprobe check --format json`` prints (:mod:`casprobe.exporters.json`, ``schema_version`` 1). JSON is
read as bytes, so UTF-8 with or without a BOM and the UTF-16 a Windows PowerShell redirect writes all work (RFC 8259
§8.1 asks for UTF-8; Python's :func:`json.loads` also detects UTF-16/32).
Each result object is decoded by the run store's own strict rules (:func:`casprobe.store_codec.decode_result`), so
both inputs become the same :class:`~casprobe.model.ProbeResult` and a field of the wrong type is refused by name.

A **row** is one DNS name × probe (names compared case-insensitively). What a row keeps:

- ``results`` / ``failures`` and whether the **last** result (by start, :func:`casprobe.analysis_outages.order_key`)
  failed: a row is ``ok`` (no failure), ``failing`` (its last result failed) or ``degraded`` (it failed at times but
  its last result worked). A check has one result per row, so it is ``ok`` or ``failing``.
- the error classes of its failures, most frequent first, and the last failure's detail;
- latency percentiles p50 / p95 (nearest rank, :func:`casprobe.analysis_stats.nearest_rank`) of **successful**
  results for ``total`` (the whole probe) and ``first_byte`` (the main request's server time), in seconds. The
  smaller phases (connect, TLS, auth legs) are parts of ``total`` and, as single samples of a few milliseconds,
  mostly noise: two back-to-back checks of the lab showed connect 0 → 21 ms and TLS 4 → 74 ms;
- the certificates seen (subject, issuer, not-after, SAN; fingerprint / serial once :class:`~casprobe.model.TlsFacts`
  carries them, which it does not yet);
- the authentication schemes offered and used;
- the Autodiscover URLs handed out (:data:`HANDED_OUT` facts of the ``autodiscover`` probe, see
  :mod:`casprobe.probes.autodiscover`) and how the MAPI URLs name their host (``autodiscover.mapi.names``);
- the front ends (``X-FEServer``, upper-cased) and mailbox servers (``X-CalculatedBETarget`` / ``X-BEServer``,
  lower-cased) that answered.

Every problem with an input is a :class:`CompareInputError` (exit code 3) whose message names the file and says what
is wrong in one line; errors of the run store itself arrive as :class:`casprobe.store.StoreError`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from casprobe.analysis_outages import UNKNOWN_CLASS, order_key
from casprobe.analysis_stats import nearest_rank
from casprobe.errors import CasprobeError
from casprobe.exporters.json import SCHEMA_VERSION
from casprobe.model import ProbeResult, Severity, TargetKind
from casprobe.store import RunStore
from casprobe.store_codec import RESULT_COLUMNS, StoreDataError, decode_result

__all__ = [
    "HANDED_OUT",
    "LATENCY_METRICS",
    "MAX_JSON_BYTES",
    "CertFacts",
    "CompareInputError",
    "Latency",
    "RowSnapshot",
    "Snapshot",
    "SourceInfo",
    "SourceKind",
    "detect",
    "load",
    "snapshot",
]

SourceKind = Literal["check", "run"]
RowState = Literal["ok", "degraded", "failing"]

#: Phases compared for latency, in report order.
LATENCY_METRICS = ("total", "first_byte")
#: The facts of the ``autodiscover`` probe that are URLs Autodiscover hands to clients.
HANDED_OUT = (
    "autodiscover.mapi.mailstore.internal",
    "autodiscover.mapi.mailstore.external",
    "autodiscover.mapi.addressbook.internal",
    "autodiscover.mapi.addressbook.external",
    "autodiscover.ews_url",
    "autodiscover.soap.external_ews_url",
    "autodiscover.soap.internal_ews_url",
    "autodiscover.v2.ews_url",
)
#: A check document larger than this is refused (a check of hundreds of names is a few megabytes).
MAX_JSON_BYTES = 64 * 1024 * 1024
_SQLITE_HEADER = b"SQLite format 3\x00"
_PROBE_ORDER = ("health", "autodiscover", "mapi", "mapi-session", "ews")
_MAX_TEXT = 2000


class CompareInputError(CasprobeError, ValueError):
    """An input of ``casprobe compare`` cannot be used; the message names the file and says why (exit code 3)."""


@dataclass(frozen=True, slots=True)
class Latency:
    """A row's latency for one phase, in seconds. Attributes: n (successful results timed), p50, p95."""

    n: int
    p50: float
    p95: float


@dataclass(frozen=True, slots=True)
class CertFacts:
    """A certificate as compare identifies it (``days_left`` is left out: it changes every day).

    Attributes:
        subject, issuer: distinguished names (RFC 4514). not_after: expiry, ISO 8601. san: DNS names.
        fingerprint, serial: read from TlsFacts attributes of those names when it has them (not yet), else None.
    """

    subject: str
    issuer: str
    not_after: str | None
    san: tuple[str, ...] = ()
    fingerprint: str | None = None
    serial: str | None = None

    def describe(self) -> str:
        """One line for people: subject, issuer, expiry (and fingerprint when known)."""
        text = f"{self.subject or '(no subject)'}, issued by {self.issuer or '?'}, expires {self.not_after or '?'}"
        return text + (f", fingerprint {self.fingerprint}" if self.fingerprint else "")


@dataclass(frozen=True, slots=True)
class RowSnapshot:
    """One name × probe of one input, summarised for comparison (see the module docstring).

    Attributes:
        name: DNS name (lower case); label: how the input named it (``namespace``, ``mb1``); kind; probe.
        results, failures: counts. last_ok: the last result worked. error_classes: most frequent first.
        detail: the last failure's detail. latency: phase → :class:`Latency` (phases never timed left out).
        certificates: sorted. auth_offered, auth_used: sorted schemes. urls: handed-out URL fact → values seen.
        url_naming: values of ``autodiscover.mapi.names``. front_ends, back_ends: sorted names that answered.
    """

    name: str
    label: str
    kind: TargetKind
    probe: str
    results: int
    failures: int
    last_ok: bool
    error_classes: tuple[str, ...] = ()
    detail: str = ""
    latency: tuple[tuple[str, Latency], ...] = ()
    certificates: tuple[CertFacts, ...] = ()
    auth_offered: tuple[str, ...] = ()
    auth_used: tuple[str, ...] = ()
    urls: tuple[tuple[str, tuple[str, ...]], ...] = ()
    url_naming: tuple[str, ...] = ()
    front_ends: tuple[str, ...] = ()
    back_ends: tuple[str, ...] = ()

    @property
    def state(self) -> RowState:
        if not self.failures:
            return "ok"
        return "degraded" if self.last_ok else "failing"

    @property
    def display(self) -> str:
        """``mb1 (mb1.lab.test)``, or the name alone when it has no other label."""
        return self.name if self.label in ("", self.name) else f"{self.label} ({self.name})"

    def metric(self, name: str) -> Latency | None:
        return next((value for key, value in self.latency if key == name), None)


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """Where a snapshot came from. Attributes: path; kind (``check`` / ``run``); started (ISO 8601 UTC or None);
    results (how many were read); tls_verification (False if any result was taken with verification off);
    notes (remarks for people, one line each)."""

    path: str
    kind: SourceKind
    started: str | None
    results: int
    tls_verification: bool = True
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One input, read. Attributes: source; rows (namespace first, then by label, name and probe)."""

    source: SourceInfo
    rows: tuple[RowSnapshot, ...]

    def row(self, name: str, probe: str) -> RowSnapshot | None:
        return next((r for r in self.rows if r.name == name.lower() and r.probe == probe), None)


# --- check JSON ---------------------------------------------------------------------------------------------------

_REQUIRED: dict[str, type] = {"target": dict, "probe": str, "success": bool, "severity": str}
_DEFAULTS: dict[str, Any] = {"started_at": 0.0, "started_mono": 0.0, "duration": 0.0, "detail": ""}


def _json_result(obj: Any, where: str) -> ProbeResult:
    """A result object of the check document, decoded by the run store's strict rules (one set of rules)."""
    if not isinstance(obj, dict):
        raise CompareInputError(f"{where}: should be an object, found {type(obj).__name__}")
    for key, kind in _REQUIRED.items():
        if not isinstance(obj.get(key), kind):
            raise CompareInputError(f"{where}: {key} should be a {kind.__name__}")
    if obj["severity"] not in Severity.__members__:
        raise CompareInputError(f"{where}: unknown severity {obj['severity']!r:.20}")
    target = obj["target"]
    col = {key: obj.get(key, _DEFAULTS.get(key)) for key in RESULT_COLUMNS}
    col.update(target_name=target.get("name"), target_label=target.get("label"), target_kind=target.get("kind"))
    col["severity"] = int(Severity[obj["severity"]])
    try:
        col["tls"] = None if obj.get("tls") is None else json.dumps(obj["tls"])
        for key, default in (("phases", {}), ("steps", []), ("facts", []), ("target", {})):
            col[key] = json.dumps(obj.get(key, default))
        col["auth"] = json.dumps({"offered": obj.get("auth_offered", []), "used": obj.get("auth_used")})
        return decode_result(tuple(col[key] for key in RESULT_COLUMNS))
    except (StoreDataError, RecursionError) as exc:
        raise CompareInputError(f"{where}: {str(exc)[:200]}") from None


def _check_document(path: Path) -> tuple[SourceInfo, list[ProbeResult]]:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise CompareInputError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if len(raw) > MAX_JSON_BYTES:
        raise CompareInputError(f"{path}: larger than {MAX_JSON_BYTES // 2**20} MiB: not a casprobe check document")
    if not raw.strip():
        raise CompareInputError(f"{path}: the file is empty (neither check JSON nor a run store)")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        why = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise CompareInputError(f"{path}: neither a run store (SQLite) nor a JSON document ({why})") from None
    not_check = f"{path}: JSON, but not the output of casprobe check --format json"
    if not isinstance(doc, dict):
        raise CompareInputError(f"{not_check} (a {type(doc).__name__}, not an object)")
    if doc.get("format") == "casprobe.analysis":
        raise CompareInputError(f"{not_check} (casprobe analyze output: give compare the run store itself)")
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or not isinstance(doc.get("results"), list):
        raise CompareInputError(f"{not_check} (no schema_version and results)")
    if version > SCHEMA_VERSION:
        raise CompareInputError(
            f"{path}: check JSON schema_version {version} is newer than this casprobe reads ({SCHEMA_VERSION})"
        )
    if version < 1:
        raise CompareInputError(f"{not_check} (schema_version {version})")
    results = [_json_result(item, f"{path}: result {i + 1}") for i, item in enumerate(doc["results"])]
    run: dict[str, Any] = doc["run"] if isinstance(doc.get("run"), dict) else {}
    started = run.get("started") if isinstance(run.get("started"), str) else None
    verified = run.get("tls_verification") is not False
    return SourceInfo(str(path), "check", started, len(results), verified), results


# --- snapshots ----------------------------------------------------------------------------------------------------


def _timings(result: ProbeResult) -> dict[str, float | None]:
    return {"total": result.phases.total, "first_byte": result.phases.first_byte}


def _cert(result: ProbeResult) -> CertFacts | None:
    tls = result.tls
    if tls is None or not (tls.subject or tls.issuer):
        return None
    # fingerprint / serial: read when TlsFacts carries them (it does not yet)
    fingerprint, serial = getattr(tls, "fingerprint", None), getattr(tls, "serial", None)
    return CertFacts(tls.subject, tls.issuer, tls.not_after, tuple(tls.san), fingerprint, serial)


def _cert_key(cert: CertFacts) -> tuple[str, str, str, tuple[str, ...], str, str]:
    return (cert.subject, cert.issuer, cert.not_after or "", cert.san, cert.fingerprint or "", cert.serial or "")


@dataclass
class _Acc:
    """One row's running summary while the results stream past."""

    first: ProbeResult
    last: ProbeResult
    results: int = 0
    failures: int = 0
    classes: Counter[str] = field(default_factory=Counter)
    last_failure: ProbeResult | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)
    certs: set[CertFacts] = field(default_factory=set)
    offered: set[str] = field(default_factory=set)
    used: set[str] = field(default_factory=set)
    urls: dict[str, set[str]] = field(default_factory=dict)
    naming: set[str] = field(default_factory=set)
    fe: set[str] = field(default_factory=set)
    be: set[str] = field(default_factory=set)

    def add(self, r: ProbeResult) -> None:
        self.results += 1
        if order_key(r) >= order_key(self.last):
            self.last = r
        if not r.success:
            self.failures += 1
            self.classes[r.error_class.value if r.error_class else UNKNOWN_CLASS] += 1
            if self.last_failure is None or order_key(r) >= order_key(self.last_failure):
                self.last_failure = r
        else:
            for phase, seconds in _timings(r).items():
                if seconds is not None and math.isfinite(seconds):
                    self.samples.setdefault(phase, []).append(seconds)
        if (cert := _cert(r)) is not None:
            self.certs.add(cert)
        self.offered.update(s for s in r.auth_offered if s)
        if r.auth_used:
            self.used.add(r.auth_used)
        for key, value in r.facts:
            if key in HANDED_OUT and value:
                self.urls.setdefault(key, set()).add(value)
            elif key == "autodiscover.mapi.names":
                self.naming.add(value)
        if r.fe_server:
            self.fe.add(r.fe_server.strip().upper())
        if r.be_server:
            self.be.add(r.be_server.strip().lower())

    def row(self) -> RowSnapshot:
        latency = []
        for key in LATENCY_METRICS:
            values = sorted(self.samples.get(key, ()))
            if values:
                latency.append((key, Latency(len(values), nearest_rank(values, 50), nearest_rank(values, 95))))
        return RowSnapshot(
            name=_name(self.first),
            label=self.first.target.label,
            kind=self.first.target.kind,
            probe=self.first.probe,
            results=self.results,
            failures=self.failures,
            last_ok=self.last.success,
            error_classes=tuple(k for k, _ in self.classes.most_common()),
            detail=self.last_failure.detail[:_MAX_TEXT] if self.last_failure is not None else "",
            latency=tuple(latency),
            certificates=tuple(sorted(self.certs, key=_cert_key)),
            auth_offered=tuple(sorted(self.offered, key=str.lower)),
            auth_used=tuple(sorted(self.used, key=str.lower)),
            urls=tuple((k, tuple(sorted(self.urls[k]))) for k in HANDED_OUT if k in self.urls),
            url_naming=tuple(sorted(self.naming)),
            front_ends=tuple(sorted(self.fe)),
            back_ends=tuple(sorted(self.be)),
        )


def _name(result: ProbeResult) -> str:
    return result.target.name.lower().rstrip(".")


def _row_key(row: RowSnapshot) -> tuple[bool, str, str, int, str]:
    order = _PROBE_ORDER.index(row.probe) if row.probe in _PROBE_ORDER else len(_PROBE_ORDER)
    return (row.kind is not TargetKind.NAMESPACE, row.label or row.name, row.name, order, row.probe)


def snapshot(source: SourceInfo, results: Iterable[ProbeResult]) -> Snapshot:
    """Summarise the results of one input into rows (streaming: a long run is never held in memory)."""
    accs: dict[tuple[str, str], _Acc] = {}
    for r in results:
        acc = accs.get((_name(r), r.probe))
        if acc is None:
            acc = accs[(_name(r), r.probe)] = _Acc(r, r)
        acc.add(r)
    return Snapshot(source, tuple(sorted((a.row() for a in accs.values()), key=_row_key)))


# --- reading a file -----------------------------------------------------------------------------------------------


def detect(path: Path) -> SourceKind:
    """``run`` for a SQLite file, ``check`` for anything else (whose JSON :func:`load` then checks)."""
    path = Path(path)
    if not path.exists():
        raise CompareInputError(f"{path}: no such file")
    if path.is_dir():
        raise CompareInputError(f"{path}: is a folder, not a check JSON document or a run store")
    try:
        with path.open("rb") as handle:
            head = handle.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise CompareInputError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return "run" if head == _SQLITE_HEADER else "check"


def load(path: Path) -> Snapshot:
    """Read ``path`` (check JSON or run store, by content) into a :class:`Snapshot`; refuses one with no result."""
    path = Path(path)
    if detect(path) == "check":
        info, results = _check_document(path)
        verified = info.tls_verification and not any(r.tls is not None and r.tls.verification_disabled for r in results)
        result = snapshot(replace(info, tls_verification=verified), results)
    else:
        with RunStore.open(path) as store:
            run = store.run_info()
            killed = (
                () if run.ended_at is not None else ("the run did not end cleanly: compared up to its last result",)
            )
            started = dt.datetime.fromtimestamp(run.started_at, dt.UTC).isoformat(timespec="seconds")
            info = SourceInfo(str(path), "run", started, store.result_count(), run.tls_verification, killed)
            result = snapshot(info, store.results())
    if not result.rows:
        what = "run store" if info.kind == "run" else "check document"
        raise CompareInputError(f"{path}: the {what} holds no results: nothing to compare")
    return result
