"""`casprobe serve`'s pure parts: the scrape budget, the slot limit, and the /probe and /metrics texts."""

from __future__ import annotations

import threading
import time

import pytest

from casprobe.model import ErrorClass, PhaseTimings, ProbeResult, Severity, Step, Target
from casprobe.serve import BadRequest, Slots, scrape_timeout
from casprobe.serve_metrics import Scrape, ServeCounters, backend_of, render_process, render_scrape
from casprobe.serve_status import debug_text, status_page


@pytest.mark.parametrize(
    ("header", "module", "offset", "expected"),
    [
        (None, 20.0, 0.5, 20.0),  # no header: 120 s, capped by the module
        ("10", 20.0, 0.5, 9.5),  # header minus offset
        ("10", 5.0, 0.5, 5.0),  # the module's timeout is the cap
        ("0.4", 20.0, 0.5, 0.4),  # the offset would leave nothing: the header itself
        ("", 7.0, 0.5, 7.0),
    ],
)
def test_scrape_budget_is_header_minus_offset_capped_by_the_module(
    header: str | None, module: float, offset: float, expected: float
) -> None:
    """The budget follows blackbox_exporter's getTimeout (with the header itself when the offset eats it)."""
    assert scrape_timeout(header, module, offset) == pytest.approx(expected)


@pytest.mark.parametrize("header", ["ten", "-1", "nan", "inf", "0"])
def test_a_timeout_header_that_is_no_positive_number_is_a_bad_request(header: str) -> None:
    """A malformed X-Prometheus-Scrape-Timeout-Seconds is refused as bad_timeout_header."""
    with pytest.raises(BadRequest) as info:
        scrape_timeout(header, 10.0, 0.5)
    assert info.value.reason == "bad_timeout_header"


def test_slots_bound_the_probes_and_let_a_waiter_in_when_one_frees() -> None:
    """With 2 slots, a 2-probe scrape fills them; another waits, gets in once they are released, and a third
    gives up after its wait; too many waiters are turned away at once."""
    slots = Slots(2)
    assert slots.acquire(2, 0.0, max_waiting=1)
    assert not slots.acquire(1, 0.05, max_waiting=1)
    threading.Timer(0.1, slots.release, args=(2,)).start()
    t0 = time.monotonic()
    assert slots.acquire(1, 2.0, max_waiting=1)
    assert 0.05 < time.monotonic() - t0 < 1.0
    assert slots.used == 1
    assert not slots.acquire(2, 0.0, max_waiting=0)


def _result(probe: str, *, ok: bool, fe: str | None = "MB1", code: int | None = None) -> ProbeResult:
    step = Step("POST /mapi/emsmdb", ok=ok, status_code=200, fe_server=fe, response_code=code)
    return ProbeResult(
        target=Target("mb1.lab.test"),
        probe=probe,
        success=ok,
        severity=Severity.OK if ok else Severity.CRITICAL,
        error_class=None if ok else ErrorClass.PROTOCOL,
        detail="" if ok else 'X-ResponseCode 9 "quoted\nline"',
        duration=0.25,
        phases=PhaseTimings(resolve=0.001, connect=0.002, tls=0.003, auth=(0.01, 0.02), first_byte=0.004, total=0.2),
        fe_server=fe,
        auth_used="NTLM" if ok else "Kerberos-ish",
        steps=(step,),
    )


def _scrape(*results: ProbeResult) -> Scrape:
    return Scrape("outlook", "mb1.lab.test", 1_700_000_000.0, 0.3, 9.5, results, backends=("mb1", "mb2"))


def test_probe_metrics_aggregate_and_per_probe_with_bounded_labels() -> None:
    """probe_success without a label is the AND of the probes; each probe has its own series; backend, auth
    method and error class are state sets over closed values, and no message text reaches a label."""
    text = render_scrape(_scrape(_result("health", ok=True), _result("mapi", ok=False, fe="MB7", code=9)))
    lines = text.splitlines()
    assert "probe_success 0" in lines
    assert 'probe_success{probe="health"} 1' in lines
    assert 'probe_success{probe="mapi"} 0' in lines
    assert 'probe_http_duration_seconds{probe="health",phase="auth"} 0.03' in lines
    assert 'probe_http_status_code{probe="mapi"} 200' in lines
    assert 'casprobe_probe_error{probe="mapi",class="protocol"} 1' in lines
    assert 'casprobe_probe_backend{probe="health",backend="mb1"} 1' in lines
    assert 'casprobe_probe_backend{probe="mapi",backend="other"} 1' in lines
    assert 'casprobe_probe_auth_method{probe="health",method="NTLM"} 1' in lines
    assert 'casprobe_probe_auth_method{probe="mapi",method="none"} 1' in lines
    assert 'casprobe_mapi_response_code{probe="mapi"} 9' in lines
    assert "casprobe_probe_timeout_seconds 9.5" in lines
    for leaked in ("quoted", "Kerberos", "MB7"):
        assert leaked not in text
    assert sum(1 for line in lines if line.startswith("# TYPE probe_success ")) == 1


def test_backend_is_none_without_x_feserver() -> None:
    """A result no answer of which carried X-FEServer has backend none."""
    assert backend_of(_result("health", ok=True, fe=None), ("mb1",)) == "none"


def test_process_metrics_start_every_module_at_zero() -> None:
    """/metrics lists every configured module × outcome (zeros included), the limits and process figures."""
    text = render_process(
        ServeCounters(scrapes=((("a", "success"), 3),), modules=("a", "b"), max_concurrency=4, reloads=())
    )
    lines = text.splitlines()
    assert 'casprobe_serve_scrapes_total{module="a",outcome="success"} 3' in lines
    assert 'casprobe_serve_scrapes_total{module="b",outcome="rejected"} 0' in lines
    assert "casprobe_serve_max_concurrency 4" in lines
    assert any(line.startswith("process_resident_memory_bytes ") for line in lines)


def test_status_page_and_debug_text_escape_and_show_the_trace() -> None:
    """The status page escapes what a server sent (no markup injection) and has no script; debug shows the
    trace, the metrics and the module's settings."""
    scrape = _scrape(_result("mapi", ok=False))
    page = status_page([scrape], {"outlook": {"password": "file /x.pw"}}, {"configuration": "<x>"})
    assert "<script" not in page
    assert "&lt;x&gt;" in page
    assert "POST /mapi/emsmdb" in page
    text = debug_text(scrape, render_scrape(scrape), {"password": "file /x.pw"})
    for part in ("Trace:", "Metrics that would have been returned:", "file /x.pw", "X-FEServer MB1"):
        assert part in text
