"""Benchmark of the lab: ``lab up``/``lab down`` times, NTLM handshakes/s, MAPI Execute requests/s on one core.

Run ``python bench/bench_lab.py [--duration S] [--clients N] [--connections M] [--quick]``. It starts its own lab
in a temporary folder on its own loopback range, always takes it down, checks that no lab process is left, and
prints tables. Nothing here is a test (pytest only collects ``tests/``).

What is measured, and how:

- ``lab up`` / ``lab down``: wall time of :func:`casprobe.lab.cli.lab_up` / :func:`~casprobe.lab.cli.lab_down`.
- NTLM handshakes: each on a new TCP+TLS connection to one server (full TLS handshake, no resumption):
  ``POST /EWS/Exchange.asmx`` (a GetFolder) with ``Authorization: NTLM`` type 1, the 401 carrying type 2, type 3,
  then the 200 ([MS-NLMP] 3.1.5 over HTTP, protocols.md 5.1). pyspnego is the client, with the user's NT hash
  computed once (as Windows keeps it) so that its pure-Python LM hash does not eat the client core.
- MAPI Execute: keep-alive connections authenticated once (IIS semantics: later requests carry no Authorization),
  one Connect each ([MS-OXCMAPIHTTP] 2.2.4.1), then Execute with a RopLogon ([MS-OXCMAPIHTTP] 2.2.4.2,
  [MS-OXCROPS] 2.2.3.1) in a loop, cookies taken from every response (3.1.5.1: the sequence cookie rotates), the
  whole PROCESSING ... DONE stream read (2.2.7) and X-ResponseCode 0 checked (2.2.3.3.3), in the HTTP headers
  and after DONE.

The lab process (all its threads) and HAProxy are pinned to the first core and the client processes to the
others; CPU time comes from ``/proc/<pid>/stat`` (utime + stime). Names are never resolved: clients connect to the
name's loopback address with SNI and Host set to the name, trusting only the lab CA. Only 127.0.0.0/8 is
contacted and every socket has a timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from labclients import (  # bench/ is on sys.path when this script runs
    CLOCK_TICK_S,
    SETUP_TIMEOUT_S,
    SOCKET_TIMEOUT_S,
    Account,
    BenchError,
    ClientPlan,
    Gate,
    Slot,
    Tally,
    Target,
    Window,
    client_process,
    execute_job,
    handshake_job,
)
from spnego._ntlm_raw.crypto import ntowfv1  # private, as casprobe.lab.ntlmcreds uses it (pyspnego 0.12.4)

from casprobe.errors import CasprobeError
from casprobe.lab.cli import lab_down, lab_up
from casprobe.lab.haproxy import DEFAULT_VDIRS
from casprobe.lab.org import LabConfig, Org, build_org
from casprobe.lab.secrets import PasswordBook

# --------------------------------------------------------------------------- the lab's processes


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of every thread of ``pid`` so far (0 when unknown or gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) * CLOCK_TICK_S


def machine_seconds() -> float:
    """CPU time every core of the machine spent busy so far, stolen time (hypervisor) included."""
    fields = Path("/proc/stat").read_text().partition("\n")[0].split()[1:]
    return sum(int(fields[i]) for i in (0, 1, 2, 5, 6, 7)) * CLOCK_TICK_S  # user nice system irq softirq steal


def cpu_snapshot(lab_pid: int | None, lb_pid: int | None) -> tuple[float, float, float]:
    """CPU seconds so far of the lab process, of HAProxy and of the whole machine."""
    return cpu_seconds(lab_pid), cpu_seconds(lb_pid), machine_seconds()


def pin(pid: int | None, cores: Iterable[int]) -> None:
    """Set the CPU affinity of every thread of ``pid`` (sched_setaffinity(pid) alone moves one thread)."""
    if pid is None:
        raise BenchError("the lab wrote no pid file")
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), set(cores))


def leftovers(folder: Path) -> list[int]:
    """Live (non-zombie) processes whose command line names ``folder`` (the lab daemon: --dir, HAProxy: -f)."""
    marks = (str(folder).encode() + b"\0", str(folder).encode() + b"/")
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            state = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if state != "Z" and any(mark in cmdline for mark in marks):
            found.append(int(entry))
    return found


# --------------------------------------------------------------------------- loads


@dataclass(frozen=True, slots=True)
class Result:
    """One load: what the clients did in the window, and the CPU time the lab and HAProxy spent meanwhile."""

    plan: ClientPlan
    seconds: float
    tally: Tally
    lab_cpu_s: float
    lb_cpu_s: float
    lb_counted: bool  # HAProxy is in the path and shares the lab core
    machine_cpu_s: float  # every process of the machine, and stolen time

    @property
    def other_cpu_s(self) -> float:
        """CPU time that neither the lab, HAProxy nor the clients used: other work on this machine."""
        return max(0.0, self.machine_cpu_s - self.lab_cpu_s - self.lb_cpu_s - self.tally.cpu_s)

    @property
    def name(self) -> str:
        return f"{self.plan.label} ({self.plan.processes}x{self.plan.connections})"

    def percentile_ms(self, q: float) -> float:
        data = sorted(self.tally.latencies)
        return data[min(len(data) - 1, int(q * len(data)))] * 1000 if data else float("nan")

    @property
    def lab_side_cpu_s(self) -> float:
        """CPU time of the lab process, plus HAProxy's when it is in the path and shares the lab core."""
        return self.lab_cpu_s + (self.lb_cpu_s if self.lb_counted else 0.0)

    def ms_per_op(self, cpu_s: float) -> float:
        return 1000 * cpu_s / self.tally.done if self.tally.done else float("nan")


