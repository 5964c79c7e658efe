"""Benchmark of ``casprobe serve`` (issue 7, done-when 4): probes per second it sustains under concurrent scrapes,
and its memory after an hour-equivalent of scrapes.

Run ``python bench/bench_serve.py [--quick]`` from the repository root (about 4 minutes; ``--quick`` about 1). It
starts one lab of its own (``--base-address``, default 127.0.220.10: HAProxy and the namespace there, mb1-mb3
after it), pins the lab, HAProxy and this process (its scraper threads) to the first core and ``python -m casprobe
serve`` (all its threads) to the second, and always takes everything down again (Ctrl-C and SIGTERM included).
serve's configuration is built from the lab's ``profile.toml`` as tests/lab/test_serve.py builds it: modules
``health`` (probe health) and ``outlook_mapi`` (probe mapi, NTLM/Negotiate as the lab offers) allowed on the
namespace and every server; max_concurrency is serve's default unless ``--max-concurrency`` says otherwise.
Every scrape is ``GET /probe?module=M&target=T`` with ``X-Prometheus-Scrape-Timeout-Seconds: 10`` (Prometheus's
default scrape timeout) on a new connection (serve speaks HTTP/1.0). Nothing here is a test.

1. Memory over an hour-equivalent (run first, on the fresh serve process, so that nothing else warmed it and a
   leak cannot hide in memory freed by the heavier loads): a deployment scrapes every (target, module) every 30 s,
   so an hour is 120 scrapes per pair; ``--hours H`` hours of them (4 targets x 2 modules x 120 x H: 10 by
   default, 1 with --quick) run in round-robin order by ``--memory-scrapers`` threads as fast as serve answers.
   serve's VmRSS (/proc/PID/status) and its own process_resident_memory_bytes, process_threads and
   process_open_fds (/metrics) are sampled before the first scrape, after each quarter and at the end. The first
   quarter is warm-up (imports, TLS contexts, glibc arenas, the status page's 100-scrape ring buffer filling);
   memory is called flat when VmRSS grows by less than FLAT_LIMIT_KB from the 25% sample to the end: over 10 h
   that catches anything kept per scrape above ~290 bytes, over 1 h above ~2.9 KB.
2. Throughput (printed first): for each module and K concurrent scrapers (each looping over all targets, from
   different starts), a warm-up then a measured window: answers and probes run per second, latency p50/p95 of
   the scrapes that probed, failed scrapes (probe_success 0, with their error classes), HTTP errors, rejected
   scrapes (the increase of casprobe_serve_rejected_scrapes_total), and CPU (utime + stime from /proc) of serve,
   of the lab + HAProxy and of this process, in % of one core. With max_concurrency 16 (serve's default on two
   cores) K=128 exceeds what serve lets in (16 probing + 4 x 16 waiting): the excess is answered at once as a
   timeout and counted as rejected, not queued.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from bench_lab import check_free, cpu_seconds, guarded_run, machine_seconds, pin, read_pid  # bench/ is on sys.path
from labclients import BenchError

from casprobe.errors import CasprobeError
from casprobe.lab.cli import lab_up
from casprobe.lab.org import LabConfig, Org
from casprobe.serve_config import DEFAULT_TIMEOUT_OFFSET_S

ROOT = Path(__file__).resolve().parents[1]
MODULES = {"health": ("health",), "outlook_mapi": ("mapi",)}
SCRAPE_TIMEOUT_HEADER = {"X-Prometheus-Scrape-Timeout-Seconds": "10"}
SCRAPES_PER_HOUR = 120  # one every 30 s
FLAT_LIMIT_KB = 2048  # VmRSS growth from the 25% sample to the end that still counts as flat
HTTP_TIMEOUT_S = 30.0
#: The deadline a scrape rejected for want of a probe slot reports (casprobe.serve: the whole budget, header minus
#: timeout_offset); a scrape that probed reports less (the runner's grace comes off it).
REJECTED_DEADLINE_S = float(SCRAPE_TIMEOUT_HEADER["X-Prometheus-Scrape-Timeout-Seconds"]) - DEFAULT_TIMEOUT_OFFSET_S
_DEADLINE = re.compile(r"^casprobe_probe_timeout_seconds (\S+)$", re.M)
_SUCCESS = re.compile(r"^probe_success (\S+)$", re.M)
_ERROR_CLASS = re.compile(r'^casprobe_probe_error\{probe="[^"]*",class="([a-z_]+)"\} 1$', re.M)


def progress(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- serve as a subprocess


class Serve:
    """A ``casprobe serve`` subprocess pinned to one core, reached over plain HTTP on loopback."""

    def __init__(self, config: Path, log: Path, core: int) -> None:
        self._log = log.open("wb")
        self.log_path = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "casprobe", "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the bench only; the bench stops serve
            preexec_fn=lambda: os.sched_setaffinity(0, {core}),  # before exec: every thread of serve inherits it
        )
        SERVES.append(self)  # stopped at the end whatever happens, even a Ctrl-C before the line below
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30.0)
        line = self.proc.stdout.readline().decode("utf-8", "replace") if ready else ""
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if match is None:
            self.stop()
            raise BenchError(f"casprobe serve did not start: {line.strip()!r}; log: {self.log_tail()}")
        self.port = int(match.group(1))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT_S)
        try:
            conn.request("GET", path, headers=headers or {})
            answer = conn.getresponse()
            return answer.status, answer.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def metrics(self) -> dict[str, float]:
        status, text = self.get("/metrics")
        if status != 200:
            raise BenchError(f"/metrics answered {status}")
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] != "#"}

    def vm_kb(self, key: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise BenchError(f"no {key} for serve (pid {self.pid})")

    def pinned_to(self) -> set[int]:
        cores: set[int] = set()
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            with contextlib.suppress(OSError):
                cores |= os.sched_getaffinity(int(tid))
        return cores

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-5:])
        return "(no log)"

    def stop(self) -> None:
        """SIGTERM (serve stops gracefully), then SIGKILL after 10 s; by pid only."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


