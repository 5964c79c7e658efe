"""``casprobe watch``'s scheduler: every name × probe on a fixed, drift-free schedule, results stored as they come.

- **Drift-free**: slot *k* of job *i* starts at ``t0 + offset_i + k × interval`` on the monotonic clock, computed
  from ``t0``, never from the previous slot's end, so that lateness does not accumulate. Jobs are spread over the
  interval (``offset_i = i × interval / jobs``) so that a round is not one burst against the load balancer; each
  job's own slots stay exactly one interval apart.
- **One thread per job** (the "pool": targets × probes, plus one per long-lived session); the scheduler thread
  only hands slots to idle workers, so a slow probe delays no one else.
- **No self-overlap**: when a job's slot comes while its previous run is still going, the slot is **skipped** and
  counted (not a fake result). After a pause of the process (suspend, debugger) the missed slots count as skipped.
- **Deadline** of each run: ``min(settings.timeout_s, max(4 × interval, 2 s))`` (:func:`probe_deadline`). A probe
  that needs longer than four intervals tells the same story as a timeout, and bounding it keeps the timeline
  sharp: a failure is recorded at most four intervals (2 s at least, so TLS + NTLM legs fit at 0.25 s) after its
  slot. A stateless probe still running ``grace_s`` after its deadline (stuck in a call that ignores it) gets a
  synthesized ``timeout`` result and its thread is abandoned, as :mod:`casprobe.runner` does; a long-lived
  session (``abandonable=False``) is never abandoned mid-run, its slots are skipped until it returns.
- **Results** go to ``on_result`` from the worker threads as they arrive (store, live view, metrics); an
  exception escaping a probe becomes an ``internal`` result naming the exception's class, never a crash.
- **Stop** (:meth:`Scheduler.stop`, ``duration_s``, or the CLI's SIGINT/SIGTERM flag polled every 0.1 s): no new
  slot starts; runs in flight get until their deadline + grace, then are abandoned with a timeout result.

The lab's event log (``<lab dir>/events.jsonl``, one JSON object per line) is tailed by :class:`LabTail`.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from casprobe.model import ErrorClass, LabEventRecord, Marker, ProbeResult, Target
from casprobe.net.resolve import Resolver
from casprobe.probes import ProbeContext, ProbeFn, ProbeSettings
from casprobe.runner import failed_result

__all__ = [
    "GRACE_S",
    "MIN_INTERVAL_S",
    "Job",
    "LabTail",
    "ResultSink",
    "Scheduler",
    "failed_result",
    "parse_lab_event",
    "probe_deadline",
    "probe_job",
]

_log = logging.getLogger(__name__)

GRACE_S = 1.0
MIN_INTERVAL_S = 0.25
_POLL_S = 0.1  # how often the scheduler looks at an external stop flag (signal handlers only set a flag)

SlotFn = Callable[[float], ProbeResult]
"""One run of a job: given its deadline (``time.monotonic()``), return its result."""


class ResultSink(Protocol):
    """Where a watch writes (the run store, :class:`casprobe.store.RunStore`; fakes in tests). Thread-safe."""

    def add_result(self, result: ProbeResult) -> None: ...
    def add_marker(self, marker: Marker) -> None: ...
    def add_lab_events(self, events: Iterable[LabEventRecord]) -> int: ...
    def finish(self, ended_at: float) -> None: ...


@dataclass(frozen=True, slots=True)
class Job:
    """One row of the watch: a target, a probe name, and what one slot runs.

    Attributes: target; probe: the probe name of its results; run: one slot; abandonable: a run stuck past its
    deadline may be left behind (False for a long-lived session, which must not be used by two threads).
    """

    target: Target
    probe: str
    run: SlotFn
    abandonable: bool = True

    @property
    def key(self) -> tuple[str, str]:
        return self.target.display, self.probe


def probe_deadline(interval_s: float, timeout_s: float) -> float:
    """Each run's time budget: ``min(timeout_s, max(4 × interval, 2 s))`` (see the module docstring)."""
    return min(timeout_s, max(4.0 * interval_s, 2.0))