def run_load(plan: ClientPlan, duration: float, warmup: float, folder: Path, *, lb_counted: bool) -> Result:
    """Run the client processes through one window, reading the lab's and HAProxy's CPU time around it."""
    lab_pid, lb_pid = read_pid(folder / "lab.pid"), read_pid(folder / "haproxy" / "haproxy.pid")
    mp = multiprocessing.get_context("fork")
    pipes: list[Connection] = []
    procs: list[multiprocessing.context.ForkProcess] = []
    progress(f"{plan.label}: {plan.processes} x {plan.connections} clients, {duration:g} s ...")
    try:
        for index in range(plan.processes):
            ours, theirs = mp.Pipe()
            procs.append(mp.Process(target=client_process, args=(plan, index, theirs), daemon=True))
            procs[-1].start()
            theirs.close()
            pipes.append(ours)
        deadline = time.monotonic() + SETUP_TIMEOUT_S
        for pipe in pipes:
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise BenchError(f"{plan.label}: clients not set up within {SETUP_TIMEOUT_S:.0f} s")
            pipe.recv()
        start = time.monotonic() + warmup
        window = Window(start, start + duration)
        for pipe in pipes:
            pipe.send(window)
        time.sleep(max(0.0, window.measure_from - time.monotonic()))
        before = cpu_snapshot(lab_pid, lb_pid)
        time.sleep(max(0.0, window.end - time.monotonic()))
        after = cpu_snapshot(lab_pid, lb_pid)
        lab_cpu, lb_cpu, machine = (b - a for a, b in zip(before, after, strict=True))
        total = Tally()
        for pipe in pipes:
            if not pipe.poll(SOCKET_TIMEOUT_S * 4):
                raise BenchError(f"{plan.label}: a client process did not report")
            total.merge(pipe.recv())
        return Result(plan, duration, total, lab_cpu, lb_cpu, lb_counted, machine)
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        for pipe in pipes:
            pipe.close()


def run_loads(folder: Path, org: Org, args: argparse.Namespace, cores: frozenset[int]) -> list[Result]:
    """The loads on the running lab in ``folder``: lab and HAProxy on the first core, clients on the others."""
    ca = folder / "tls" / "ca.pem"
    book = PasswordBook(org, folder)
    accounts = tuple(
        Account(f"{org.netbios}\\{u.alias}", u.legacy_dn, u.mailbox_id, ntowfv1(book.password(u.alias)).hex())
        for u in org.users
    )
    server = org.servers[0]
    direct = Target(server.fqdn, server.address, server.port, ca)
    namespace = Target(org.namespace, org.lb_address, org.config.port, ca)
    lab_core = min(cores)
    clients = cores - {lab_core} or cores
    lab_pid, lb_pid = read_pid(folder / "lab.pid"), read_pid(folder / "haproxy" / "haproxy.pid")
    pin(lab_pid, {lab_core})
    pin(lb_pid, {lab_core})
    n, m = args.clients, args.connections

    def load(label: str, job: Callable[[Slot, Gate], None], target: Target, width: tuple[int, int]) -> ClientPlan:
        return ClientPlan(label, job, target, accounts, width[0], width[1], clients)

    results = []
    for plan, lb_counted in (
        (load(f"NTLM handshake, new TCP+TLS, {direct.name}", handshake_job, direct, (n, m)), False),
        (load(f"MAPI Execute, {direct.name}", execute_job, direct, (1, 1)), False),
        (load(f"MAPI Execute, {direct.name}", execute_job, direct, (n, m)), False),
        (load(f"MAPI Execute, {namespace.name}, HAProxy on core {lab_core}", execute_job, namespace, (n, m)), True),
    ):
        results.append(run_load(plan, args.duration, args.warmup, folder, lb_counted=lb_counted))
    pin(lb_pid, cores)
    plan = load(f"MAPI Execute, {namespace.name}, HAProxy unpinned", execute_job, namespace, (n, m))
    results.append(run_load(plan, args.duration, args.warmup, folder, lb_counted=False))
    return results