SERVES: list[Serve] = []  # every serve started, stopped at the end whatever happened


def serve_config(lab: Path, org: Org, max_concurrency: int | None) -> str:
    """The prober's configuration, from the lab's profile.toml (the mailbox and its password file reference)."""
    profile = tomllib.loads((lab / "profile.toml").read_text(encoding="utf-8"))
    box = profile["mailbox"]
    names = [org.namespace, *(server.fqdn for server in org.servers)]
    lines = [f"max_concurrency = {max_concurrency}"] if max_concurrency else []
    lines += [
        f"namespace = {json.dumps(org.namespace)}",
        f"targets = {json.dumps(names)}",
        f"port = {org.config.port}",
        "[resolve]",
        *(f"{json.dumps(name)} = {json.dumps(address)}" for name, address in org.names().items()),
        "[modules.health]",
        'probes = ["health"]',
        f"ca_file = {json.dumps(profile['ca_file'])}",
        "timeout = 15",
        "[modules.outlook_mapi]",
        'probes = ["mapi"]',
        f"mailbox = {json.dumps(box['smtp'])}",
        f"user = {json.dumps(box['user'])}",
        f"password_file = {json.dumps(box['password_file'])}",
        f"ca_file = {json.dumps(profile['ca_file'])}",
        "timeout = 15",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- scraping


@dataclass(frozen=True, slots=True)
class Done:
    """One scrape: when it ended (monotonic), how long it took, and how it went."""

    ended: float
    seconds: float
    outcome: str  # ok | failed (probed, probe_success 0) | rejected (no slot: not probed) | error (no 200)
    detail: str = ""  # the error class(es) of a failed scrape, or the HTTP problem


def scrape(serve: Serve, module: str, target: str) -> Done:
    t0 = time.monotonic()
    path = "/probe?" + urlencode({"module": module, "target": target})
    try:
        status, text = serve.get(path, SCRAPE_TIMEOUT_HEADER)
    except (OSError, http.client.HTTPException) as exc:
        return Done(time.monotonic(), time.monotonic() - t0, "error", f"{type(exc).__name__}: {exc}"[:120])
    t1 = time.monotonic()
    match = _SUCCESS.search(text) if status == 200 else None
    if match is None:
        return Done(t1, t1 - t0, "error", f"HTTP {status}: {text[:100]!r}")
    if float(match.group(1)) == 1:
        return Done(t1, t1 - t0, "ok")
    deadline = _DEADLINE.search(text)
    if deadline is not None and abs(float(deadline.group(1)) - REJECTED_DEADLINE_S) < 1e-6:
        return Done(t1, t1 - t0, "rejected", "no probe slot")
    return Done(t1, t1 - t0, "failed", ",".join(sorted(set(_ERROR_CLASS.findall(text)))) or "?")


@dataclass(frozen=True, slots=True)
class Cpu:
    """CPU seconds so far of serve, the lab, HAProxy, this process and the machine; serve's rejected counter."""

    serve: float
    lab: float
    haproxy: float
    bench: float
    machine: float
    rejected: float

    @staticmethod
    def now(serve: Serve, lab_pid: int | None, lb_pid: int | None) -> Cpu:
        rejected = serve.metrics().get("casprobe_serve_rejected_scrapes_total", float("nan"))
        return Cpu(
            cpu_seconds(serve.pid),
            cpu_seconds(lab_pid),
            cpu_seconds(lb_pid),
            cpu_seconds(os.getpid()),
            machine_seconds(),
            rejected,
        )

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(*(a - b for a, b in zip(self.fields(), other.fields(), strict=True)))

    def fields(self) -> tuple[float, ...]:
        return (self.serve, self.lab, self.haproxy, self.bench, self.machine, self.rejected)


@dataclass(frozen=True, slots=True)
class Load:
    """One measured window of K scrapers on one module."""

    module: str
    scrapers: int
    seconds: float
    done: tuple[Done, ...]
    cpu: Cpu

    def count(self, outcome: str) -> int:
        return sum(d.outcome == outcome for d in self.done)

    @property
    def probed(self) -> tuple[Done, ...]:
        """Scrapes that ran their probes (not rejected, answered with metrics)."""
        return tuple(d for d in self.done if d.outcome in ("ok", "failed"))

    @property
    def scrapes_per_s(self) -> float:
        return len(self.done) / self.seconds

    @property
    def probes_per_s(self) -> float:
        return len(self.probed) * len(MODULES[self.module]) / self.seconds

    def pct(self, cpu_s: float) -> float:
        return 100 * cpu_s / self.seconds

    def latency_ms(self, q: float) -> float:
        data = sorted(d.seconds for d in self.probed)
        return 1000 * data[min(len(data) - 1, int(q * len(data)))] if data else float("nan")

    @property
    def lab_pct(self) -> float:
        return self.pct(self.cpu.lab + self.cpu.haproxy)

    @property
    def lab_core_pct(self) -> float:
        return self.lab_pct + self.pct(self.cpu.bench)

    @property
    def other_pct(self) -> float:
        c = self.cpu
        return self.pct(max(0.0, c.machine - c.serve - c.lab - c.haproxy - c.bench))

    @property
    def limit(self) -> str:
        if self.pct(self.cpu.serve) >= 90:
            return "serve"
        if self.lab_core_pct >= 90:
            return "lab core"
        return "-"

    def problems(self) -> str:
        seen = collections.Counter(f"{d.outcome}: {d.detail}" for d in self.done if d.outcome in ("failed", "error"))
        notes = [f"{n} x {what}" for what, n in seen.most_common(3)]
        if abs(self.count("rejected") - self.cpu.rejected) > self.scrapers + 0.02 * self.cpu.rejected:  # edges
            notes.append(f"{self.count('rejected')} answers looked rejected, the counter says {self.cpu.rejected:.0f}")
        return "; ".join(notes)


def run_load(
    serve: Serve, targets: list[str], module: str, scrapers: int, warmup: float, duration: float, pids: tuple[int, int]
) -> Load:
    """K threads scraping ``module`` over ``targets`` in a loop; what ended inside the measured window counts."""
    stop = threading.Event()
    done: list[Done] = []

    def scraper(index: int) -> None:
        n = index
        while not stop.is_set():
            done.append(scrape(serve, module, targets[n % len(targets)]))
            n += 1

    threads = [threading.Thread(target=scraper, args=(i,), daemon=True) for i in range(scrapers)]
    progress(f"{module}: {scrapers} scraper(s), {warmup:g} s warm-up + {duration:g} s measured ...")
    try:
        for thread in threads:
            thread.start()
        time.sleep(warmup)
        before, t0 = Cpu.now(serve, *pids), time.monotonic()
        time.sleep(duration)
        after, t1 = Cpu.now(serve, *pids), time.monotonic()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=HTTP_TIMEOUT_S + 5)
    window = tuple(d for d in done if t0 <= d.ended <= t1)
    return Load(module, scrapers, t1 - t0, window, after - before)


