"""``--format prometheus``: the text exposition format (0.0.4), in the style of blackbox_exporter.

Per target × probe (labels ``target`` = the DNS name, ``probe``; both bounded by the configuration)::

    probe_success                 1 or 0
    probe_duration_seconds        the probe's wall time
    probe_http_duration_seconds   {phase="resolve|connect|tls|auth|processing"} of the probe's main request
                                  (blackbox's phases; ``auth`` = all authentication legs, ``processing`` =
                                  request sent → first response byte)
    probe_ssl_earliest_cert_expiry  the certificate's notAfter, Unix seconds (when a certificate was seen)
    casprobe_probe_error          {class="…"} one series per error class, 1 for the class of the failure:
                                  a state set over the closed ErrorClass enum (never message text: bounded)
    casprobe_probe_severity       the Nagios code of the result

and per run ``casprobe_tls_verification_enabled`` and ``casprobe_run_timestamp_seconds``. Free text (details,
server names from headers) never becomes a label value (blackbox_exporter PR #128's review; style.md rule 3).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from casprobe.exporters import CheckReport
from casprobe.model import ErrorClass, ProbeResult

__all__ = ["PHASES", "render"]

#: phase label → PhaseTimings attribute
PHASES = (("resolve", "resolve"), ("connect", "connect"), ("tls", "tls"), ("processing", "first_byte"))

_HELP = {
    "probe_success": "Whether the probe succeeded (1) or not (0).",
    "probe_duration_seconds": "How long the probe took, in seconds.",
    "probe_http_duration_seconds": "Duration of each phase of the probe's main HTTP request, in seconds.",
    "probe_ssl_earliest_cert_expiry": "Expiry of the server certificate, in Unix seconds.",
    "casprobe_probe_error": "Why the probe failed: 1 for the error class of the failure, 0 for the others.",
    "casprobe_probe_severity": "Nagios code of the result: 0 OK, 1 warning, 2 critical, 3 unknown.",
    "casprobe_tls_verification_enabled": "Whether server certificates were verified (0 with --insecure).",
    "casprobe_run_timestamp_seconds": "When the check started, in Unix seconds.",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def labels(**labels: str) -> str:
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def number(value: float) -> str:
    number = round(float(value), 6)  # microseconds are plenty, and keep the text short
    return str(int(number)) if number.is_integer() else repr(number)


def cert_expiry(result: ProbeResult) -> float | None:
    if result.tls is None or not result.tls.not_after:
        return None
    try:
        moment = dt.datetime.fromisoformat(result.tls.not_after)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


#: the families :func:`result_samples` renders
RESULT_FAMILIES = (
    "probe_success",
    "probe_duration_seconds",
    "probe_http_duration_seconds",
    "probe_ssl_earliest_cert_expiry",
    "casprobe_probe_error",
    "casprobe_probe_severity",
)


def result_samples(name: str, result: ProbeResult, base: dict[str, str]) -> Iterable[str]:
    """The samples of one result for family ``name`` (one of :data:`RESULT_FAMILIES`), labelled ``base`` plus
    the family's own label; shared by ``check --format prometheus`` and ``casprobe serve``."""
    if name == "probe_success":
        yield f"{name}{labels(**base)} {int(result.success)}"
    elif name == "probe_duration_seconds":
        yield f"{name}{labels(**base)} {number(result.duration)}"
    elif name == "probe_http_duration_seconds":
        for phase, attribute in PHASES:
            value = getattr(result.phases, attribute)
            if value is not None:
                yield f"{name}{labels(**base, phase=phase)} {number(value)}"
        if result.phases.auth:
            yield f"{name}{labels(**base, phase='auth')} {number(sum(result.phases.auth))}"
    elif name == "probe_ssl_earliest_cert_expiry":
        expiry = cert_expiry(result)
        if expiry is not None:
            yield f"{name}{labels(**base)} {number(expiry)}"
    elif name == "casprobe_probe_error":
        for error_class in ErrorClass:
            value = int(result.error_class is error_class)
            yield f"{name}{labels(**base, **{'class': error_class.value})} {value}"
    elif name == "casprobe_probe_severity":
        yield f"{name}{labels(**base)} {int(result.severity)}"


def _samples(name: str, report: CheckReport) -> Iterable[str]:
    for result in report.results:
        yield from result_samples(name, result, {"target": result.target.name, "probe": result.probe})


def render(report: CheckReport) -> str:
    lines: list[str] = []
    for name, text in _HELP.items():
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
        if name == "casprobe_tls_verification_enabled":
            lines.append(f"{name} {int(report.tls_verification)}")
        elif name == "casprobe_run_timestamp_seconds":
            lines.append(f"{name} {number(round(report.started_at, 3))}")
        else:
            lines.extend(_samples(name, report))
    return "\n".join(lines) + "\n"
