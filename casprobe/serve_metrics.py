"""What ``casprobe serve`` answers in the Prometheus text format (0.0.4): ``/probe`` and ``/metrics``.

The names are stable (the lead's scrape configs, alert rules and dashboard rely on them). ``/probe`` follows
blackbox_exporter's ``prober/handler.go`` and ``prober/http.go`` where a name fits; the target is not a label
(Prometheus adds it by relabelling, as with blackbox). Label values come only from closed sets or from the
configuration, never from message text (blackbox PR #128's review; style.md rule 3). Per scrape::

    probe_success                      1 when every probe of the module succeeded, else 0
    probe_success{probe}               1 or 0 for each probe of the module
    probe_duration_seconds             the scrape's probing wall time; {probe}: each probe's own
    probe_http_duration_seconds        {probe, phase="resolve|connect|tls|auth|processing"} of each probe's main
                                       request (casprobe check's phases; auth = all legs; processing = request
                                       sent → first response byte)
    probe_http_status_code             {probe} HTTP status of the probe's last answer (0: none)
    probe_ssl_earliest_cert_expiry     {probe} the server certificate's notAfter, Unix seconds (when one was seen)
    casprobe_probe_error               {probe, class} 1 for the class of the failure, 0 for the others: a state set
                                       over the closed ErrorClass (dns, connect, tls, timeout, http_status, auth,
                                       protocol, content, internal)
    casprobe_probe_severity            {probe} Nagios code of the result (0 OK, 1 warning, 2 critical, 3 unknown)
    casprobe_probe_backend             {probe, backend} state set: the X-FEServer that answered, lower-cased short
                                       name, among the configuration's backends, else "other"; "none" when no
                                       answer carried one
    casprobe_probe_auth_method         {probe, method} state set over Negotiate, NTLM, Basic, Bearer, none
    casprobe_mapi_response_code        {probe} the last MAPI/HTTP X-ResponseCode seen (only when there was one)
    casprobe_probe_timeout_seconds     the deadline this scrape gave its probes (header − offset, capped)
    casprobe_tls_verification_enabled  0 when the module has insecure = true

``/metrics`` (the process)::

    casprobe_serve_scrapes_total               {module, outcome="success|failure|rejected"} counter
    casprobe_serve_rejected_scrapes_total      scrapes answered without probing (no free slot in time) counter
    casprobe_serve_bad_requests_total          {reason="unknown_module|missing_target|target_not_allowed|
                                               bad_parameter|bad_timeout_header"} counter
    casprobe_serve_probes_in_flight            probes running now
    casprobe_serve_scrapes_waiting             scrapes waiting for a slot now
    casprobe_serve_max_concurrency             the configured bound on probes at once
    casprobe_serve_config_last_reload_successful           1 or 0
    casprobe_serve_config_last_reload_success_timestamp_seconds
    casprobe_serve_config_reloads_total        {outcome="success|failure"} counter
    casprobe_serve_build_info                  {version} 1
    process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
    process_open_fds, process_start_time_seconds, process_threads   (Linux /proc; client_python's names)
"""

from __future__ import annotations

import os
import resource
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from casprobe import __version__
from casprobe.exporters.prometheus import RESULT_FAMILIES, labels, number, result_samples
from casprobe.model import ProbeResult

