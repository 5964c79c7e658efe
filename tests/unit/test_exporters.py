"""Exporters: every format renders the same report faithfully, parseably, with bounded labels and no secret."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from casprobe.exporters import FORMATS, CheckReport, overall, render, write_atomic
from casprobe.exporters.json import SCHEMA_VERSION
from casprobe.model import ErrorClass, PhaseTimings, ProbeResult, Severity, Step, Target, TargetKind, TlsFacts
from casprobe.probes import ProbeContext
from casprobe.runner import run_round
from casprobe.targets import CheckOptions, build_plan

NS = Target("outlook.example.test", TargetKind.NAMESPACE, 443, "127.0.0.10", "namespace")
MB1 = Target("mb1.example.test", TargetKind.SERVER, 443, "127.0.0.11", "mb1")
TLS = TlsFacts("TLSv1.3", "TLS_AES_256_GCM_SHA384", True, True, "2030-01-01T00:00:00+00:00", 1500)


def _result(target: Target, probe: str, **kw: object) -> ProbeResult:
    base: dict[str, object] = {
        "target": target,
        "probe": probe,
        "success": True,
        "severity": Severity.OK,
        "started_at": 1_700_000_000.0,
        "duration": 0.123,
        "phases": PhaseTimings(0.001, 0.002, 0.01, (0.004, 0.005), 0.02, 0.123),
        "address": target.address,
        "fe_server": "MB1",
        "tls": TLS,
    }
    base.update(kw)
    return ProbeResult(**base)  # type: ignore[arg-type]


FAILED = _result(
    MB1,
    "mapi",
    success=False,
    severity=Severity.CRITICAL,
    error_class=ErrorClass.HTTP_STATUS,
    detail='Connect answered 503 | "quoted" <xml> & more',
    steps=(
        Step("POST /mapi/emsmdb/ (Connect)", False, "HTTP 503 from a draining server", ErrorClass.HTTP_STATUS, 503),
    ),
    facts=(("mapi.response_code", "0"),),
)
WARNED = _result(NS, "health", severity=Severity.WARNING, detail="certificate expires in 5 days")
BUG = _result(
    MB1, "ews", success=False, severity=Severity.UNKNOWN, error_class=ErrorClass.INTERNAL, detail="casprobe bug"
)
RESULTS = (_result(NS, "mapi"), WARNED, _result(MB1, "health"), FAILED, BUG)


def _report(results: tuple[ProbeResult, ...] = RESULTS, *, tls: bool = True) -> CheckReport:
    settings = {"namespace": NS.name, "cert_warn_days": 30, "tls_verification": tls}
    return CheckReport(results, 1_700_000_000.0, 1_700_000_001.5, settings, tls, ("a note",))


@pytest.mark.parametrize(
    ("severities", "expected"),
    [
        ((), Severity.UNKNOWN),
        ((Severity.OK, Severity.OK), Severity.OK),
        ((Severity.OK, Severity.WARNING), Severity.WARNING),
        ((Severity.WARNING, Severity.UNKNOWN), Severity.UNKNOWN),
        ((Severity.UNKNOWN, Severity.CRITICAL, Severity.WARNING), Severity.CRITICAL),
    ],
)
def test_the_run_status_is_the_worst_result_with_critical_above_unknown(
    severities: tuple[Severity, ...], expected: Severity
) -> None:
    """overall(): critical beats unknown beats warning beats OK; no result at all is unknown."""
    results = [_result(MB1, "health", severity=s) for s in severities]
    assert overall(results) is expected


def test_json_is_a_versioned_document_with_every_field_of_every_result() -> None:
    """The JSON carries schema_version, run info (version, times, settings, TLS verification), a summary whose
    exit code is the run status, and each result with all ProbeResult fields."""
    doc = json.loads(render("json", _report()))
    assert doc["schema_version"] == SCHEMA_VERSION == 1
    run = doc["run"]
    assert set(run) >= {"casprobe_version", "started", "finished", "duration_s", "settings", "tls_verification"}
    assert run["started"].startswith("2023-11-14T22:13:20")
    assert run["tls_verification"] is True
    assert doc["summary"] == {"status": "CRITICAL", "exit_code": 2, "results": 5, "failed": 2, "warnings": 1}
    fields = {f.name for f in dataclasses.fields(ProbeResult)}
    assert len(doc["results"]) == len(RESULTS)
    for item in doc["results"]:
        assert fields <= set(item)
    failed = doc["results"][3]
    assert failed["severity"] == "CRITICAL"
    assert failed["error_class"] == "http_status"
    assert failed["target"] == {"name": "mb1.example.test", "kind": "server", "port": 443, "address": "127.0.0.11",
                                "label": "mb1"}  # fmt: skip
    assert failed["phases"]["auth"] == [0.004, 0.005]
    assert failed["steps"][0]["status_code"] == 503
    assert failed["facts"] == [["mapi.response_code", "0"]]
    assert failed["tls"]["days_left"] == 1500


def test_junit_has_one_testcase_per_result_with_failures_and_errors_carrying_class_and_detail() -> None:
    """The JUnit XML parses; failed results are <failure type=class>, internal ones <error>, with the trace."""
    root = ET.fromstring(render("junit", _report()).encode())
    suite = root.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(cases) == len(RESULTS)
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("5", "1", "1")
    failure = cases[3].find("failure")
    assert failure is not None
    assert failure.get("type") == "http_status"
    assert failure.get("message") == 'http_status: Connect answered 503 | "quoted" <xml> & more'
    assert "POST /mapi/emsmdb/ (Connect)" in (failure.text or "")
    error = cases[4].find("error")
    assert error is not None
    assert error.get("type") == "internal"
    assert cases[0].find("failure") is None
    assert cases[0].get("classname") == "casprobe.namespace"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["tls_verification"] == "on"


_SAMPLE = re.compile(r'^([a-z_]+)\{((?:[a-z_]+="(?:[^"\\]|\\.)*",?)*)\} (-?[0-9.e+-]+)$|^([a-z_]+) (-?[0-9.e+-]+)$')
_LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')


def test_prometheus_text_parses_line_by_line_with_bounded_labels() -> None:
    """Every sample line is `name{labels} value`; label names are target/probe/phase/class only, class values come
    from the closed ErrorClass set, and no detail text leaks into any label."""
    text = render("prometheus", _report())
    names: set[str] = set()
    by_metric: dict[str, list[dict[str, str]]] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ .+$", line), line
            continue
        match = _SAMPLE.match(line)
        assert match, line
        name = match.group(1) or match.group(4)
        labels = dict(_LABEL.findall(match.group(2) or ""))
        float(match.group(3) or match.group(5))
        names.add(name)
        by_metric.setdefault(name, []).append(labels)
        assert set(labels) <= {"target", "probe", "phase", "class"}, line
        assert labels.get("class", "dns") in {c.value for c in ErrorClass}
        assert labels.get("phase", "tls") in {"resolve", "connect", "tls", "auth", "processing"}
        assert "503" not in line or not labels
    assert {"probe_success", "probe_duration_seconds", "probe_http_duration_seconds",
            "probe_ssl_earliest_cert_expiry", "casprobe_probe_error"} <= names  # fmt: skip
    assert len(by_metric["probe_success"]) == len(RESULTS)
    assert len(by_metric["casprobe_probe_error"]) == len(RESULTS) * len(ErrorClass)
    assert 'probe_success{target="mb1.example.test",probe="mapi"} 0' in text
    assert 'casprobe_probe_error{target="mb1.example.test",probe="mapi",class="http_status"} 1' in text
    assert 'probe_http_duration_seconds{target="mb1.example.test",probe="mapi",phase="auth"} 0.009' in text
    assert 'probe_ssl_earliest_cert_expiry{target="mb1.example.test",probe="mapi"} 1893456000' in text
    assert "casprobe_tls_verification_enabled 1" in text


def test_nagios_prints_one_status_line_with_perfdata_then_the_failures() -> None:
    """Line 1 is `CASPROBE CRITICAL - … | 'mb1_mapi_total'=0.123s;;; …`; the text part holds no '|'."""
    lines = render("nagios", _report()).splitlines()
    text, _, perf = lines[0].partition(" | ")
    assert text.startswith("CASPROBE CRITICAL - 2 of 5 probes failed: mb1 mapi (http_status), mb1 ews (internal)")
    assert "|" not in text
    assert "'mb1_mapi_total'=0.123s;;;" in perf.split()
    assert "'namespace_cert_days'=1500;30:;0:;;" in perf.split()
    assert len(lines) == 4  # the warning, the failure and the internal error, one line each
    assert lines[2] == 'CRITICAL: mb1 mapi: http_status: Connect answered 503 / "quoted" <xml> & more'


def test_nagios_and_table_say_when_tls_verification_is_off() -> None:
    """--insecure shows in the table as a line of plain words and in the Nagios status line."""
    insecure = _report((_result(MB1, "health"),), tls=False)
    assert "TLS verification is OFF" in render("table", insecure)
    assert render("nagios", insecure).startswith("CASPROBE OK - 1 probes OK on 1 names; TLS verification OFF |")
    assert "TLS verification is OFF" not in render("table", _report())


def test_the_table_fits_100_columns_and_shows_each_failing_step() -> None:
    """Rows per name, a cell per probe in words, and under it the failing result's steps; no line over 100."""
    text = render("table", _report())
    assert all(len(line) <= 100 for line in text.splitlines())
    assert "FAILED http_status" in text
    assert "WARNING" in text
    assert "UNKNOWN internal" in text
    assert "POST /mapi/emsmdb/ (Connect)" in text
    assert "HTTP 503 from a draining server" in text
    assert "[bold]" not in render("table", _report((_result(MB1, "x", detail="[bold]"),)))


