"""One round of probes: every target × probe at once, each under its own deadline, never waiting on a dead one.

The probes are synchronous httpx code, so each (target, probe) pair runs in its own thread, started together. Each
gets a deadline of ``time.monotonic() + settings.timeout_s`` that its :class:`~casprobe.net.transport.ProbeClient`
honours; a well-behaved probe therefore returns by itself at its deadline with its own classification and trace.
A probe that has still not returned ``grace_s`` after its deadline (stuck in a call that ignores the deadline)
gets a synthesized result of class ``timeout`` and is **abandoned**: its thread is a daemon thread, nobody joins
it, and it cannot delay the other results, the end of the round, or the exit of the process (blackbox_exporter's
``context.WithTimeout`` in ``prober/handler.go`` does the same for Go probers). An exception escaping a probe is a
bug: it becomes a result of class ``internal`` naming the exception's class (its message is not copied, in case
it quotes something secret; the traceback's frames go to the debug log), so one broken probe cannot sink a run.

One caveat of abandoning: a thread blocked in the system resolver's ``getaddrinfo`` (which has no timeout) lives
in :mod:`casprobe.net.resolve`'s worker pool, and Python joins that pool's threads at interpreter exit. Pinned
names (``--resolve``, profiles, the lab) never go there.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable, Sequence

from casprobe.errors import ConfigError
from casprobe.model import ErrorClass, PhaseTimings, ProbeResult, Severity, Step, Target
from casprobe.net.resolve import Resolver
from casprobe.probes import PROBE_NAMES, ProbeContext, ProbeFn, ProbeSettings, get_probe

__all__ = ["GRACE_S", "available_probes", "load_probes", "run_round"]

_log = logging.getLogger(__name__)

#: How long after its deadline a probe may still deliver its own result before it is declared timed out.
GRACE_S = 1.0

ResultCallback = Callable[[ProbeResult], None]


def available_probes() -> tuple[str, ...]:
    """The probe names (in :data:`PROBE_NAMES` order) whose module can be imported in this installation."""
    found = []
    for name in PROBE_NAMES:
        try:
            get_probe(name)
        except ImportError:
            _log.debug("probe %s is not available (its module does not import)", name)
            continue
        found.append(name)
    return tuple(found)


def load_probes(names: Sequence[str]) -> dict[str, ProbeFn]:
    """The probe functions for ``names``, in :data:`PROBE_NAMES` order; ConfigError for an unknown or absent one."""
    unknown = [name for name in names if name not in PROBE_NAMES]
    if unknown:
        raise ConfigError(f"unknown probe {unknown[0]!r} (probes: {', '.join(PROBE_NAMES)})")
    probes: dict[str, ProbeFn] = {}
    for name in PROBE_NAMES:
        if name not in names:
            continue
        try:
            probes[name] = get_probe(name)
        except ImportError as exc:
            raise ConfigError(f"probe {name!r} is not available in this installation ({exc.name or exc})") from None
    return probes


def _timeout_result(target: Target, probe: str, started_at: float, elapsed: float, timeout_s: float) -> ProbeResult:
    detail = f"no result within the {timeout_s:g} s deadline; the probe was abandoned"
    return _failed(target, probe, started_at, elapsed, ErrorClass.TIMEOUT, detail)


def failed_result(
    target: Target, probe: str, started_mono: float, error_class: ErrorClass, detail: str, *, now: float | None = None
) -> ProbeResult:
    """A result made for a probe that produced none itself (it raised, or was abandoned past its deadline)."""
    now = time.monotonic() if now is None else now
    elapsed = max(0.0, now - started_mono)
    severity = Severity.UNKNOWN if error_class is ErrorClass.INTERNAL else Severity.CRITICAL
    step = Step(name=f"{probe} probe", ok=False, detail=detail, error_class=error_class, duration=elapsed)
    return ProbeResult(
        target=target,
        probe=probe,
        success=False,
        severity=severity,
        error_class=error_class,
        detail=detail,
        started_at=time.time() - elapsed,
        duration=elapsed,
        phases=PhaseTimings(total=elapsed),
        address=target.address,
        steps=(step,),
        started_mono=started_mono,
    )


def _failed(
    target: Target, probe: str, started_at: float, elapsed: float, error_class: ErrorClass, detail: str
) -> ProbeResult:
    return failed_result(target, probe, time.monotonic() - elapsed, error_class, detail)


def _internal_result(target: Target, probe: str, started_at: float, elapsed: float, exc: Exception) -> ProbeResult:
    detail = f"casprobe bug: the {probe} probe raised {type(exc).__name__}"
    return _failed(target, probe, started_at, elapsed, ErrorClass.INTERNAL, detail)


class _Task:
    """One (target, probe) pair of a round: its thread, its deadline, its result once there is one."""

    def __init__(self, index: int, target: Target, name: str, fn: ProbeFn, ctx: ProbeContext) -> None:
        self.index, self.target, self.name, self.fn, self.ctx = index, target, name, fn, ctx
        self.started_at = time.time()
        self.t0 = time.perf_counter()
        self.result: ProbeResult | None = None

    def run(self, done: queue.SimpleQueue[_Task]) -> None:
        try:
            result = self.fn(self.ctx)
            if not isinstance(result, ProbeResult):
                raise TypeError(f"the {self.name} probe returned {type(result).__name__}, not a ProbeResult")
        except Exception as exc:
            frames = "".join(traceback.format_tb(exc.__traceback__))
            _log.debug(
                "the %s probe of %s raised %s (a bug):\n%s", self.name, self.target.display, type(exc).__name__, frames
            )
            result = _internal_result(self.target, self.name, self.started_at, time.perf_counter() - self.t0, exc)
        self.result = result
        done.put(self)


def run_round(
    targets: Sequence[Target],
    probe_names: Sequence[str],
    settings: ProbeSettings,
    resolver: Resolver,
    *,
    grace_s: float = GRACE_S,
    on_result: ResultCallback | None = None,
) -> list[ProbeResult]:
    """Run every probe in ``probe_names`` against every target at once; one result per pair, none missing.

    Results come in a stable order: targets as given, probes in :data:`PROBE_NAMES` order. ``on_result`` (if
    given) is called from this thread with each result as it arrives, synthesized timeouts included. Raises
    ConfigError (before anything runs) for an unknown probe or one whose module is absent.
    """
    probes = load_probes(probe_names)
    done: queue.SimpleQueue[_Task] = queue.SimpleQueue()
    tasks: list[_Task] = []
    for target in targets:
        for name, fn in probes.items():
            ctx = ProbeContext(target, settings, resolver, time.monotonic() + settings.timeout_s)
            task = _Task(len(tasks), target, name, fn, ctx)
            tasks.append(task)
            thread = threading.Thread(
                target=task.run, args=(done,), name=f"casprobe-{name}-{target.display}", daemon=True
            )
            thread.start()
    results: dict[int, ProbeResult] = {}
    while len(results) < len(tasks):
        pending = [task for task in tasks if task.index not in results]
        give_up_at = min(task.ctx.deadline for task in pending) + grace_s
        try:
            task = done.get(timeout=max(0.0, give_up_at - time.monotonic()))
        except queue.Empty:
            now = time.monotonic()
            for late in pending:
                if late.ctx.deadline + grace_s <= now and late.index not in results:
                    _log.warning("the %s probe of %s is past its deadline: abandoned", late.name, late.target.display)
                    elapsed = time.perf_counter() - late.t0
                    results[late.index] = _timeout_result(
                        late.target, late.name, late.started_at, elapsed, settings.timeout_s
                    )
                    if on_result is not None:
                        on_result(results[late.index])
            continue
        if task.index in results or task.result is None:
            continue  # it came back after being declared timed out: the synthesized result stands
        results[task.index] = task.result
        if on_result is not None:
            on_result(task.result)
    return [results[task.index] for task in tasks]