# --------------------------------------------------------------------------- the hour-equivalent


@dataclass(frozen=True, slots=True)
class Sample:
    """serve's memory after ``scrapes`` scrapes of the hour-equivalent."""

    label: str
    scrapes: int
    elapsed: float
    vm_rss_kb: int
    metric_rss: float  # process_resident_memory_bytes
    threads: float
    fds: float


@dataclass(slots=True)
class Hour:
    """The hour-equivalent run: its samples and tallies."""

    total: int
    scrapers: int
    samples: list[Sample] = field(default_factory=list)
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    problems: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    serve_cpu_s: float = 0.0
    hwm_kb: int = 0
    started: float = 0.0  # time.monotonic() at the start sample
    after: Sample | None = None  # after the throughput loads

    @property
    def seconds(self) -> float:
        return self.samples[-1].elapsed

    @property
    def growth_kb(self) -> int:
        """VmRSS growth from the 25% sample (after warm-up) to the end."""
        return self.samples[-1].vm_rss_kb - self.samples[1].vm_rss_kb

    @property
    def flat(self) -> bool:
        return self.growth_kb < FLAT_LIMIT_KB


def sample(serve: Serve, label: str, scrapes: int, t0: float) -> Sample:
    m = serve.metrics()
    rss = serve.vm_kb()
    return Sample(
        label,
        scrapes,
        time.monotonic() - t0,
        rss,
        m.get("process_resident_memory_bytes", float("nan")),
        m.get("process_threads", float("nan")),
        m.get("process_open_fds", float("nan")),
    )


