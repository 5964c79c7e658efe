"""Benchmark of ``casprobe watch``: probes per second one core sustains, and the CPU used at 40 probes/s.

Starts its own lab (3 servers, HAProxy; on 127.0.220.10..) pinned to the other cores, pins this process to one
core, and drives the watch's own machinery (:class:`casprobe.watch.Scheduler`, the real run store, the board) with
the real probes: the mix a default ``watch --lab`` runs (health, autodiscover, mapi, ews and the long-lived
mapi-session on the namespace and every server name: 20 rows).

1. **40 probes/s**: the 20 rows every 0.5 s for ``--duration`` seconds: this process's CPU (``getrusage``) as a
   share of one core, CPU ms per probe, slots skipped, and the lab's CPU over the same time.
2. **Sustained rate**: the same rows copied 1, 2, 4 … times at 0.25 s (80, 160, 320 … probes/s offered) until the
   results delivered fall below 95 % of the offered rate or slots start being skipped; the best rate kept is what
   one core sustains (the lab's CPU is printed too: when it nears 100 % of its cores, the lab is the limit).

3. **Machinery only**: 200 trivial rows (no network) every 0.25 s through the scheduler, the store and the board:
   the watch's own cost per probe.

Run from the repository root: ``python bench/bench_watch.py`` (about a minute; ``--duration S`` per step).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from casprobe.lab.cli import lab_down, lab_up
from casprobe.lab.org import LabConfig
from casprobe.model import ProbeResult, RunInfo, Severity, Target
from casprobe.runner import available_probes, load_probes
from casprobe.store import RunStore
from casprobe.targets import CheckOptions, build_plan
from casprobe.watch import Job, Scheduler, probe_deadline, probe_job
from casprobe.watch_session import PROBE as SESSION
from casprobe.watch_session import SessionProbe
from casprobe.watch_view import Board


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its reaped children, from /proc."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return 0.0


def pin(pid: int, cores: set[int]) -> None:
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), cores)


class Counter:
    def __init__(self, store: RunStore, board: Board) -> None:
        self.store, self.board = store, board
        self.results = self.failed = 0

    def __call__(self, result: ProbeResult) -> None:
        self.store.add_result(result)
        self.board.record(result)
        self.results += 1
        self.failed += not result.success


def jobs_for(folder: Path, copies: int) -> tuple[list[Job], list[SessionProbe]]:
    plan = build_plan(CheckOptions(lab=True, lab_dir=folder), available=available_probes(), interactive=False)
    settings, resolver = plan.settings_for(), plan.resolver()
    fns = load_probes(plan.probes)
    jobs: list[Job] = []
    sessions: list[SessionProbe] = []
    for copy in range(copies):
        for base in plan.targets():
            target = replace(base, label=f"{base.display}#{copy}")
            jobs += [probe_job(target, name, fn, settings, resolver) for name, fn in fns.items()]
            session = SessionProbe(target, settings, resolver)
            sessions.append(session)
            jobs.append(Job(target, SESSION, session, abandonable=False))
    return jobs, sessions


def measure(folder: Path, lab_pids: list[int], copies: int, interval: float, duration: float) -> dict[str, float]:
    jobs, sessions = jobs_for(folder, copies)
    with tempfile.TemporaryDirectory(prefix="casprobe-bench-watch-") as tmp:
        info = RunInfo("bench", time.time(), "bench", interval, ("x=y",), (SESSION,))
        store = RunStore.create(Path(tmp) / "run.db", info)
        counter = Counter(store, Board([(j.target, j.probe) for j in jobs]))
        budget = probe_deadline(interval, 20.0)
        scheduler = Scheduler(jobs, interval_s=interval, budget_s=budget, on_result=counter)
        warm = Scheduler(jobs, interval_s=interval, budget_s=budget, on_result=lambda r: None)
        warm.run(duration_s=min(2.0, duration))  # imports, TLS contexts, sessions connected
        cpu, lab_cpu, wall = cpu_seconds(), sum(map(process_cpu, lab_pids)), time.monotonic()
        scheduler.run(duration_s=duration)
        wall = time.monotonic() - wall
        cpu, lab_cpu = cpu_seconds() - cpu, sum(map(process_cpu, lab_pids)) - lab_cpu
        for session in sessions:
            session.close(1.0)
        store.close()
    offered = len(jobs) / interval
    return {
        "rows": len(jobs),
        "offered": offered,
        "delivered": counter.results / wall,
        "failed": counter.failed,
        "skipped": sum(scheduler.skipped().values()),
        "cpu_share": cpu / wall,
        "cpu_ms": 1000 * cpu / max(1, counter.results),
        "lab_share": lab_cpu / wall,
    }


def machinery(duration: float, rows: int = 200, interval: float = 0.25) -> dict[str, float]:
    """The scheduler, store and board alone: ``rows`` trivial probes (no network) every ``interval``."""

    def job(i: int) -> Job:
        target = Target(f"t{i}.example.test", label=f"t{i}")

        def run(deadline: float) -> ProbeResult:
            return ProbeResult(
                target, "trivial", True, Severity.OK, started_at=time.time(), started_mono=time.monotonic()
            )

        return Job(target, "trivial", run)

    jobs = [job(i) for i in range(rows)]
    with tempfile.TemporaryDirectory(prefix="casprobe-bench-watch-") as tmp:
        store = RunStore.create(Path(tmp) / "run.db", RunInfo("bench", time.time(), "bench", interval, (), ()))
        counter = Counter(store, Board([(j.target, j.probe) for j in jobs]))
        scheduler = Scheduler(jobs, interval_s=interval, budget_s=2.0, on_result=counter)
        cpu, wall = cpu_seconds(), time.monotonic()
        scheduler.run(duration_s=duration)
        wall, cpu = time.monotonic() - wall, cpu_seconds() - cpu
        store.close()
    return {
        "rows": rows,
        "offered": rows / interval,
        "delivered": counter.results / wall,
        "failed": counter.failed,
        "skipped": sum(scheduler.skipped().values()),
        "cpu_share": cpu / wall,
        "cpu_ms": 1000 * cpu / max(1, counter.results),
        "lab_share": 0.0,
    }


def show(label: str, m: dict[str, float]) -> None:
    print(
        f"  {label:<14} rows {m['rows']:>4.0f}  offered {m['offered']:>6.0f}/s  delivered {m['delivered']:>6.1f}/s"
        f"  skipped {m['skipped']:>5.0f}  failed {m['failed']:>4.0f}  CPU {100 * m['cpu_share']:>5.1f}% of a core"
        f"  ({m['cpu_ms']:.2f} ms/probe)  lab CPU {100 * m['lab_share']:>5.1f}%"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement (default 8)")
    parser.add_argument("--base-address", default="127.0.220.10", help="HAProxy's loopback address; servers follow")
    parser.add_argument("--max-copies", type=int, default=16, help="stop the sustained-rate search here (16)")
    args = parser.parse_args(argv)
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        print("bench_watch: HAProxy is not installed; the lab needs it", file=sys.stderr)
        return 2
    cores = sorted(os.sched_getaffinity(0))
    mine, theirs = {cores[0]}, set(cores[1:]) or {cores[0]}
    folder = Path(tempfile.mkdtemp(prefix="casprobe-bench-watch-lab-"))
    port = 443 if os.geteuid() == 0 else 8443
    try:
        lab_up(folder, replace(LabConfig(), base_address=args.base_address, port=port))
        lab_pids = [int((folder / name).read_text().strip()) for name in ("lab.pid", "haproxy/haproxy.pid")]
        for pid in lab_pids:
            pin(pid, theirs)
        os.sched_setaffinity(0, mine)
        print(f"casprobe watch benchmark: this process on core {cores[0]}, the lab on {sorted(theirs)}")
        show("40 probes/s", measure(folder, lab_pids, 1, 0.5, args.duration))
        best = peak = 0.0
        copies = 1
        while copies <= args.max_copies:
            m = measure(folder, lab_pids, copies, 0.25, args.duration)
            show(f"x{copies} at 0.25 s", m)
            peak = max(peak, m["delivered"])
            if m["delivered"] < 0.95 * m["offered"] or m["skipped"] > 0.01 * m["offered"] * args.duration:
                break
            best = m["delivered"]
            copies *= 2
        print(f"  sustained: {best:.0f} probes/s kept up with; {peak:.0f} probes/s delivered at most (CPU-bound)")
        show("machinery only", machinery(args.duration))
    finally:
        lab_down(folder)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
