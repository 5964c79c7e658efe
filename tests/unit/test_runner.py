"""The runner: every target × probe at once, each under its own deadline, with stable order and no crash."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

import casprobe.runner as runner
from casprobe.errors import ConfigError
from casprobe.model import ErrorClass, ProbeResult, Severity, Target, TargetKind
from casprobe.net.resolve import Resolver
from casprobe.probes import PROBE_NAMES, ProbeContext, ProbeFn, ProbeSettings

TIMEOUT_S = 0.4
GRACE_S = 0.2
TARGETS = (
    Target("outlook.example.test", TargetKind.NAMESPACE, label="namespace"),
    Target("mb1.example.test", label="mb1"),
    Target("mb2.example.test", label="mb2"),
)


def _ok(ctx: ProbeContext, name: str) -> ProbeResult:
    return ProbeResult(ctx.target, name, True, Severity.OK, started_at=time.time())


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Lets hanging fake probes end once the test is over (their threads are daemons either way)."""
    event = threading.Event()
    yield event
    event.set()


def _install(monkeypatch: pytest.MonkeyPatch, fns: dict[str, ProbeFn]) -> None:
    def fake_get_probe(name: str) -> ProbeFn:
        if name not in PROBE_NAMES:
            raise KeyError(name)
        if name not in fns:
            raise ImportError(f"No module named 'casprobe.probes.{name}'", name=f"casprobe.probes.{name}")
        return fns[name]

    monkeypatch.setattr(runner, "get_probe", fake_get_probe)


def _run(probes: list[str]) -> tuple[list[ProbeResult], dict[tuple[str, str], float], float]:
    arrived: dict[tuple[str, str], float] = {}
    started = time.monotonic()

    def note(result: ProbeResult) -> None:
        arrived[(result.target.name, result.probe)] = time.monotonic() - started

    settings = ProbeSettings(timeout_s=TIMEOUT_S)
    results = runner.run_round(TARGETS, probes, settings, Resolver(), grace_s=GRACE_S, on_result=note)
    return results, arrived, time.monotonic() - started


def test_a_hanging_probe_times_out_at_its_deadline_while_the_others_return_at_once(
    monkeypatch: pytest.MonkeyPatch, release: threading.Event
) -> None:
    """A probe stuck past its deadline gets a synthesized timeout result at deadline + grace; the others'
    results arrive immediately, and the round ends without waiting for the stuck thread."""

    def hang(ctx: ProbeContext) -> ProbeResult:
        if ctx.target.label == "mb1":
            release.wait(30)
        return _ok(ctx, "mapi")

    _install(monkeypatch, {"health": lambda ctx: _ok(ctx, "health"), "mapi": hang})
    results, arrived, elapsed = _run(["health", "mapi"])
    stuck = next(r for r in results if r.target.label == "mb1" and r.probe == "mapi")
    assert stuck.error_class is ErrorClass.TIMEOUT
    assert not stuck.success
    assert stuck.severity is Severity.CRITICAL
    assert "deadline" in stuck.detail
    assert TIMEOUT_S + GRACE_S - 0.05 <= elapsed < TIMEOUT_S + GRACE_S + 0.5
    assert stuck.duration >= TIMEOUT_S
    others = [key for key in arrived if key != ("mb1.example.test", "mapi")]
    assert len(others) == 5
    assert all(arrived[key] < 0.2 for key in others), arrived
    assert all(r.success for r in results if r is not stuck)


def test_a_probe_that_raises_becomes_an_internal_result_naming_the_exception_class(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An exception escaping a probe (a bug) is reported as class internal with the exception's class name,
    without its message (which could quote a secret), and the other probes still report."""

    def broken(ctx: ProbeContext) -> ProbeResult:
        raise ZeroDivisionError("secret-looking message")

    _install(monkeypatch, {"health": lambda ctx: _ok(ctx, "health"), "ews": broken})
    results, _, _ = _run(["health", "ews"])
    bad = [r for r in results if r.probe == "ews"]
    assert len(bad) == 3
    for result in bad:
        assert result.error_class is ErrorClass.INTERNAL
        assert result.severity is Severity.UNKNOWN
        assert "ZeroDivisionError" in result.detail
        assert "secret-looking" not in result.detail
        assert result.steps
        assert result.steps[0].error_class is ErrorClass.INTERNAL
    assert all(r.success for r in results if r.probe == "health")


def test_a_probe_returning_something_else_is_internal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe that returns anything but a ProbeResult is a bug, reported as internal (TypeError)."""
    _install(monkeypatch, {"health": lambda ctx: None})  # type: ignore[arg-type,return-value]
    results, _, _ = _run(["health"])
    assert [r.error_class for r in results] == [ErrorClass.INTERNAL] * 3
    assert all("TypeError" in r.detail for r in results)


def test_results_come_targets_as_given_and_probes_in_report_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever order the probes finish and are asked in, results follow the targets' order, then PROBE_NAMES."""

    def slow_first(name: str, delays: dict[str, float]) -> ProbeFn:
        def fn(ctx: ProbeContext) -> ProbeResult:
            time.sleep(delays[ctx.target.label])
            return _ok(ctx, name)

        return fn

    delays = {"namespace": 0.15, "mb1": 0.05, "mb2": 0.0}
    _install(monkeypatch, {name: slow_first(name, delays) for name in PROBE_NAMES})
    results, arrived, _ = _run(list(reversed(PROBE_NAMES)))
    assert [(r.target.label, r.probe) for r in results] == [(t.label, p) for t in TARGETS for p in PROBE_NAMES]
    assert arrived[("mb2.example.test", "health")] < arrived[("outlook.example.test", "health")]


@pytest.mark.parametrize(
    ("probes", "message"),
    [
        (["health", "nonsense"], "unknown probe 'nonsense'"),
        (["mapi"], "probe 'mapi' is not available in this installation"),
    ],
)
def test_unknown_or_absent_probes_are_a_config_error_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch, probes: list[str], message: str
) -> None:
    """An unknown probe name, or one whose module does not import yet, stops the round with a ConfigError."""
    calls: list[str] = []

    def health(ctx: ProbeContext) -> ProbeResult:
        calls.append(ctx.target.name)
        return _ok(ctx, "health")

    _install(monkeypatch, {"health": health})
    with pytest.raises(ConfigError, match=message):
        _run(probes)
    assert calls == []


def test_available_probes_lists_only_importable_ones_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """available_probes() skips probes whose module raises ImportError and keeps PROBE_NAMES order."""
    _install(monkeypatch, {"ews": lambda ctx: _ok(ctx, "ews"), "health": lambda ctx: _ok(ctx, "health")})
    assert runner.available_probes() == ("health", "ews")