def hour_equivalent(serve: Serve, targets: list[str], hours: int, scrapers: int) -> Hour:
    """120 x ``hours`` scrapes of every (target, module), round-robin, by ``scrapers`` threads; memory sampled at
    the start, after each quarter and at the end."""
    jobs = [(module, target) for _ in range(SCRAPES_PER_HOUR * hours) for module in MODULES for target in targets]
    hour = Hour(len(jobs), scrapers)
    progress(f"hour-equivalent x{hours}: {len(jobs)} scrapes by {scrapers} scrapers ...")
    cond = threading.Condition()
    state = {"next": 0, "done": 0}
    stop = threading.Event()

    def scraper() -> None:
        while not stop.is_set():
            with cond:
                if state["next"] >= len(jobs):
                    return
                module, target = jobs[state["next"]]
                state["next"] += 1
            result = scrape(serve, module, target)
            with cond:
                state["done"] += 1
                hour.outcomes[result.outcome] += 1
                if result.outcome != "ok":
                    hour.problems[f"{module} {result.outcome}: {result.detail}"] += 1
                hour.latencies.append(result.seconds)
                cond.notify_all()

    t0 = hour.started = time.monotonic()
    hour.samples.append(sample(serve, "start", 0, t0))
    cpu0 = cpu_seconds(serve.pid)
    threads = [threading.Thread(target=scraper, daemon=True) for _ in range(scrapers)]
    try:
        for thread in threads:
            thread.start()
        for quarter in (1, 2, 3, 4):
            mark = len(jobs) * quarter // 4
            with cond:
                if not cond.wait_for(lambda: state["done"] >= mark, timeout=600):  # noqa: B023 (mark is current)
                    raise BenchError(f"hour-equivalent stuck at {state['done']} of {len(jobs)} scrapes")
                reached = state["done"]
            hour.samples.append(sample(serve, f"{25 * quarter}%" if quarter < 4 else "end", reached, t0))
            progress(f"  {reached}/{len(jobs)} scrapes, VmRSS {hour.samples[-1].vm_rss_kb / 1024:.1f} MiB")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=HTTP_TIMEOUT_S + 5)
    hour.serve_cpu_s = cpu_seconds(serve.pid) - cpu0
    hour.hwm_kb = serve.vm_kb("VmHWM")
    return hour


