"""The pre/post diff: inputs built by the real JSON exporter and the real run store, each regression injected alone."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from casprobe.compare import Comparison, FindingKind, Thresholds, compare
from casprobe.compare_sources import CompareInputError, load
from casprobe.exporters import CheckReport
from casprobe.exporters.json import render
from casprobe.model import (
    ErrorClass,
    PhaseTimings,
    ProbeResult,
    RunInfo,
    Severity,
    Target,
    TargetKind,
    TlsFacts,
)
from casprobe.store import RunStore

WALL = 1_700_000_000.0
NS = Target("outlook.lab.test", TargetKind.NAMESPACE, label="namespace")
MB1 = Target("mb1.lab.test", TargetKind.SERVER, label="mb1")
MB2 = Target("mb2.lab.test", TargetKind.SERVER, label="mb2")
TARGETS = (NS, MB1, MB2)
PROBES = ("health", "autodiscover", "mapi", "ews")
MAILBOX = "?MailboxId=0b1c@lab.test"


def cert(target: Target, **changes: object) -> TlsFacts:
    facts = TlsFacts(
        version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
        verified=True,
        name_match=True,
        not_after="2027-06-01T00:00:00+00:00",
        days_left=400,
        subject=f"CN={target.name}",
        issuer="CN=casprobe lab CA",
        san=(target.name, "outlook.lab.test", "autodiscover.lab.test"),
    )
    return dataclasses.replace(facts, **changes)  # type: ignore[arg-type]


def url_facts(host: str, naming: str = "namespace") -> tuple[tuple[str, str], ...]:
    return (
        ("autodiscover.mapi.mailstore.internal", f"https://{host}/mapi/emsmdb/{MAILBOX}"),
        ("autodiscover.mapi.addressbook.internal", f"https://{host}/mapi/nspi/{MAILBOX}"),
        ("autodiscover.mapi.host", host),
        ("autodiscover.mapi.names", naming),
        ("autodiscover.ews_url", f"https://{host}/EWS/Exchange.asmx"),
    )


def result(target: Target, probe: str, t: float = 0.0, **changes: object) -> ProbeResult:
    """One healthy result of ``target`` × ``probe`` (about 50 ms), with ``changes`` applied."""
    server = target.label.upper() if target.kind is TargetKind.SERVER else "MB1"
    base = ProbeResult(
        target,
        probe,
        True,
        Severity.OK,
        detail="ok",
        started_at=WALL + t,
        started_mono=t,
        duration=0.05,
        phases=PhaseTimings(connect=0.001, tls=0.004, auth=(0.006, 0.008), first_byte=0.03, total=0.05),
        address="127.0.0.11",
        fe_server=server,
        be_server="mb1.lab.test" if probe != "health" else None,
        tls=cert(target),
        auth_offered=("Negotiate", "NTLM") if probe != "health" else (),
        auth_used="NTLM" if probe != "health" else None,
        facts=url_facts("outlook.lab.test") if probe == "autodiscover" else (),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def failed(target: Target, probe: str, t: float = 0.0, **changes: object) -> ProbeResult:
    fields: dict[str, object] = {
        "success": False,
        "severity": Severity.CRITICAL,
        "error_class": ErrorClass.HTTP_STATUS,
        "detail": "HTTP 503 from mb1: the server is in maintenance",
    }
    return result(target, probe, t, **{**fields, **changes})


Change = Callable[[ProbeResult], ProbeResult]


def round_of(change: Change | None = None, t: float = 0.0) -> list[ProbeResult]:
    """One check round: every target × probe, each passed through ``change``."""
    out = [result(target, probe, t) for target in TARGETS for probe in PROBES]
    return [change(r) for r in out] if change else out


def write_check(path: Path, results: Sequence[ProbeResult]) -> Path:
    report = CheckReport(tuple(results), WALL, WALL + 1.0, {"namespace": "outlook.lab.test"})
    path.write_text(render(report), encoding="utf-8")
    return path


def write_run(path: Path, results: Sequence[ProbeResult], *, finish: bool = True) -> Path:
    run = RunInfo("run-" + path.stem, WALL, "0.1.0", 1.0, ("namespace=outlook.lab.test",), PROBES)
    with RunStore.create(path, run) as store:
        for r in results:
            store.add_result(r)
        if finish:
            store.finish(WALL + 600.0)
    return path


def run_of(change: Change | None = None, rounds: int = 10) -> list[ProbeResult]:
    return [r for i in range(rounds) for r in round_of(change, t=float(i))]


def diff(tmp_path: Path, before: list[ProbeResult], after: list[ProbeResult], *, run: bool = False) -> Comparison:
    """Write both inputs the way casprobe writes them, read them back, compare with the default thresholds."""
    write = write_run if run else write_check
    suffix = "db" if run else "json"
    pre = load(write(tmp_path / f"pre.{suffix}", before))
    post = load(write(tmp_path / f"post.{suffix}", after))
    return compare(pre, post)


def only(kind: FindingKind, c: Comparison) -> list[tuple[str, str]]:
    return [(f.target, f.probe) for f in c.findings if f.kind is kind]


def when(target: Target, probe: str, fn: Change) -> Change:
    return lambda r: fn(r) if (r.target, r.probe) == (target, probe) else r


@pytest.mark.parametrize("run", [False, True], ids=["check", "run"])
def test_identical_inputs_compare_clean(tmp_path: Path, run: bool) -> None:
    """The same results written twice give no finding at all and status OK (exit 0)."""
    results = run_of() if run else round_of()
    c = diff(tmp_path, results, results, run=run)
    assert c.findings == ()
    assert c.status is Severity.OK
    assert c.verdict == "no differences"
    assert c.rows == len(TARGETS) * len(PROBES)


@pytest.mark.parametrize("run", [False, True], ids=["check", "run"])
def test_a_server_that_fails_after_is_a_regression_with_its_error(tmp_path: Path, run: bool) -> None:
    """mb1's mapi working before and failing after (HTTP 503) is one CRITICAL failure finding naming the error class
    and the detail; nothing else is reported."""
    broken = when(MB1, "mapi", lambda r: failed(r.target, r.probe, r.started_mono))
    before, after = (run_of(), run_of(broken)) if run else (round_of(), round_of(broken))
    c = diff(tmp_path, before, after, run=run)
    assert [(f.kind, f.target, f.probe) for f in c.findings] == [(FindingKind.FAILURE, "mb1.lab.test", "mapi")]
    (finding,) = c.findings
    assert finding.severity is Severity.CRITICAL
    assert "http_status" in finding.message
    assert "HTTP 503" in finding.message
    assert finding.before.startswith("OK")
    assert c.status is Severity.CRITICAL


def test_intermittent_failures_after_a_clean_run_are_a_regression(tmp_path: Path) -> None:
    """In a run, mb1 ews failing 2 times out of 10 (last result OK) is a failure finding saying "at times" and 20 %."""
    flaky = {0.0, 5.0}
    after = [
        failed(r.target, r.probe, r.started_mono, error_class=ErrorClass.TIMEOUT, detail="read timed out")
        if (r.target, r.probe) == (MB1, "ews") and r.started_mono in flaky
        else r
        for r in run_of()
    ]
    c = diff(tmp_path, run_of(), after, run=True)
    assert only(FindingKind.FAILURE, c) == [("mb1.lab.test", "ews")]
    assert "fails at times" in c.findings[0].message
    assert "2 of 10 failed (20.0%)" in c.findings[0].message


def test_failing_before_and_working_after_is_an_improvement_that_does_not_fail(tmp_path: Path) -> None:
    """mb2 health failing before and OK after is listed as an improvement; the status stays OK."""
    c = diff(tmp_path, round_of(when(MB2, "health", lambda r: failed(r.target, r.probe))), round_of())
    assert only(FindingKind.IMPROVEMENT, c) == [("mb2.lab.test", "health")]
    assert c.status is Severity.OK
    assert c.verdict == "no regressions and no changes to review"


def test_still_failing_is_a_note(tmp_path: Path) -> None:
    """A row failing on both sides is a still_failing note, not a regression."""
    down = round_of(when(MB2, "ews", lambda r: failed(r.target, r.probe)))
    c = diff(tmp_path, down, down)
    assert only(FindingKind.STILL_FAILING, c) == [("mb2.lab.test", "ews")]
    assert c.status is Severity.OK


@pytest.mark.parametrize(
    ("before_s", "after_s", "flagged"),
    [
        (0.05, 0.10, True),  # doubled, +50 ms
        (0.05, 0.095, False),  # ×1.9
        (0.005, 0.010, False),  # doubled, but only +5 ms
        (0.05, 0.5, True),
    ],
)
def test_latency_is_a_regression_only_beyond_both_thresholds(
    tmp_path: Path, before_s: float, after_s: float, flagged: bool
) -> None:
    """The namespace's mapi total latency is flagged when it is ≥ 2× and ≥ +20 ms, and only then."""

    def slow(seconds: float) -> Change:
        return when(NS, "mapi", lambda r: dataclasses.replace(r, phases=dataclasses.replace(r.phases, total=seconds)))

    c = diff(tmp_path, round_of(slow(before_s)), round_of(slow(after_s)))
    assert only(FindingKind.LATENCY, c) == ([("outlook.lab.test", "mapi")] if flagged else [])
    if flagged:
        (finding,) = c.findings
        assert finding.before == f"total {before_s * 1000:.0f} ms"
        assert finding.after == f"total {after_s * 1000:.0f} ms"
        assert c.status is Severity.CRITICAL