@dataclass(frozen=True, slots=True)
class Report:
    """Everything the tables show."""

    org: Org
    cores: frozenset[int]
    ups: tuple[float, ...]
    downs: tuple[float, ...]
    results: tuple[Result, ...]


def run_bench(folder: Path, config: LabConfig, args: argparse.Namespace, cores: frozenset[int]) -> Report:
    """Lab up/down cycles, the loads in the last one; raises BenchError if a lab process survives a lab down."""
    ups: list[float] = []
    downs: list[float] = []
    results: list[Result] = []
    for cycle in range(1, args.cycles + 1):
        started = time.perf_counter()
        org = lab_up(folder, config)
        ups.append(time.perf_counter() - started)
        progress(f"lab up {cycle}/{args.cycles}: {ups[-1]:.2f} s")
        if cycle == args.cycles:
            results = run_loads(folder, org, args, cores)
        started = time.perf_counter()
        lab_down(folder)
        downs.append(time.perf_counter() - started)
        progress(f"lab down {cycle}/{args.cycles}: {downs[-1]:.2f} s")
        if left := leftovers(folder):
            raise BenchError(f"processes still running after lab down: {left}")
    return Report(org, cores, tuple(ups), tuple(downs), tuple(results))


# --------------------------------------------------------------------------- output and main