__all__ = [
    "AUTH_METHODS",
    "BAD_REQUEST_REASONS",
    "CONTENT_TYPE",
    "OUTCOMES",
    "Scrape",
    "ServeCounters",
    "backend_of",
    "render_process",
    "render_scrape",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: ``casprobe_probe_auth_method``'s states (the schemes of casprobe.net.authreport.KNOWN_SCHEMES, and none).
AUTH_METHODS = ("Negotiate", "NTLM", "Basic", "Bearer", "none")
OUTCOMES = ("success", "failure", "rejected")
BAD_REQUEST_REASONS = (
    "unknown_module",
    "missing_target",
    "target_not_allowed",
    "bad_parameter",
    "bad_timeout_header",
)


@dataclass(frozen=True, slots=True)
class Scrape:
    """One ``/probe`` request as it was answered: the status page, the debug output and the metrics read it.

    Attributes:
        module, target: what was asked (both validated against the configuration). started_at: ``time.time()``.
        duration: seconds of probing (or of waiting, when rejected). timeout_s: the deadline the probes had.
        results: one per probe of the module, in report order (synthesized ``timeout`` results when rejected).
        rejected: no probe ran (no free slot within the wait allowed). backends: the configuration's backends.
        tls_verification: False when the module has ``insecure = true``.
    """

    module: str
    target: str
    started_at: float
    duration: float
    timeout_s: float
    results: tuple[ProbeResult, ...]
    rejected: bool = False
    backends: tuple[str, ...] = ()
    tls_verification: bool = True

    @property
    def success(self) -> bool:
        return bool(self.results) and all(result.success for result in self.results)

    @property
    def outcome(self) -> str:
        return "rejected" if self.rejected else "success" if self.success else "failure"


def backend_of(result: ProbeResult, backends: Sequence[str]) -> str:
    """The ``backend`` label of a result: its X-FEServer as a configured short name, ``other``, or ``none``."""
    fe = result.fe_server or next((s.fe_server for s in reversed(result.steps) if s.fe_server), None)
    if not fe:
        return "none"
    short = fe.strip().lower().split(".", 1)[0]
    return short if short in backends else "other"


def _status(result: ProbeResult) -> int:
    return next((step.status_code for step in reversed(result.steps) if step.status_code is not None), 0)


def _response_code(result: ProbeResult) -> int | None:
    return next((step.response_code for step in reversed(result.steps) if step.response_code is not None), None)


def _state_set(name: str, key: str, states: Iterable[str], chosen: str, **base: str) -> Iterable[str]:
    for state in states:
        yield f"{name}{labels(**base, **{key: state})} {int(state == chosen)}"


def _per_probe(name: str, result: ProbeResult, backends: tuple[str, ...]) -> Iterable[str]:
    base = {"probe": result.probe}
    if name in RESULT_FAMILIES:
        yield from result_samples(name, result, base)
    elif name == "probe_http_status_code":
        yield f"{name}{labels(**base)} {_status(result)}"
    elif name == "casprobe_probe_backend":
        yield from _state_set(name, "backend", (*backends, "other", "none"), backend_of(result, backends), **base)
    elif name == "casprobe_probe_auth_method":
        used = result.auth_used if result.auth_used in AUTH_METHODS else "none"
        yield from _state_set(name, "method", AUTH_METHODS, used or "none", **base)
    elif name == "casprobe_mapi_response_code":
        code = _response_code(result)
        if code is not None:
            yield f"{name}{labels(**base)} {code}"


_SCRAPE_FAMILIES = (
    ("probe_success", "Whether the probe succeeded (1) or not (0); without a probe label: all of the module's."),
    ("probe_duration_seconds", "How long the probe took, in seconds; without a probe label: the whole scrape."),
    ("probe_http_duration_seconds", "Duration of each phase of the probe's main HTTP request, in seconds."),
    ("probe_http_status_code", "HTTP status code of the probe's last answer (0 when there was none)."),
    ("probe_ssl_earliest_cert_expiry", "Expiry of the server certificate, in Unix seconds."),
    ("casprobe_probe_error", "Why the probe failed: 1 for the error class of the failure, 0 for the others."),
    ("casprobe_probe_severity", "Nagios code of the result: 0 OK, 1 warning, 2 critical, 3 unknown."),
    ("casprobe_probe_backend", "The server that answered (X-FEServer), among the configured backends."),
    ("casprobe_probe_auth_method", "The authentication method the probe used."),
    ("casprobe_mapi_response_code", "The last MAPI/HTTP X-ResponseCode seen (0 = success)."),
    ("casprobe_probe_timeout_seconds", "The deadline this scrape gave its probes, in seconds."),
    ("casprobe_tls_verification_enabled", "Whether server certificates were verified (0 with insecure = true)."),
)


def render_scrape(scrape: Scrape) -> str:
    """The ``/probe`` answer for ``scrape``."""
    lines: list[str] = []
    for name, text in _SCRAPE_FAMILIES:
        samples: list[str] = []
        if name == "probe_success":
            samples.append(f"{name} {int(scrape.success)}")
        elif name == "probe_duration_seconds":
            samples.append(f"{name} {number(scrape.duration)}")
        elif name == "casprobe_probe_timeout_seconds":
            samples.append(f"{name} {number(scrape.timeout_s)}")
        elif name == "casprobe_tls_verification_enabled":
            samples.append(f"{name} {int(scrape.tls_verification)}")
        for result in scrape.results:
            samples.extend(_per_probe(name, result, scrape.backends))
        if samples:
            lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", *samples]
    return "\n".join(lines) + "\n"


# -- the process ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServeCounters:
    """A snapshot of the server's own figures for ``/metrics``.

    Attributes:
        scrapes: ((module, outcome), count). rejected: scrapes answered without probing. bad_requests: (reason,
        count). in_flight: probes running. waiting: scrapes waiting for a slot. max_concurrency: the bound.
        reload_ok: the last (re)load worked. reload_success_at: when a load last worked (``time.time()``).
        reloads: (outcome, count). modules: the configured modules (their counters start at 0).
    """

    scrapes: tuple[tuple[tuple[str, str], int], ...] = ()
    rejected: int = 0
    bad_requests: tuple[tuple[str, int], ...] = ()
    in_flight: int = 0
    waiting: int = 0
    max_concurrency: int = 0
    reload_ok: bool = True
    reload_success_at: float = 0.0
    reloads: tuple[tuple[str, int], ...] = ()
    modules: tuple[str, ...] = field(default_factory=tuple)


def _proc_figures() -> list[tuple[str, str, str, float]]:
    """client_python's process_* figures from /proc (Linux); none elsewhere."""
    out: list[tuple[str, str, str, float]] = []
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    out.append(("process_cpu_seconds_total", "counter", "User and system CPU time, seconds.", cpu))
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            fields = handle.read().rpartition(")")[2].split()
        page, ticks = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")
        with open("/proc/stat", encoding="ascii") as handle:
            boot = next(float(line.split()[1]) for line in handle if line.startswith("btime"))
        out.append(("process_virtual_memory_bytes", "gauge", "Virtual memory size, bytes.", float(fields[20])))
        rss = float(fields[21]) * page
        out.append(("process_resident_memory_bytes", "gauge", "Resident memory size, bytes.", rss))
        start = boot + float(fields[19]) / ticks
        out.append(("process_start_time_seconds", "gauge", "Start time of the process, Unix seconds.", start))
        out.append(("process_open_fds", "gauge", "Open file descriptors.", float(len(os.listdir("/proc/self/fd")))))
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    out.append(("process_threads", "gauge", "Python threads alive.", float(threading.active_count())))
    return out


def render_process(counters: ServeCounters) -> str:
    """The ``/metrics`` answer."""
    c = counters
    scrapes = dict(c.scrapes)
    modules = sorted({*c.modules, *(module for module, _ in scrapes)})
    bad, reloads = dict(c.bad_requests), dict(c.reloads)
    families: list[tuple[str, str, str, list[tuple[dict[str, str], float]]]] = [
        (
            "casprobe_serve_scrapes_total",
            "counter",
            "Scrapes of /probe by module and outcome.",
            [({"module": m, "outcome": o}, scrapes.get((m, o), 0)) for m in modules for o in OUTCOMES],
        ),
        (
            "casprobe_serve_rejected_scrapes_total",
            "counter",
            "Scrapes answered with a timeout failure because no probe slot came free in time.",
            [({}, c.rejected)],
        ),
        (
            "casprobe_serve_bad_requests_total",
            "counter",
            "Requests to /probe refused with HTTP 400, by reason.",
            [({"reason": r}, bad.get(r, 0)) for r in BAD_REQUEST_REASONS],
        ),
        ("casprobe_serve_probes_in_flight", "gauge", "Probes running now.", [({}, c.in_flight)]),
        ("casprobe_serve_scrapes_waiting", "gauge", "Scrapes waiting for a probe slot now.", [({}, c.waiting)]),
        ("casprobe_serve_max_concurrency", "gauge", "Most probes run at once.", [({}, c.max_concurrency)]),
        (
            "casprobe_serve_config_last_reload_successful",
            "gauge",
            "Whether the last configuration (re)load worked (1) or was refused (0).",
            [({}, int(c.reload_ok))],
        ),
        (
            "casprobe_serve_config_last_reload_success_timestamp_seconds",
            "gauge",
            "When the configuration was last loaded successfully, Unix seconds.",
            [({}, round(c.reload_success_at, 3))],
        ),
        (
            "casprobe_serve_config_reloads_total",
            "counter",
            "Configuration reloads (SIGHUP, POST /-/reload) by outcome.",
            [({"outcome": o}, reloads.get(o, 0)) for o in ("success", "failure")],
        ),
        ("casprobe_serve_build_info", "gauge", "The casprobe version serving.", [({"version": __version__}, 1)]),
    ]
    no_labels: dict[str, str] = {}
    families += [(name, kind, text, [(no_labels, value)]) for name, kind, text, value in _proc_figures()]
    lines: list[str] = []
    for name, kind, text, samples in families:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        lines += [f"{name}{labels(**pairs) if pairs else ''} {number(value)}" for pairs, value in samples]
    return "\n".join(lines) + "\n"