def test_run_latency_compares_percentiles_of_many_samples(tmp_path: Path) -> None:
    """In runs, mb2 ews first_byte p50 doubling (30 → 60 ms in every result) is flagged with p50 and p95 and n."""
    slower = when(MB2, "ews", lambda r: dataclasses.replace(r, phases=dataclasses.replace(r.phases, first_byte=0.06)))
    c = diff(tmp_path, run_of(), run_of(slower), run=True)
    assert only(FindingKind.LATENCY, c) == [("mb2.lab.test", "ews")]
    finding = c.findings[0]
    assert "first_byte" in finding.message
    assert "p50 30 ms → 60 ms (×2.0)" in finding.message
    assert finding.after == "first_byte p50 60 ms, p95 60 ms (n=10)"


def test_thresholds_are_configurable(tmp_path: Path) -> None:
    """A 1.5× threshold flags a 1.6× slower first byte that the default 2× lets pass."""
    slower = when(MB1, "ews", lambda r: dataclasses.replace(r, phases=dataclasses.replace(r.phases, first_byte=0.048)))
    pre = load(write_check(tmp_path / "a.json", round_of()))
    post = load(write_check(tmp_path / "b.json", round_of(slower)))
    assert only(FindingKind.LATENCY, compare(pre, post)) == []
    assert only(FindingKind.LATENCY, compare(pre, post, Thresholds(1.5, 10))) == [("mb1.lab.test", "ews")]


