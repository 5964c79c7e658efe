"""``--format nagios``: a monitoring plugin's output, per the Nagios plugin development guidelines.

Line 1: ``CASPROBE <STATUS> - <summary> | <perfdata>``; then one line per failing or warning result (the long
output); the process exit code is the status (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN). Perfdata is
``'label'=value[UOM];[warn];[crit];[min];[max]``: ``'<target>_<probe>_total'=0.123s;;;`` per result (the probe's
duration) and ``'<target>_cert_days'=N;<warn>;0;;`` per target whose certificate was seen. ``|`` never appears
in the text part (it would start the perfdata).
"""

from __future__ import annotations

import re

from casprobe.exporters import CheckReport
from casprobe.model import ProbeResult, Severity

__all__ = ["render", "status_line"]

_MAX_LISTED = 5
_LABEL_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def _label(*parts: str) -> str:
    return "'" + "_".join(_LABEL_BAD.sub("_", part) for part in parts) + "'"


def _text(text: str) -> str:
    return " ".join(text.replace("|", "/").split())


def _describe(result: ProbeResult) -> str:
    why = result.error_class.value if result.error_class else "warning"
    return f"{result.target.display} {result.probe} ({why})"


def status_line(report: CheckReport) -> str:
    status = report.status
    results = report.results
    bad = [r for r in results if not r.success]
    warned = [r for r in results if r.success and r.severity is Severity.WARNING]
    if not results:
        summary = "no probe ran"
    elif bad:
        listed = ", ".join(_describe(r) for r in bad[:_MAX_LISTED])
        more = f" and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
        summary = f"{len(bad)} of {len(results)} probes failed: {listed}{more}"
    elif warned:
        summary = f"{len(results)} probes OK, {len(warned)} with a warning: {', '.join(_describe(r) for r in warned)}"
    else:
        summary = f"{len(results)} probes OK on {len({r.target for r in results})} names"
    if not report.tls_verification:
        summary += "; TLS verification OFF"
    return f"CASPROBE {status.name} - {_text(summary)}"


def _perfdata(report: CheckReport) -> list[str]:
    data = [f"{_label(r.target.display, r.probe, 'total')}={r.duration:.3f}s;;;" for r in report.results]
    warn_days = report.settings.get("cert_warn_days")
    seen: set[str] = set()
    for result in report.results:
        tls = result.tls
        name = result.target.display
        if tls is None or tls.days_left is None or name in seen:
            continue
        seen.add(name)
        warn = str(warn_days) + ":" if isinstance(warn_days, int) else ""
        data.append(f"{_label(name, 'cert_days')}={tls.days_left};{warn};0:;;")
    return data


def render(report: CheckReport) -> str:
    lines = [f"{status_line(report)} | {' '.join(_perfdata(report))}"]
    for result in report.results:
        if not result.success or result.severity is not Severity.OK:
            what = result.error_class.value if result.error_class else "warning"
            lines.append(
                _text(f"{result.severity.name}: {result.target.display} {result.probe}: {what}: {result.detail}")
            )
    return "\n".join(lines) + "\n"