# --------------------------------------------------------------------------- output


def print_report(
    args: argparse.Namespace, org: Org, cores: tuple[int, int], max_conc: float, loads: list[Load], hour: Hour
) -> None:
    lab_core, serve_core = cores
    print("\ncasprobe serve benchmark (issue 7, done-when 4)")
    print(
        f"  core {lab_core}: the lab ({len(org.servers)} servers) + HAProxy + this process (scraper threads);"
        f" core {serve_core}: casprobe serve (all threads).\n  targets: {org.namespace},"
        f" {', '.join(s.fqdn for s in org.servers)}; modules: health [health], outlook_mapi [mapi];"
        f"\n  max_concurrency {max_conc:g}; each scrape on a new connection with X-Prometheus-Scrape-Timeout-Seconds:"
        f" 10 (budget {REJECTED_DEADLINE_S:g} s)."
    )
    window = f"{args.warmup:g} s warm-up, {args.duration:g} s window"
    print(f"\n1. Throughput: K scrapers, each looping over all targets; {window}")
    print(
        f"  {'module':<13} {'K':>3} {'scrapes/s':>9} {'probes/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'failed':>6}"
        f" {'errors':>6} {'rejected':>8} {'serve':>5} {'lab':>4} {'scrp':>4} {'other':>5}  limit"
    )
    for r in loads:
        cpu = (r.pct(r.cpu.serve), r.lab_pct, r.pct(r.cpu.bench), r.other_pct)
        print(
            f"  {r.module:<13} {r.scrapers:>3} {r.scrapes_per_s:9.1f} {r.probes_per_s:8.1f} {r.latency_ms(0.5):7.1f}"
            f" {r.latency_ms(0.95):7.1f} {r.count('failed'):>6} {r.count('error'):>6} {r.cpu.rejected:>8.0f}"
            f" {cpu[0]:4.0f}% {cpu[1]:3.0f}% {cpu[2]:3.0f}% {cpu[3]:4.0f}%  {r.limit}"
        )
    print(
        "  scrapes/s: answers in the window per second; probes/s: probes that ran (rejected scrapes run none; one"
        "\n  probe per module); p50/p95: latency of the scrapes that probed; failed: probed, probe_success 0;"
        "\n  errors: no 200 with metrics; rejected: increase of casprobe_serve_rejected_scrapes_total (no slot in"
        f"\n  time, answered as timeout). CPU in % of one core: serve (core {serve_core}); lab = lab + HAProxy and"
        f"\n  scrp = this process (both core {lab_core}); other = the rest of the machine (other processes, steal);"
        "\n  limit: the core that was >= 90% busy, if any."
    )
    for r in loads:
        if r.problems():
            print(f"  {r.module} K={r.scrapers}: {r.problems()}")
        if r.other_pct > 10:
            print(f"  DISTURBED: other work used {r.other_pct:.0f}% of a core during {r.module} K={r.scrapers}")
    print(
        f"\n2. Memory over {hour.total} scrapes = {args.hours} hour(s) of {len(org.servers) + 1} targets x"
        f" {len(MODULES)} modules every 30 s, by {hour.scrapers} scrapers in {hour.seconds:.1f} s (run first)"
    )
    head = ("sample", "scrapes", "elapsed s", "VmRSS MiB", "metric MiB", "threads", "fds")
    print("  " + " ".join(f"{h:<8}" if i == 0 else f"{h:>{len(h)}}" for i, h in enumerate(head)))
    for s in [*hour.samples, *([hour.after] if hour.after else [])]:
        print(
            f"  {s.label:<8} {s.scrapes:>7} {s.elapsed:9.1f} {s.vm_rss_kb / 1024:9.1f} {s.metric_rss / 2**20:10.1f}"
            f" {s.threads:7.0f} {s.fds:4.0f}"
        )
    per = 1024 * hour.growth_kb / max(1, hour.samples[-1].scrapes - hour.samples[1].scrapes)
    last_half = hour.samples[-1].vm_rss_kb - hour.samples[2].vm_rss_kb
    print(
        "  start: serve up, 2 check scrapes done; after: once the throughput loads (section 1) are over; metric:"
        "\n  serve's process_resident_memory_bytes; threads, fds: its process_threads, process_open_fds."
        f"\n  VmRSS peak (VmHWM) {hour.hwm_kb / 1024:.1f} MiB; growth 25% -> end {hour.growth_kb:+d} KiB"
        f" ({per:+.0f} B/scrape; last half {last_half:+d} KiB):\n  {'FLAT' if hour.flat else 'GROWING'}"
        f" (flat: VmRSS grows < {FLAT_LIMIT_KB} KiB from the 25% sample to the end)"
        f"\n  outcomes: {dict(hour.outcomes)}; {hour.total / hour.seconds:.1f} scrapes/s (p50"
        f" {1000 * statistics.median(hour.latencies):.0f} ms), serve CPU"
        f" {100 * hour.serve_cpu_s / hour.seconds:.0f}%, {1000 * hour.serve_cpu_s / hour.total:.1f} ms CPU/scrape"
    )
    for what, n in hour.problems.most_common(3):
        print(f"  {n} x {what}")
    print_summary(args, loads, hour)