def test_a_certificate_change_is_a_change_to_review(tmp_path: Path) -> None:
    """A renewed namespace certificate (new issuer and expiry) is one certificate finding for the name, saying what
    changed; the status is WARNING (exit 1)."""

    def renew(r: ProbeResult) -> ProbeResult:
        if r.target != NS:
            return r
        return dataclasses.replace(r, tls=cert(NS, issuer="CN=Other CA", not_after="2028-01-01T00:00:00+00:00"))

    c = diff(tmp_path, round_of(), round_of(renew))
    assert [(f.kind, f.target, f.probe) for f in c.findings] == [(FindingKind.CERTIFICATE, "outlook.lab.test", "*")]
    message = c.findings[0].message
    assert "issuer CN=casprobe lab CA → CN=Other CA" in message
    assert "expiry 2027-06-01T00:00:00+00:00 → 2028-01-01T00:00:00+00:00" in message
    assert c.status is Severity.WARNING


def test_autodiscover_handing_out_a_server_name_is_called_out_plainly(tmp_path: Path) -> None:
    """Autodiscover through the namespace handing out mb1.lab.test instead of the namespace is one autodiscover_urls
    change whose message says it names a single server and what that does to Outlook."""
    to_mb1 = when(NS, "autodiscover", lambda r: dataclasses.replace(r, facts=url_facts("mb1.lab.test", "server")))
    c = diff(tmp_path, round_of(), round_of(to_mb1))
    assert only(FindingKind.AUTODISCOVER_URLS, c) == [("outlook.lab.test", "autodiscover")]
    finding = c.findings[0]
    assert "naming mb1.lab.test, a single server's own name, instead of outlook.lab.test" in finding.message
    assert "freeze" in finding.message
    assert "mapi.mailstore.internal=https://mb1.lab.test/mapi/emsmdb/" in finding.after
    assert c.status is Severity.WARNING


