"""Exporters: one module per output format, all rendering the same :class:`CheckReport` to text.

``table`` (rich, for people), ``json`` (a versioned document), ``junit`` (CI), ``nagios`` (status line, perfdata
and exit code) and ``prometheus`` (text exposition, blackbox_exporter style). A format module exports
``render(report) -> str``; :func:`render` picks one by name and :func:`write_atomic` writes a file so that a
reader (node_exporter's textfile collector, a CI step) never sees half of it (the tmp + rename of
prometheus/client_python's ``write_to_textfile``, style.md rule 14).

Exit codes follow Nagios (:func:`overall`): CRITICAL if any result is critical, else UNKNOWN if any is unknown
(a casprobe bug), else WARNING if any is a warning, else OK; no result at all is UNKNOWN.
"""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from casprobe import __version__
from casprobe.model import ProbeResult, Severity

__all__ = ["FORMATS", "CheckReport", "overall", "render", "write_atomic"]

FORMATS = ("table", "json", "junit", "nagios", "prometheus")

_PRECEDENCE = (Severity.CRITICAL, Severity.UNKNOWN, Severity.WARNING, Severity.OK)


@dataclass(frozen=True, slots=True)
class CheckReport:
    """One check run, as every exporter receives it.

    Attributes:
        results: one per target × probe, in report order.
        started_at, finished_at: ``time.time()`` timestamps of the round.
        settings: the run's settings as plain data, without secrets (``CheckPlan.summary()``).
        tls_verification: certificates were verified (False with ``--insecure``: every output says so).
        notes: remarks for people (probes skipped, servers discovered), one line each.
        version: the casprobe version that ran.
    """

    results: tuple[ProbeResult, ...]
    started_at: float
    finished_at: float
    settings: Mapping[str, object] = field(default_factory=dict)
    tls_verification: bool = True
    notes: tuple[str, ...] = ()
    version: str = __version__

    @property
    def status(self) -> Severity:
        return overall(self.results)


def overall(results: Sequence[ProbeResult]) -> Severity:
    """The run's Nagios status (see the module docstring)."""
    if not results:
        return Severity.UNKNOWN
    present = {result.severity for result in results}
    return next(severity for severity in _PRECEDENCE if severity in present)


def render(fmt: str, report: CheckReport, *, color: bool = False) -> str:
    """Render ``report`` in format ``fmt`` (one of :data:`FORMATS`); ``color`` only affects ``table``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    module = importlib.import_module(f"casprobe.exporters.{fmt}")
    if fmt == "table":
        text: str = module.render(report, color=color)
    else:
        text = module.render(report)
    return text


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # as an ordinary open() would have created it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