def probe_job(target: Target, name: str, fn: ProbeFn, settings: ProbeSettings, resolver: Resolver) -> Job:
    """A stateless probe (``health``, ``mapi`` …) as a job: a fresh :class:`ProbeContext` per slot."""

    def run(deadline: float) -> ProbeResult:
        return fn(ProbeContext(target, settings, resolver, deadline))

    return Job(target, name, run)


class _Worker:
    """The scheduler's view of one job: its next slot, whether a run is in flight, its own thread and inbox."""

    def __init__(self, job: Job, offset: float, deliver: Callable[[ProbeResult], None]) -> None:
        self.job, self.offset, self.deliver = job, offset, deliver
        self.next_k = 0
        self.skipped = 0
        self.busy = False
        self.started = self.deadline = 0.0
        self.generation = 0
        self.lock = threading.Lock()
        self.inbox: queue.SimpleQueue[tuple[float, float] | None] = queue.SimpleQueue()
        self._spawn()

    def _spawn(self) -> None:
        self.inbox = queue.SimpleQueue()
        name = f"casprobe-watch-{self.job.probe}-{self.job.target.display}"
        threading.Thread(target=self._loop, args=(self.inbox, self.generation), name=name, daemon=True).start()

    def _loop(self, inbox: queue.SimpleQueue[tuple[float, float] | None], generation: int) -> None:
        job = self.job
        while (item := inbox.get()) is not None:
            started, deadline = item
            try:
                result = job.run(deadline)
                if not isinstance(result, ProbeResult):
                    raise TypeError(f"the {job.probe} job returned {type(result).__name__}, not a ProbeResult")
            except Exception as exc:
                frames = "".join(traceback.format_tb(exc.__traceback__))
                _log.debug("the %s probe of %s raised %s (a bug):\n%s", job.probe, job.target.display, exc, frames)
                detail = f"casprobe bug: the {job.probe} probe raised {type(exc).__name__}"
                result = failed_result(
                    job.target, job.probe, started, ErrorClass.INTERNAL, detail, now=time.monotonic()
                )
            with self.lock:
                if self.generation != generation:
                    return  # abandoned: a timeout result stands for this run
            self.deliver(result)  # before going idle: results of one row arrive in order
            with self.lock:
                self.busy = False

    def dispatch(self, now: float, budget: float) -> None:
        with self.lock:
            self.busy, self.started, self.deadline = True, now, now + budget
        self.inbox.put((now, now + budget))

    def abandon(self, now: float, budget: float) -> ProbeResult | None:
        """Leave a run stuck past its deadline behind (a fresh thread takes the next slots); its timeout result."""
        with self.lock:
            if not self.busy:
                return None
            self.generation += 1
            self.busy = False
            started = self.started
        self.inbox.put(None)
        self._spawn()
        job = self.job
        _log.warning("the %s probe of %s is past its deadline: abandoned", job.probe, job.target.display)
        detail = f"no result within the {budget:g} s deadline; the probe was abandoned"
        return failed_result(job.target, job.probe, started, ErrorClass.TIMEOUT, detail, now=now)

    def close(self) -> None:
        self.inbox.put(None)