def test_other_url_changes_are_listed_without_the_server_warning(tmp_path: Path) -> None:
    """An EWS URL moving to another namespace is an autodiscover_urls change that counts the changed URLs."""

    def moved(r: ProbeResult) -> ProbeResult:
        facts = tuple(
            (k, "https://mail.lab.test/EWS/Exchange.asmx" if k == "autodiscover.ews_url" else v) for k, v in r.facts
        )
        return dataclasses.replace(r, facts=facts)

    c = diff(tmp_path, round_of(), round_of(when(MB1, "autodiscover", moved)))
    assert only(FindingKind.AUTODISCOVER_URLS, c) == [("mb1.lab.test", "autodiscover")]
    assert c.findings[0].message == "Autodiscover on mb1 hands out different URLs (1 URL changed)"
    assert c.findings[0].before == "ews_url=https://outlook.lab.test/EWS/Exchange.asmx"


def test_auth_offered_and_used_changes_are_changes_to_review(tmp_path: Path) -> None:
    """mb2 mapi offering only NTLM (Negotiate gone) and casprobe using Negotiate on mb1 ews are two changes."""
    ntlm_only = when(MB2, "mapi", lambda r: dataclasses.replace(r, auth_offered=("NTLM",)))
    negotiate = when(MB1, "ews", lambda r: dataclasses.replace(r, auth_used="Negotiate"))
    c = diff(tmp_path, round_of(), round_of(lambda r: negotiate(ntlm_only(r))))
    assert only(FindingKind.AUTH_OFFERED, c) == [("mb2.lab.test", "mapi")]
    assert only(FindingKind.AUTH_USED, c) == [("mb1.lab.test", "ews")]
    offered = next(f for f in c.findings if f.kind is FindingKind.AUTH_OFFERED)
    assert (offered.before, offered.after) == ("Negotiate, NTLM", "NTLM")
    assert c.status is Severity.WARNING


def test_a_name_missing_after_is_one_regression(tmp_path: Path) -> None:
    """mb2 not probed at all after is one missing finding for the name (not one per probe), CRITICAL."""
    after = [r for r in round_of() if r.target != MB2]
    c = diff(tmp_path, round_of(), after)
    assert [(f.kind, f.target, f.probe) for f in c.findings] == [(FindingKind.MISSING, "mb2.lab.test", "*")]
    assert "mb2 (mb2.lab.test) (health, autodiscover, mapi, ews) was probed before and is missing after" in (
        c.findings[0].message
    )
    assert c.status is Severity.CRITICAL


def test_a_probe_missing_after_is_a_regression_and_a_new_one_a_note(tmp_path: Path) -> None:
    """The namespace's ews missing after is a missing regression; a new mapi-session row is an added note."""
    after = [r for r in round_of() if (r.target, r.probe) != (NS, "ews")] + [result(MB1, "mapi-session")]
    c = diff(tmp_path, round_of(), after)
    assert only(FindingKind.MISSING, c) == [("outlook.lab.test", "ews")]
    assert only(FindingKind.ADDED, c) == [("mb1.lab.test", "mapi-session")]
    assert c.status is Severity.CRITICAL


def test_front_ends_through_the_namespace_are_compared_between_runs(tmp_path: Path) -> None:
    """In runs, MB1 no longer answering through the namespace is a backends change naming MB1."""

    def spread(r: ProbeResult) -> ProbeResult:
        return dataclasses.replace(r, fe_server=("MB1", "MB2")[int(r.started_mono) % 2]) if r.target == NS else r

    def mb2(r: ProbeResult) -> ProbeResult:
        return dataclasses.replace(r, fe_server="MB2") if r.target == NS else r

    c = diff(tmp_path, run_of(spread), run_of(mb2), run=True)
    assert only(FindingKind.BACKENDS, c) == [("outlook.lab.test", "*")]
    assert "MB1 no longer answers" in c.findings[0].message