def progress(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def print_report(report: Report, args: argparse.Namespace) -> None:
    org, cfg, lab_core = report.org, report.org.config, min(report.cores)
    clients = ",".join(str(c) for c in sorted(report.cores - {lab_core} or report.cores))
    print("\ncasprobe lab benchmark")
    print(
        f"  {len(report.cores)} cores: lab process (all threads) and HAProxy pinned to core {lab_core} (HAProxy free"
        f" in the 'unpinned' row); client processes on core(s) {clients}"
    )
    print(
        f"  lab: {len(org.servers)} servers, HAProxy {cfg.lb} on {org.lb_address}:{cfg.port}; health checks in the"
        f" background: {len(DEFAULT_VDIRS)} vdirs x {len(org.servers)} servers every {cfg.check_inter_ms} ms"
    )
    print(f"  each load: {args.warmup:g} s warm-up, then {args.duration:g} s measured; TLS without resumption\n")
    print(f"  {'':<56} {'cycles':>6} {'mean s':>7} {'min s':>7} {'max s':>7}")
    for name, times in (("lab up", report.ups), ("lab down", report.downs)):
        print(f"  {name:<56} {len(times):>6} {statistics.fmean(times):7.2f} {min(times):7.2f} {max(times):7.2f}")
    print(
        f"\n  {'load (processes x connections)':<56} {'ops/s':>6} {'p50 ms':>6} {'p99 ms':>6} {'lab':>4}"
        f" {'HAPrx':>5} {'clnts':>5} {'other':>5} {'lab ms/op':>9} {'clnt ms/op':>10} {'errors':>6}"
    )
    for r in report.results:
        shares = (r.lab_cpu_s, r.lb_cpu_s, r.tally.cpu_s / len(r.plan.cores), r.other_cpu_s)
        pcts = " ".join(f"{100 * s / r.seconds:{w}.0f}%" for s, w in zip(shares, (3, 4, 4, 4), strict=True))
        print(
            f"  {r.name:<56} {r.tally.done / r.seconds:6.0f} {r.percentile_ms(0.5):6.1f} {r.percentile_ms(0.99):6.1f}"
            f" {pcts} {r.ms_per_op(r.lab_side_cpu_s):9.2f} {r.ms_per_op(r.tally.cpu_s):10.2f} {r.tally.errors:6d}"
        )
    print(
        "\n  lab, HAPrx(oxy), clnts (clients): CPU used in the window, % of one core (clients: of all their cores);"
        "\n  other: CPU used by other processes of this machine, or stolen by the hypervisor (% of one core)."
        "\n  lab ms/op: CPU of the lab process per operation, plus HAProxy's when it is in the path on core"
        f" {lab_core}:\n  one lab core serves about 1000 / (lab ms/op) operations per second, whatever limited"
        " this run."
    )
    disturbed = [r.name for r in report.results if r.other_cpu_s / r.seconds > 0.1]
    if disturbed:
        print(f"  DISTURBED: other work used over 10% of a core during: {'; '.join(disturbed)}")
    for r in report.results:
        if r.tally.first_error:
            print(f"  {r.name}: {r.tally.errors} errors, the first: {r.tally.first_error}")
        idle = max(r.lab_cpu_s, r.tally.cpu_s / len(r.plan.cores), 3 * r.other_cpu_s) < 0.7 * r.seconds
        if idle and 35 <= r.percentile_ms(0.5) <= 50:
            print(
                f"  {r.name}: p50 near 40 ms (Linux's delayed-ACK timer) while lab and clients idle:"
                " responses probably wait for delayed ACKs (a socket without TCP_NODELAY)."
            )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark of the casprobe lab (prints numbers; not a test).")
    parser.add_argument("--duration", type=float, default=None, help="seconds per load (default 10; --quick 3)")
    parser.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--connections", type=int, default=4, help="connections per client process (default 4)")
    parser.add_argument("--quick", action="store_true", help="one lab up/down cycle instead of 3, 3 s per load")
    parser.add_argument("--base-address", default="127.0.200.10", help="HAProxy's loopback address; servers follow")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    if not 0.5 <= args.duration <= 120 or not 1 <= args.clients <= 64 or not 1 <= args.connections <= 64:
        parser.error("--duration must be 0.5..120 s, --clients and --connections 1..64")
    args.cycles, args.warmup = (1, 0.5) if args.quick else (3, 1.0)
    return args


def check_free(config: LabConfig) -> None:
    """Fail at once, and clearly, when an address of the lab's range is taken (lab up would wait 45 s)."""
    for address in build_org(config).names().values():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the lab binds: TIME_WAIT is no owner
            try:
                probe.bind((address, config.port))
            except OSError as exc:
                raise BenchError(f"{address}:{config.port} is taken ({exc.strerror}): pick --base-address") from exc


def teardown(folder: Path, *, lab: Path | None = None, name: str = "bench_lab") -> int:
    """Stop the lab in ``lab`` (default: ``folder``) whatever happened, kill (by pid) any of its processes that
    survived, remove ``folder``; 1 when something had to be forced."""
    status, lab = 0, lab or folder
    try:
        lab_down(lab)
    except CasprobeError as exc:
        print(f"{name}: lab down failed: {exc}", file=sys.stderr)
        status = 1
    if left := leftovers(lab):
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        print(f"{name}: lab processes {left} survived lab down and were killed", file=sys.stderr)
        status = 1
    shutil.rmtree(folder, ignore_errors=True)
    return status


def interrupted(signum: int, frame: object) -> None:
    """SIGTERM: stop like Ctrl-C does, through the clean-up."""
    raise KeyboardInterrupt


def guarded_run(
    name: str,
    body: Callable[[Path], object],
    *,
    errors: tuple[type[BaseException], ...] = (CasprobeError, BenchError),
    lab_subdir: str | None = None,
    before_teardown: Callable[[], None] | None = None,
) -> int:
    """Run a benchmark ``body`` in a fresh temporary folder and clean up whatever happens (every bench's main):
    0 done, 1 something failed or had to be forced, 130 interrupted (Ctrl-C or SIGTERM)."""
    signal.signal(signal.SIGTERM, interrupted)
    folder = Path(tempfile.mkdtemp(prefix=f"casprobe-{name.replace('_', '-')}-"))
    status = 0
    try:
        body(folder)
    except errors as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        status = 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        if before_teardown is not None:
            before_teardown()
        lab = folder / lab_subdir if lab_subdir else None
        status = max(status, teardown(folder, lab=lab, name=name))
    return status


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        print("bench_lab: HAProxy is not installed; the lab needs it (apt-get install -y haproxy)", file=sys.stderr)
        return 2
    cores = frozenset(os.sched_getaffinity(0))
    if len(cores) < 2:
        print("bench_lab: one core only: lab and clients share it, the numbers say little", file=sys.stderr)
    config = LabConfig(base_address=args.base_address, port=443 if os.geteuid() == 0 else 8443)

    def body(folder: Path) -> None:
        check_free(config)
        print_report(run_bench(folder, config, args, cores), args)

    return guarded_run("bench_lab", body)


if __name__ == "__main__":
    sys.exit(main())