def test_write_atomic_replaces_the_file_in_one_step(tmp_path: Path) -> None:
    """write_atomic leaves the complete new content and no temporary file behind."""
    path = tmp_path / "casprobe.prom"
    path.write_text("old")
    write_atomic(path, "new content\n")
    assert path.read_text() == "new content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["casprobe.prom"]


def test_no_format_and_no_log_line_carries_the_password(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A real round with a known password (from the environment), including a probe that puts its settings in
    its detail, renders in every format and logs at debug level without the password appearing anywhere."""
    secret = "S3cr3t-Passw0rd-for-the-test"
    monkeypatch.setenv("CASPROBE_TEST_PW", secret)
    caplog.set_level(logging.DEBUG)
    options = CheckOptions(
        namespace="outlook.example.test",
        servers=("mb1.example.test",),
        resolve=("outlook.example.test:127.0.0.1:9", "mb1.example.test:127.0.0.1:9"),
        mailbox="alice@example.test",
        user="EX\\alice",
        password_env="CASPROBE_TEST_PW",
        timeout=2.0,
        probes=("health",),
    )
    plan = build_plan(options, available=("health",), interactive=False)
    started = time.time()
    results = run_round(plan.targets(), plan.probes, plan.settings, plan.resolver())

    def chatty(ctx: ProbeContext) -> ProbeResult:
        logging.getLogger("test").debug("settings: %r credentials: %s", ctx.settings, ctx.settings.credentials)
        return _result(ctx.target, "mapi", detail=f"{ctx.settings!r}")

    results.extend(
        chatty(ProbeContext(t, plan.settings, plan.resolver(), time.monotonic() + 1)) for t in plan.targets()
    )
    assert any(r.error_class is ErrorClass.CONNECT for r in results)  # the round really ran against a closed port
    report = CheckReport(tuple(results), started, time.time(), plan.summary(), True, ())
    outputs = {fmt: render(fmt, report) for fmt in FORMATS}
    for fmt, text in outputs.items():
        assert secret not in text, fmt
    assert secret not in caplog.text
    assert "EX\\\\alice" in outputs["json"]  # the user name is not a secret and is reported