def print_summary(args: argparse.Namespace, loads: list[Load], hour: Hour) -> None:
    summary = ["casprobe bench_serve summary (one serve core)"]
    for module in MODULES:
        rows = [r for r in loads if r.module == module]
        best = max(rows, key=lambda r: r.probes_per_s)
        rates = ", ".join(f"K={r.scrapers} {r.probes_per_s:.0f}" for r in rows)
        summary.append(f"  {module:<13} probes/s: {rates}")
        summary.append(
            f"  {'':<13} sustained {best.probes_per_s:.0f} probes/s at K={best.scrapers} (p50"
            f" {best.latency_ms(0.5):.0f} ms, p95 {best.latency_ms(0.95):.0f} ms, serve CPU"
            f" {best.pct(best.cpu.serve):.0f}%, limit {best.limit})"
        )
    bad = sum(r.count("failed") + r.count("error") for r in loads)
    rejected = ", ".join(f"{r.module} K={r.scrapers}: {r.cpu.rejected:.0f}" for r in loads if r.cpu.rejected)
    summary.append(f"  throughput windows: {bad} failed/errored scrapes; rejected: {rejected or 'none'}")
    first, warm, end = hour.samples[0], hour.samples[1], hour.samples[4]
    summary.append(
        f"  {hour.total} scrapes ({args.hours} h-equivalent) in {hour.seconds:.0f} s: VmRSS"
        f" {first.vm_rss_kb / 1024:.1f} -> {warm.vm_rss_kb / 1024:.1f} (25%) -> {end.vm_rss_kb / 1024:.1f} MiB (end)"
    )
    summary.append(f"  {'':<13} process_resident_memory_bytes at the end: {end.metric_rss / 2**20:.1f} MiB")
    summary.append(
        f"  memory after warm-up: {'FLAT' if hour.flat else 'GROWING'} ({hour.growth_kb:+d} KiB from 25% to end,"
        f" flat below {FLAT_LIMIT_KB} KiB); failed scrapes {hour.total - hour.outcomes['ok']} of {hour.total}"
    )
    width = max(map(len, summary)) + 2
    print("\n" + "=" * width + "\n" + "\n".join(summary) + "\n" + "=" * width)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark of casprobe serve (prints numbers; not a test).")
    parser.add_argument("--quick", action="store_true", help="3 s windows, K 1,16,64,128, 1 h-equivalent (~1 min)")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds per load (6; quick 3)")
    parser.add_argument("--scrapers", default=None, help="K values (1,4,16,64,128; quick 1,16,64,128)")
    parser.add_argument("--hours", type=int, default=None, help="hour-equivalents for the memory run (10; quick 1)")
    parser.add_argument("--memory-scrapers", type=int, default=8, help="scraper threads of the memory run (8)")
    parser.add_argument("--max-concurrency", type=int, default=None, help="serve's max_concurrency (its default)")
    parser.add_argument("--base-address", default="127.0.220.10", help="the lab's loopback range (HAProxy's address)")
    args = parser.parse_args(argv)
    args.duration = args.duration or (3.0 if args.quick else 6.0)
    args.warmup = 1.0 if args.quick else 2.0
    args.hours = args.hours or (1 if args.quick else 10)
    try:
        args.k = [int(x) for x in (args.scrapers or ("1,16,64,128" if args.quick else "1,4,16,64,128")).split(",")]
    except ValueError:
        parser.error("--scrapers: comma-separated counts, e.g. 1,4,16,64")
    if not all(1 <= k <= 256 for k in args.k) or not 1 <= args.memory_scrapers <= 256:
        parser.error("--scrapers and --memory-scrapers: 1..256")
    if not 1 <= args.duration <= 120 or not 1 <= args.hours <= 100:
        parser.error("--duration 1..120 s, --hours 1..100")
    return args


