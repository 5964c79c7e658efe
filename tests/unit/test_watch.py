"""`casprobe watch` without a network: the schedule, skipped slots, stopping, the board, the lab tail, the metrics."""

from __future__ import annotations

import io
import json
import os
import signal
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from rich.console import Console

from casprobe.cli import main
from casprobe.cli.watch import _Deliver, _run, _Setup, parse_seconds
from casprobe.errors import ConfigError
from casprobe.model import ErrorClass, LabEventRecord, Marker, PhaseTimings, ProbeResult, RunInfo, Severity, Target
from casprobe.watch import Job, LabTail, Scheduler, parse_lab_event, probe_deadline
from casprobe.watch_metrics import MetricsServer, parse_address, render
from casprobe.watch_view import Board, LiveView, PlainView, ViewHeader

NS = Target("outlook.example.test", label="namespace")
MB1 = Target("mb1.example.test", label="mb1")


class FakeSink:
    """The run store's write side, in memory (a ResultSink)."""

    def __init__(self) -> None:
        self.results: list[ProbeResult] = []
        self.markers: list[Marker] = []
        self.events: dict[int, LabEventRecord] = {}
        self.finished: float | None = None
        self._lock = threading.Lock()

    def add_result(self, result: ProbeResult) -> None:
        with self._lock:
            assert self.finished is None, "a result arrived after finish()"
            self.results.append(result)

    def add_marker(self, marker: Marker) -> None:
        self.markers.append(marker)

    def add_lab_events(self, events: Iterable[LabEventRecord]) -> int:
        new = [e for e in events if e.seq not in self.events]
        self.events.update((e.seq, e) for e in new)
        return len(new)

    def finish(self, ended_at: float) -> None:
        self.finished = ended_at


def _result(target: Target, probe: str, ok: bool = True, error: ErrorClass | None = None) -> ProbeResult:
    now = time.monotonic()
    return ProbeResult(
        target,
        probe,
        ok,
        Severity.OK if ok else Severity.CRITICAL,
        error_class=None if ok else (error or ErrorClass.CONNECT),
        detail="" if ok else "connection refused by 10.0.0.1 for alice",
        started_at=time.time(),
        duration=0.012,
        phases=PhaseTimings(connect=0.001, tls=0.002, first_byte=0.003, total=0.012),
        started_mono=now,
    )