class Scheduler:
    """Runs ``jobs`` every ``interval_s`` until stopped (see the module docstring)."""

    def __init__(
        self,
        jobs: Sequence[Job],
        *,
        interval_s: float,
        budget_s: float,
        on_result: Callable[[ProbeResult], None],
        grace_s: float = GRACE_S,
        stagger: bool = True,
    ) -> None:
        if interval_s <= 0 or budget_s <= 0:
            raise ValueError("interval and deadline must be positive")
        self.interval, self.budget, self.grace = interval_s, budget_s, grace_s
        self._on_result = on_result
        self._stop = threading.Event()
        self.t0 = 0.0
        count = max(1, len(jobs))
        self._workers = [
            _Worker(job, (i * interval_s / count) if stagger else 0.0, on_result) for i, job in enumerate(jobs)
        ]

    def slot_time(self, job_index: int, k: int) -> float:
        """When slot ``k`` of job ``job_index`` starts (monotonic), once :meth:`run` has set ``t0``."""
        return self.t0 + self._workers[job_index].offset + k * self.interval

    def skipped(self) -> dict[tuple[str, str], int]:
        return {w.job.key: w.skipped for w in self._workers}

    def stop(self) -> None:
        """Stop scheduling (thread-safe; not from a signal handler: use ``run(stop_flag=…)`` there)."""
        self._stop.set()

    def run(self, *, duration_s: float | None = None, stop_flag: Callable[[], bool] | None = None) -> None:
        """Schedule until :meth:`stop`, ``duration_s`` or ``stop_flag()``; then wait for (or abandon) runs in flight."""
        self.t0 = time.monotonic()
        end = None if duration_s is None else self.t0 + duration_s
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if (end is not None and now >= end) or (stop_flag is not None and stop_flag()):
                    break
                due = min(self.t0 + w.offset + w.next_k * self.interval for w in self._workers)
                if due > now:
                    limit = due - now if end is None else min(due, end) - now
                    self._stop.wait(min(limit, _POLL_S) if stop_flag is not None else limit)
                    continue
                for worker in self._workers:
                    if self.t0 + worker.offset + worker.next_k * self.interval <= now:
                        self._slot(worker, now)
        finally:
            self._drain()

    def _slot(self, worker: _Worker, now: float) -> None:
        behind = int((now - (self.t0 + worker.offset + worker.next_k * self.interval)) // self.interval)
        worker.skipped += behind  # slots missed while the whole process stood still
        worker.next_k += behind + 1
        with worker.lock:
            busy, overdue = worker.busy, worker.busy and now > worker.deadline + self.grace
        if busy and overdue and worker.job.abandonable:
            late = worker.abandon(now, self.budget)
            if late is not None:
                self._on_result(late)
            busy = False
        if busy:
            worker.skipped += 1
            return
        worker.dispatch(now, self.budget)

    def _drain(self) -> None:
        """Let runs in flight finish until their deadline + grace; abandon the rest with a timeout result."""
        for worker in self._workers:
            with worker.lock:
                until = worker.deadline + self.grace if worker.busy else 0.0
            while time.monotonic() < until:
                with worker.lock:
                    if not worker.busy:
                        break
                time.sleep(0.01)
            late = worker.abandon(time.monotonic(), self.budget)
            if late is not None:
                self._on_result(late)
            worker.close()


def parse_lab_event(line: str) -> LabEventRecord | None:
    """One line of the lab's event log as a record (its other fields as JSON text), or None if unusable."""
    try:
        raw = json.loads(line)
        if not isinstance(raw, dict):
            return None
        data = {k: v for k, v in raw.items() if k not in ("seq", "wall", "mono", "kind")}
        return LabEventRecord(
            int(raw["seq"]), float(raw["wall"]), float(raw["mono"]), str(raw["kind"]), json.dumps(data)
        )
    except (ValueError, KeyError, TypeError):
        return None


class LabTail:
    """Copies new lines of ``events.jsonl`` into the sink every ``period_s`` (a torn last line waits for its end)."""

    def __init__(self, path: Path, sink: ResultSink, *, period_s: float = 1.0, max_read: int = 1 << 20) -> None:
        self.path, self.sink, self.period, self.max_read = path, sink, period_s, max_read
        self.offset = 0
        self.copied = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="casprobe-watch-lab-events", daemon=True)

    def poll(self) -> int:
        """Read what was appended since the last poll; returns how many new events the sink took."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read(self.max_read)
        except OSError:
            return 0
        end = chunk.rfind(b"\n") + 1
        if end == 0 and len(chunk) >= self.max_read:
            end = len(chunk)  # one line longer than the cap: not an event, skip it
        self.offset += end
        lines = chunk[:end].decode("utf-8", errors="replace").splitlines()
        records = [r for r in map(parse_lab_event, lines) if r is not None]
        if not records:
            return 0
        added = self.sink.add_lab_events(records)
        self.copied += added
        return added

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.poll()
            except Exception as exc:  # a store failure must not end the tail, nor the watch
                _log.warning("copying lab events failed: %s", type(exc).__name__)

    def start(self) -> None:
        self.poll()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.poll()