def run(folder: Path, args: argparse.Namespace) -> None:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise BenchError("needs two cores (lab and scrapers on one, serve on another); this process may use one")
    lab_core, serve_core = cores[0], cores[1]
    os.sched_setaffinity(0, {lab_core})  # the lab, HAProxy and every scraper thread start from here: inherited
    config = LabConfig(base_address=args.base_address, port=443 if os.geteuid() == 0 else 8443)
    check_free(config)
    started = time.perf_counter()
    org = lab_up(folder / "lab", config)
    lab_pid, lb_pid = read_pid(folder / "lab" / "lab.pid"), read_pid(folder / "lab" / "haproxy" / "haproxy.pid")
    pin(lab_pid, {lab_core})
    pin(lb_pid, {lab_core})
    progress(f"lab up in {time.perf_counter() - started:.1f} s on {args.base_address}")
    (folder / "serve.toml").write_text(serve_config(folder / "lab", org, args.max_concurrency), encoding="utf-8")
    serve = Serve(folder / "serve.toml", folder / "serve.log", serve_core)
    if serve.pinned_to() != {serve_core}:
        raise BenchError(f"serve is not pinned to core {serve_core}: {serve.pinned_to()}")
    targets = [org.namespace, *(s.fqdn for s in org.servers)]
    for module in MODULES:  # a sanity check that says what is wrong before anything is measured
        check = scrape(serve, module, org.namespace)
        if check.outcome != "ok":
            raise BenchError(f"{module} on {org.namespace}: {check.outcome} {check.detail}; log: {serve.log_tail()}")
    max_conc = serve.metrics().get("casprobe_serve_max_concurrency", float("nan"))
    hour = hour_equivalent(serve, targets, args.hours, args.memory_scrapers)
    pids = (lab_pid or 0, lb_pid or 0)
    loads = [run_load(serve, targets, m, k, args.warmup, args.duration, pids) for m in MODULES for k in args.k]
    hour.after = sample(serve, "after", hour.samples[-1].scrapes, hour.started)
    print_report(args, org, (lab_core, serve_core), max_conc, loads, hour)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def stop_serve() -> None:
        for serve in SERVES:
            serve.stop()

    return guarded_run(
        "bench_serve",
        lambda folder: run(folder, args),
        errors=(CasprobeError, BenchError, OSError),
        lab_subdir="lab",
        before_teardown=stop_serve,
    )


if __name__ == "__main__":
    sys.exit(main())