def _recording(target: Target, probe: str, calls: list[float], sleep_s: float = 0.0) -> Job:
    def run(deadline: float) -> ProbeResult:
        calls.append(time.monotonic())
        if sleep_s:
            time.sleep(sleep_s)
        return _result(target, probe)

    return Job(target, probe, run)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Lets stuck fake probes end once the test is over (their threads are daemons either way)."""
    event = threading.Event()
    yield event
    event.set()


def test_slots_start_at_t0_plus_k_intervals_without_cumulative_drift() -> None:
    """Over 40 slots each run starts within a few ms of t0 + offset + k·interval, and the last is as close as
    the first (lateness never accumulates)."""
    calls: list[float] = []
    results: list[ProbeResult] = []
    interval = 0.05
    scheduler = Scheduler(
        [_recording(NS, "health", calls), _recording(MB1, "health", [])],
        interval_s=interval,
        budget_s=1.0,
        on_result=results.append,
    )
    scheduler.run(duration_s=40 * interval - 0.01)
    assert len(calls) == 40
    errors = [at - scheduler.slot_time(0, k) for k, at in enumerate(calls)]
    assert all(0 <= e < 0.010 for e in errors), max(errors)
    assert statistics.median(errors) < 0.003
    assert errors[-1] < 0.010
    assert scheduler.slot_time(1, 0) - scheduler.slot_time(0, 0) == pytest.approx(interval / 2)


def test_a_probe_slower_than_its_interval_never_overlaps_itself_and_others_keep_their_slots() -> None:
    """A probe taking 2.5 intervals runs at slots 0, 3, 6 … with the two slots in between skipped and counted;
    a fast probe beside it runs at every slot."""
    interval = 0.08
    active, peak = [0], [0]
    lock = threading.Lock()
    slow_calls: list[float] = []

    def slow(deadline: float) -> ProbeResult:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        slow_calls.append(time.monotonic())
        time.sleep(2.5 * interval)
        with lock:
            active[0] -= 1
        return _result(NS, "mapi")

    fast_calls: list[float] = []
    scheduler = Scheduler(
        [Job(NS, "mapi", slow), _recording(NS, "health", fast_calls)],
        interval_s=interval,
        budget_s=2.0,
        on_result=lambda r: None,
    )
    scheduler.run(duration_s=12 * interval - 0.01)
    assert peak[0] == 1
    assert len(slow_calls) == 4
    slots = [round((at - scheduler.slot_time(0, 0)) / interval) for at in slow_calls]
    assert slots == [0, 3, 6, 9]
    assert scheduler.skipped()[("namespace", "mapi")] == 8
    assert len(fast_calls) == 12
    assert scheduler.skipped()[("namespace", "health")] == 0


def test_a_probe_that_raises_becomes_an_internal_result() -> None:
    """An exception escaping a probe is an `internal` result naming its class (not its message), not a crash."""

    def broken(deadline: float) -> ProbeResult:
        raise KeyError("secret-value")

    results: list[ProbeResult] = []
    scheduler = Scheduler([Job(MB1, "ews", broken)], interval_s=0.25, budget_s=1.0, on_result=results.append)
    scheduler.run(duration_s=0.6)
    assert len(results) == 3
    assert all(r.error_class is ErrorClass.INTERNAL and r.severity is Severity.UNKNOWN for r in results)
    assert "KeyError" in results[0].detail
    assert "secret-value" not in results[0].detail


def test_a_stuck_probe_is_abandoned_with_a_timeout_after_its_deadline(release: threading.Event) -> None:
    """A stateless probe still running past deadline + grace gets a timeout result, and its next slots run on
    a fresh thread; its late result is dropped."""
    calls: list[float] = []

    def stuck_once(deadline: float) -> ProbeResult:
        calls.append(time.monotonic())
        if len(calls) == 1:
            release.wait(10)
        return _result(NS, "health")

    results: list[ProbeResult] = []
    scheduler = Scheduler(
        [Job(NS, "health", stuck_once)], interval_s=0.25, budget_s=0.3, on_result=results.append, grace_s=0.1
    )
    scheduler.run(duration_s=1.2)
    assert results[0].error_class is ErrorClass.TIMEOUT
    assert "abandoned" in results[0].detail
    assert len(calls) >= 3
    assert all(r.success for r in results[1:])


def test_stop_lets_the_run_in_flight_finish_before_returning() -> None:
    """stop() from another thread ends the schedule; the run in flight still delivers its result first."""
    results: list[ProbeResult] = []
    calls: list[float] = []
    scheduler = Scheduler([_recording(NS, "mapi", calls, 0.3)], interval_s=0.25, budget_s=2.0, on_result=results.append)
    threading.Timer(0.1, scheduler.stop).start()
    started = time.monotonic()
    scheduler.run()
    assert 0.25 < time.monotonic() - started < 1.0
    assert len(calls) == 1
    assert len(results) == 1
    assert results[0].success


def _setup(tmp_path: Path, jobs: list[Job], lab_events: Path | None = None) -> _Setup:
    info = RunInfo("run", time.time(), "0", 0.25, ("namespace=outlook.example.test",), ("health",))
    return _Setup(tmp_path / "run.db", 0.25, None, 1.0, (NS,), tuple(jobs), (), info, lab_events, None)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sigint_or_sigterm_ends_the_watch_cleanly_and_finishes_the_sink(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], signum: int
) -> None:
    """SIGINT (or SIGTERM) during a watch stops scheduling, lets the run in flight land, finishes the sink,
    copies the lab events one last time, restores the signal handlers, and prints where the store is."""
    events = tmp_path / "events.jsonl"
    events.write_text('{"seq":1,"wall":1.5,"mono":2.5,"kind":"lab.up"}\n')
    sink = FakeSink()
    jobs = [_recording(NS, "health", [], 0.2)]
    board = Board([(NS, "health")])
    killer = threading.Timer(0.5, os.kill, (os.getpid(), signum))
    killer.start()
    before = signal.getsignal(signum)
    _run(_setup(tmp_path, jobs, events), sink, board, None)
    assert signal.getsignal(signum) is before
    assert sink.finished is not None
    assert sink.results
    assert all(r.success for r in sink.results)
    assert [e.kind for e in sink.events.values()] == ["lab.up"]
    out = capsys.readouterr().out
    assert f"store: {tmp_path / 'run.db'}" in out


def test_a_failing_store_does_not_end_the_watch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """When storing fails, the watch goes on (board and view still see the result) and the end says how many
    results were lost."""

    class Broken(FakeSink):
        def add_result(self, result: ProbeResult) -> None:
            raise OSError("disk full")

    board = Board([(NS, "health")])
    deliver = _Deliver(Broken(), board, PlainView())
    deliver(_result(NS, "health"))
    deliver(_result(NS, "health"))
    assert deliver.unsaved == 2
    assert board.snapshot()[0].results == 2


def test_the_board_opens_an_outage_at_the_first_failure_and_closes_it_at_the_next_success() -> None:
    """Outage events: one opening (with the first failure's class), none for further failures, one closing with
    the duration from the first failure and the count of failed results."""
    board = Board([(NS, "mapi")])
    assert board.record(_result(NS, "mapi")) is None
    opened = board.record(_result(NS, "mapi", ok=False, error=ErrorClass.TIMEOUT))
    assert opened is not None
    assert opened.opened
    assert opened.error_class == "timeout"
    assert board.record(_result(NS, "mapi", ok=False, error=ErrorClass.CONNECT)) is None
    time.sleep(0.01)
    closed = board.record(_result(NS, "mapi"))
    assert closed is not None
    assert not closed.opened
    assert closed.failures == 2
    assert closed.error_class == "connect"
    assert (closed.duration_s or 0) > 0.005
    row = board.snapshot()[0]
    assert (row.outages, row.results, row.failures, row.open_since) == (1, 4, 2, None)
    assert "outage closed" in closed.line()
    assert "namespace mapi" in closed.line()


def test_the_lab_tail_copies_complete_lines_and_waits_for_a_torn_one(tmp_path: Path) -> None:
    """Complete lines become records (other fields as JSON text); garbage is skipped; a torn last line is read
    once its end arrives."""
    path = tmp_path / "events.jsonl"
    sink = FakeSink()
    tail = LabTail(path, sink)
    assert tail.poll() == 0  # no file yet
    path.write_text(
        '{"seq":1,"wall":10.0,"mono":5.0,"kind":"power.off","server":"mb2","mode":"refuse"}\n'
        "not json\n"
        '{"seq":2,"wall":11.0,"mono":6.0,"kind":"power.on","ser'
    )
    assert tail.poll() == 1
    record = sink.events[1]
    assert (record.kind, json.loads(record.data)) == ("power.off", {"server": "mb2", "mode": "refuse"})
    with path.open("a") as handle:
        handle.write('ver":"mb2"}\n')
    assert tail.poll() == 1
    assert json.loads(sink.events[2].data) == {"server": "mb2"}
    assert parse_lab_event('{"seq":"x","wall":1,"mono":1,"kind":"k"}') is None
    assert parse_lab_event("[1, 2]") is None


def test_metrics_show_bounded_labels_and_never_the_failure_text() -> None:
    """The exposition has probe_success, phases, the error class state set and the outage series; no detail text."""
    board = Board([(NS, "mapi"), (MB1, "mapi-session")])
    board.record(_result(NS, "mapi", ok=False, error=ErrorClass.TIMEOUT))
    text = render(board.snapshot(), tls_verification=False)
    labels = 'target="outlook.example.test",probe="mapi"'
    assert f"probe_success{{{labels}}} 0" in text
    assert f'probe_phase_duration_seconds{{{labels},phase="tls"}} 0.002' in text
    assert f'casprobe_probe_error{{{labels},class="timeout"}} 1' in text
    assert f'casprobe_probe_error{{{labels},class="dns"}} 0' in text
    assert f"casprobe_outage_open{{{labels}}} 1" in text
    assert 'casprobe_outages_total{target="mb1.example.test",probe="mapi-session"} 0' in text
    assert 'probe_success{target="mb1.example.test"' not in text  # no result yet: no gauge
    assert "casprobe_tls_verification_enabled 0" in text
    assert "alice" not in text
    assert "refused" not in text


def test_the_metrics_endpoint_serves_the_board_on_loopback() -> None:
    """GET /metrics on 127.0.0.1 answers 200 with the text format; another path is 404."""
    board = Board([(NS, "health")])
    board.record(_result(NS, "health"))
    server = MetricsServer(board, ("127.0.0.1", 0), tls_verification=True)
    server.start()
    try:
        host, port = server.address
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert 'probe_success{target="outlook.example.test",probe="health"} 1' in body
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://{host}:{port}/other", timeout=5)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("text", "seconds"), [("0.5", 0.5), ("500ms", 0.5), ("1s", 1.0), ("2m", 120.0), ("1h", 3600.0), (".25", 0.25)]
)
def test_durations_accept_plain_seconds_and_units(text: str, seconds: float) -> None:
    """--interval/--duration accept 0.5, 500ms, 1s, 2m, 1h."""
    assert parse_seconds(text, "--interval") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1x", "-1s", "s", "1 2"])
def test_bad_durations_are_config_errors(text: str) -> None:
    """Anything else is a ConfigError naming the option."""
    with pytest.raises(ConfigError, match="--interval"):
        parse_seconds(text, "--interval")


def test_metrics_addresses_need_a_host_and_a_port() -> None:
    """HOST:PORT and [v6]:PORT parse; a bare port or a bad port is a ConfigError."""
    assert parse_address("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_address("[::1]:9464") == ("::1", 9464)
    for bad in ("9464", "127.0.0.1:", "127.0.0.1:99999", ":80"):
        with pytest.raises(ConfigError):
            parse_address(bad)


def test_the_deadline_is_four_intervals_at_least_two_seconds_and_never_above_the_timeout() -> None:
    """probe_deadline = min(timeout, max(4 × interval, 2 s))."""
    assert probe_deadline(0.25, 20.0) == 2.0
    assert probe_deadline(1.0, 20.0) == 4.0
    assert probe_deadline(10.0, 20.0) == 20.0


def _main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["casprobe", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def test_watch_refuses_an_existing_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An existing --store file is refused with a clear message and exit 3, and is left untouched."""
    store = tmp_path / "run.db"
    store.write_bytes(b"precious")
    code, err = _main(monkeypatch, capsys, "watch", "outlook.example.test", "--store", str(store))
    assert code == 3
    assert "already exists" in err
    assert "Traceback" not in err
    assert store.read_bytes() == b"precious"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--interval", "0.1"], "at least 0.25"),
        (["--probe", "mapi-session", "--no-session"], "contradict"),
        (["--probe", "mapi-session"], "needs a mailbox"),
        (["--metrics", "nonsense"], "HOST:PORT"),
    ],
)
def test_watch_refuses_options_that_cannot_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """Bad watch options are one line on stderr and exit 3, before any store is created."""
    store = tmp_path / "run.db"
    code, err = _main(monkeypatch, capsys, "watch", "outlook.example.test", "--store", str(store), *args)
    assert code == 3
    assert message in err
    assert not store.exists()


def test_the_live_view_shows_the_header_and_a_row_per_name_and_probe(tmp_path: Path) -> None:
    """The live view's frame names the store and interval, warns when TLS verification is off, and shows each
    row's state, latency and outage counter."""
    board = Board([(NS, "mapi"), (MB1, "health")])
    board.record(_result(NS, "mapi", ok=False, error=ErrorClass.TIMEOUT))
    console = Console(file=io.StringIO(), width=200, force_terminal=False)
    view = LiveView(board, ViewHeader(tmp_path / "run.db", 0.5, False, time.monotonic()), console)
    console.print(view.render())
    text = console.file.getvalue()
    assert str(tmp_path / "run.db") in text
    assert "every 0.5 s" in text
    assert "TLS verification OFF" in text
    assert "FAIL timeout" in text
    assert "12 ms" in text
    assert "mb1" in text