def test_front_ends_through_the_namespace_are_not_compared_between_checks(tmp_path: Path) -> None:
    """Between two checks, another front end through the namespace (the balancer's pick) is no finding, but a note."""
    other = round_of(lambda r: dataclasses.replace(r, fe_server="MB2") if r.target == NS else r)
    c = diff(tmp_path, round_of(), other)
    assert c.findings == ()
    assert any("front ends through outlook.lab.test differ but are not compared" in note for note in c.notes)


def test_the_mailbox_moving_to_another_server_is_one_backends_change(tmp_path: Path) -> None:
    """X-CalculatedBETarget mb1 → mb2 through every name is one backends change for the mailbox naming those names."""
    moved = round_of(lambda r: dataclasses.replace(r, be_server="mb2.lab.test") if r.be_server else r)
    c = diff(tmp_path, round_of(), moved)
    assert [(f.kind, f.target, f.probe, f.where) for f in c.findings] == [
        (FindingKind.BACKENDS, "*", "*", "the mailbox")
    ]
    assert c.findings[0].message == (
        "the mailbox was on mb1.lab.test before and on mb2.lab.test after (seen through namespace, mb1, mb2)"
    )
    assert c.status is Severity.WARNING


def test_findings_come_regressions_first(tmp_path: Path) -> None:
    """A change to review, a note and a regression come out as regression, change, note."""
    mixed = round_of(
        lambda r: (
            failed(r.target, r.probe)
            if (r.target, r.probe) == (MB1, "mapi")
            else dataclasses.replace(r, auth_used="Basic")
            if (r.target, r.probe) == (MB2, "ews")
            else r
        )
    )
    before = round_of(when(NS, "health", lambda r: failed(r.target, r.probe)))
    c = diff(tmp_path, before, mixed)
    assert [f.severity for f in c.findings] == [Severity.CRITICAL, Severity.WARNING, Severity.OK]


def test_the_json_document_is_versioned_and_lists_the_findings(tmp_path: Path) -> None:
    """to_json(): format/version, status and exit code, both sources, thresholds and every finding's fields."""
    broken = when(MB1, "mapi", lambda r: failed(r.target, r.probe))
    doc = json.loads(diff(tmp_path, round_of(), round_of(broken)).render_json())
    assert (doc["format"], doc["version"], doc["status"], doc["exit_code"]) == ("casprobe.compare", 1, "CRITICAL", 2)
    assert doc["before"]["kind"] == "check"
    assert doc["after"]["results"] == len(TARGETS) * len(PROBES)
    assert doc["thresholds"] == {"latency_factor": 2.0, "latency_min_ms": 20.0}
    (finding,) = doc["findings"]
    assert (finding["kind"], finding["severity"]) == ("failure", "CRITICAL")
    assert set(finding) == {"kind", "severity", "target", "probe", "before", "after", "message", "label"}


def test_a_check_document_of_the_wrong_shape_names_the_result_and_the_field(tmp_path: Path) -> None:
    """A result whose success is a string is refused with the file, the result's number and the field."""
    path = write_check(tmp_path / "pre.json", round_of())
    doc = json.loads(path.read_text())
    doc["results"][2]["success"] = "yes"
    path.write_text(json.dumps(doc))
    with pytest.raises(CompareInputError, match=r"pre\.json: result 3: success should be a bool"):
        load(path)


def test_a_utf16_document_from_a_powershell_redirect_is_read(tmp_path: Path) -> None:
    """The check JSON saved as UTF-16 with a BOM (Windows PowerShell's `>`) reads like the UTF-8 original."""
    source = write_check(tmp_path / "utf8.json", round_of())
    utf16 = tmp_path / "utf16.json"
    utf16.write_bytes(source.read_text(encoding="utf-8").encode("utf-16"))
    assert load(utf16).rows == load(source).rows


def test_a_killed_run_is_compared_with_a_note(tmp_path: Path) -> None:
    """A run store that never recorded its end is read up to its last result and the comparison says so."""
    pre = load(write_run(tmp_path / "pre.db", run_of()))
    post = load(write_run(tmp_path / "post.db", run_of(), finish=False))
    c = compare(pre, post)
    assert c.findings == ()
    assert c.notes == ("after: the run did not end cleanly: compared up to its last result",)
