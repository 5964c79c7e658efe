"""``--format junit``: JUnit XML for CI, one ``<testcase>`` per target × probe.

The de-facto JUnit schema (as read by Jenkins, GitLab and GitHub test reporters): ``<testsuites>`` →
``<testsuite name tests failures errors time timestamp>`` → ``<testcase classname name time>``. A critical result
carries ``<failure type="<error class>" message="<class>: <detail>">`` with the probe's step trace as text; an
``internal`` result (a casprobe bug) is an ``<error>`` instead; a warning passes with its caveat in
``<system-out>``. The run's settings (no secrets) and TLS verification go to ``<properties>``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import xml.etree.ElementTree as ET

from casprobe.exporters import CheckReport
from casprobe.model import ErrorClass, ProbeResult, Severity

__all__ = ["render", "trace_text"]

# XML 1.0 cannot carry most control characters, even escaped
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def trace_text(result: ProbeResult) -> str:
    """The probe's steps, one per line, as the Remote Connectivity Analyzer lists them."""
    lines = []
    for step in result.steps:
        mark = "ok  " if step.ok else "FAIL"
        extra = [f"HTTP {step.status_code}"] if step.status_code is not None else []
        if step.error_class is not None:
            extra.append(step.error_class.value)
        if step.fe_server:
            extra.append(f"FE {step.fe_server}")
        suffix = f" ({', '.join(extra)})" if extra else ""
        detail = f": {step.detail}" if step.detail else ""
        lines.append(f"{mark} {step.name}{suffix}{detail} [{step.duration:.3f} s]")
    return "\n".join(lines)


def render(report: CheckReport) -> str:
    results = report.results
    errors = sum(1 for r in results if r.error_class is ErrorClass.INTERNAL)
    failures = sum(1 for r in results if not r.success) - errors
    elapsed = f"{report.finished_at - report.started_at:.3f}"
    root = ET.Element(
        "testsuites", name="casprobe", tests=str(len(results)), failures=str(failures), errors=str(errors)
    )
    root.set("time", elapsed)
    suite = ET.SubElement(
        root,
        "testsuite",
        name="casprobe check",
        tests=str(len(results)),
        failures=str(failures),
        errors=str(errors),
        skipped="0",
        time=elapsed,
        timestamp=dt.datetime.fromtimestamp(report.started_at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"),
    )
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="casprobe_version", value=report.version)
    ET.SubElement(properties, "property", name="tls_verification", value="on" if report.tls_verification else "OFF")
    for key, value in report.settings.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        ET.SubElement(properties, "property", name=f"setting.{key}", value=_clean(text))
    for result in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"casprobe.{result.target.display}",
            name=f"{result.probe} {result.target.name}",
            time=f"{result.duration:.3f}",
        )
        if not result.success:
            kind = "error" if result.error_class is ErrorClass.INTERNAL else "failure"
            cls = result.error_class.value if result.error_class else "unknown"
            element = ET.SubElement(case, kind, type=cls, message=_clean(f"{cls}: {result.detail}"))
            element.text = _clean(trace_text(result))
        elif result.severity is Severity.WARNING:
            ET.SubElement(case, "system-out").text = _clean(f"WARNING: {result.detail}")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
