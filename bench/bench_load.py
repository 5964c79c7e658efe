"""Benchmark of casprobe's Locust load (issue 5, done-when 4): what being a faithful Outlook costs per Locust core,
and how many idle Outlook sessions one Locust process holds.

Run ``python bench/bench_load.py [--quick]`` from the repository root (2-3 minutes; ``--quick`` about 1.2). It
starts one lab of its own (``--base-address``, default 127.0.210.10: HAProxy there, mb1 and mb2 after it), pins the
lab and HAProxy to the first core and each Locust process (``python -m locust -f bench/locust_bench.py <User>
--headless``, see that file) to the second, always against one server's own name (mb1.lab.test, HAProxy out of the
path), and always takes everything down again (Ctrl-C and SIGTERM included). Nothing here is a test.

1. Execute rate: for each of three users doing the same exchange (Connect once, then Execute with a RopLogon in a
   tight loop, [MS-OXCMAPIHTTP] 2.2.4.1-2.2.4.2, [MS-OXCROPS] 2.2.3.1): the Outlook user's stack (WireClient +
   MapiSession + SpnegoAuth, NTLM with channel binding), Locust's HttpUser with requests-ntlm, and FastHttpUser
   with a static preemptive ``Authorization: Basic`` header (no handshake: the lab requires authentication on
   /mapi). Over a steady window once every user runs: Execute requests/s, the Locust process's CPU (utime + stime
   from /proc, all threads), requests per Locust CPU-second ("per Locust core"), median/p95 of that window,
   failures; then the ratios. Goal: the Outlook user at least 2x the HttpUser baseline.
2. Idle sessions: simulated Outlooks (casprobe.load.outlook.OutlookClient: Autodiscover, Connect, one Execute, then a
   NotificationWait parked for 600 s, [MS-OXCMAPIHTTP] 3.2.5.5) ramped to 2,000 and then 3,000 in one Locust
   process; once all are parked and held (through at least one X-PendingPeriod keep-alive), VmRSS of the process.
   "Parked" is verified three ways: Locust counted Connect = Execute = users with no failure and no NotificationWait
   finished, and the lab's side of /proc/net/tcp shows at least that many established connections to mb1 (the
   lab's control API does not count MAPI sessions). Goal: at least 2,000 idle sessions per worker under 1 GiB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_lab import check_free, guarded_run, pin, read_pid  # bench/ is on sys.path when this script runs
from labclients import BenchError

from casprobe.errors import CasprobeError
from casprobe.lab.cli import lab_up
from casprobe.lab.org import LabConfig, Org

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locust_bench.py"
SERVER = "mb1"
GIB_KB = 1024 * 1024
PENDING_PERIOD_MS = 15_000  # X-PendingPeriod of Exchange 2013 SP1/2016 RTM (protocols.md §2): a keep-alive per hold
RATE_USERS = (
    ("OutlookExecuteUser", "Outlook user (WireClient+MapiSession+SpnegoAuth NTLM+CBT)"),
    ("NtlmHttpExecuteUser", "HttpUser + requests-ntlm (HttpNtlmAuth)"),
    ("BasicFastExecuteUser", "FastHttpUser, static preemptive Basic header"),
)


def progress(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- one Locust process


@dataclass(slots=True)
class LocustRun:
    """One ``python -m locust`` subprocess pinned to ``core``, and the JSON lines its probe wrote."""

    name: str
    folder: Path
    core: int
    proc: subprocess.Popen[bytes] | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    affinity_ok: bool = False

    @property
    def out(self) -> Path:
        return self.folder / f"{self.name}.jsonl"

    @property
    def log(self) -> Path:
        return self.folder / f"{self.name}.log"

    def start(self, argv: list[str], env: dict[str, str]) -> None:
        core = self.core
        RUNS.append(self)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *argv],
                cwd=self.folder,  # no locust.conf of the caller's directory is read
                env={**os.environ, **env, "CASPROBE_BENCH_OUT": str(self.out), "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the bench only; the bench stops Locust
                preexec_fn=lambda: os.sched_setaffinity(0, {core}),  # before exec: every later thread inherits it
            )

    def wait(self, until: Callable[[list[dict[str, Any]]], bool], timeout: float) -> None:
        """Read the probe's lines until ``until`` says enough, the process ends, or ``timeout`` passes."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._read()
            if until(self.lines) or self.proc.poll() is not None:
                self._read()
                return
            time.sleep(0.1)
        raise BenchError(f"{self.name}: no result within {timeout:.0f} s (log: {self.log_tail()})")

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            text = self.out.read_text(encoding="utf-8")
            self.lines = [json.loads(line) for line in text.splitlines() if line.endswith("}")]
        if self.proc is not None and self.proc.poll() is None and not self.affinity_ok:
            self.affinity_ok = all(cpus == {self.core} for cpus in thread_affinities(self.proc.pid))

    def stop(self, grace_s: float) -> None:
        """Let Locust end on its own for ``grace_s``, then SIGKILL it (by its pid)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def log_tail(self, lines: int = 6) -> str:
        """The first error Locust logged (a user's on_start failing, say), else the end of its log."""
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return " (no Locust log)"
        first = next((i for i, line in enumerate(text) if "/ERROR/" in line or line.startswith("Traceback")), None)
        picked = text[first : first + lines] if first is not None else text[-lines:]
        return "\n    ".join(["", *picked])


RUNS: list[LocustRun] = []  # every Locust process started, killed at the end whatever happened


def thread_affinities(pid: int) -> list[set[int]]:
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out = []
    for tid in tids:
        with contextlib.suppress(OSError):
            out.append(os.sched_getaffinity(int(tid)))
    return out


def one_line(lines: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((line for line in lines if line.get("kind") == kind), None)


# --------------------------------------------------------------------------- the two measurements


@dataclass(frozen=True, slots=True)
class Bench:
    """What every Locust run needs: the lab, where it runs, the cores."""

    folder: Path
    org: Org
    lab_core: int
    locust_core: int
    watch: str  # "lab pid,HAProxy pid"

    @property
    def server(self) -> str:
        return self.org.server(SERVER).fqdn

    def locust(
        self, name: str, user_class: str, users: int, rate: float, runtime: float, env: dict[str, str], *extra: str
    ) -> LocustRun:
        """Run one Locust process until its probe is done; then a rate run quits on its own (20 s grace), an idle
        run is killed at once (each parked client would send a Disconnect on a graceful stop: not measured)."""
        run = LocustRun(name, self.folder, self.locust_core)
        argv = [
            user_class,
            *("--headless", "--only-summary", "--users", str(users), "--spawn-rate", f"{rate:g}"),
            *("--run-time", f"{int(runtime)}s", "--host", f"https://{self.server}:{self.org.config.port}"),
            *("--casprobe-lab", str(self.folder / "lab"), *extra),
        ]
        ca = str(self.folder / "lab" / "tls" / "ca.pem")
        done = False
        try:
            run.start(argv, {"CASPROBE_BENCH_SERVER": self.server, "CASPROBE_BENCH_CA": ca, **env})
            run.wait(lambda lines: one_line(lines, "done") is not None, runtime + 30)
            done = True
        finally:
            run.stop(grace_s=20.0 if done and "CASPROBE_BENCH_WINDOW" in env else 0.0)
        if not run.affinity_ok:
            raise BenchError(f"{name}: the Locust process was not pinned to core {self.locust_core}")
        return run


def failed_run(run: LocustRun, what: str) -> BenchError:
    error = one_line(run.lines, "error") or {}
    return BenchError(f"{what}: nothing measured: {error.get('detail', 'Locust ended')}{run.log_tail()}")


def measure_rate(bench: Bench, user_class: str, args: argparse.Namespace) -> dict[str, Any]:
    progress(f"{user_class}: {args.users} users, {args.warmup:g} s warm-up + {args.duration:g} s measured ...")
    env = {"CASPROBE_BENCH_WINDOW": f"{args.warmup},{args.duration}", "CASPROBE_BENCH_WATCH": bench.watch}
    runtime = args.warmup + args.duration + 90
    run = bench.locust(f"rate-{user_class}", user_class, args.users, args.users, runtime, env)
    result = one_line(run.lines, "rate")
    if result is None:
        raise failed_run(run, user_class)
    if result["requests"] <= 0 or result["cpu_s"] <= 0:
        raise BenchError(f"{user_class}: no Execute in the window ({result.get('errors')}){run.log_tail()}")
    return result


def measure_idle(bench: Bench, args: argparse.Namespace) -> list[dict[str, Any]]:
    steps = args.idle_steps
    increments = [b - a for a, b in zip([0, *steps], steps, strict=False)]
    park_timeout = max(120.0, 4 * max(increments) / args.spawn_rate)
    runtime = len(steps) * (park_timeout + args.hold) + 60
    chain = " then ".join(map(str, steps))
    progress(f"idle Outlooks: {chain} users at {args.spawn_rate:g}/s, held {args.hold:g} s ...")
    env = {
        "CASPROBE_BENCH_STEPS": ",".join(map(str, steps)),
        "CASPROBE_BENCH_RATE": str(args.spawn_rate),
        "CASPROBE_BENCH_HOLD": str(args.hold),
        "CASPROBE_BENCH_PARK_TIMEOUT": str(park_timeout),
    }
    behaviour = "--casprobe-idle 600 --casprobe-burst 1 --casprobe-ping-every 0 --casprobe-backoff 5-10"
    extra = (*behaviour.split(), "--casprobe-timeout", "30")
    run = bench.locust("idle-OutlookClient", "IdleOutlookUser", steps[0], args.spawn_rate, runtime, env, *extra)
    start = one_line(run.lines, "start")
    results = [dict(line, start_rss_kb=start["rss_kb"] if start else 0) for line in run.lines if line["kind"] == "step"]
    if not results:
        raise failed_run(run, "idle sessions")
    return results


def parked(step: dict[str, Any]) -> tuple[bool, str]:
    """Whether every user of the step was verified parked, and why not."""
    users, counts = step["users"], step["counts"]
    failures = sum(failed for _done, failed in counts.values())
    done = {name: counts.get(name, [0, 0])[0] for name in ("Connect", "Execute", "NotificationWait")}
    checks = (
        (step["reached"], "not all users parked in time"),
        (failures == 0, f"{failures} failures"),
        (
            done["Connect"] == users and done["Execute"] == users,
            f"Connect {done['Connect']}, Execute {done['Execute']}",
        ),
        (done["NotificationWait"] == 0, f"{done['NotificationWait']} NotificationWait finished early"),
        (step["lab_connections"] >= users, f"lab side: {step['lab_connections']} established connections"),
    )
    problems = [why for ok, why in checks if not ok]
    return not problems, "; ".join(problems)


# --------------------------------------------------------------------------- output


def rate_rows(results: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    rows = [
        f"  {'user':<58} {'req/s':>7} {'Locust CPU':>10} {'req/s/core':>10} {'p50 ms':>6} {'p95 ms':>6}"
        f" {'failures':>8} {'lab CPU':>7} {'other':>5}"
    ]
    for _cls, label, r in results:
        lab, lb, machine = r["others_cpu_s"]
        other = max(0.0, machine - lab - lb - r["cpu_s"])
        rows.append(
            f"  {label:<58} {r['requests'] / r['seconds']:7.0f} {100 * r['cpu_s'] / r['seconds']:9.0f}%"
            f" {r['requests'] / r['cpu_s']:10.0f} {r['median_ms']:6.0f} {r['p95_ms']:6.0f} {r['failures']:8d}"
            f" {100 * (lab + lb) / r['seconds']:6.0f}% {100 * other / r['seconds']:4.0f}%"
        )
    return rows


def idle_rows(steps: list[dict[str, Any]]) -> list[str]:
    rows = [
        f"  {'sessions':>8} {'parked':>6} {'ramp s':>6} {'RSS MiB':>8} {'KiB/session':>11} {'CPU parked':>10}"
        f" {'lab conns':>9}  check"
    ]
    for s in steps:
        ok, why = parked(s)
        per = (s["rss_kb"] - s["start_rss_kb"]) / s["users"]
        rows.append(
            f"  {s['users']:>8} {'yes' if ok else 'NO':>6} {s['ramp_s']:6.0f} {s['rss_kb'] / 1024:8.0f} {per:11.0f}"
            f" {100 * s['hold_cpu']:9.1f}% {s['lab_connections']:>9}  {'ok' if ok else why}"
        )
    return rows


def report(
    bench: Bench, args: argparse.Namespace, rates: list[tuple[str, str, dict[str, Any]]], idle: list[dict[str, Any]]
) -> bool:
    """Print the tables and the summary block; False when a goal is not met (or not measured)."""
    per_core = {cls: r["requests"] / r["cpu_s"] for cls, _label, r in rates}
    outlook, http, fast = (per_core[cls] for cls, _label in RATE_USERS)
    held = [s for s in idle if parked(s)[0]]
    best = max(held, key=lambda s: s["users"]) if held else None
    rate_goal = outlook >= 2 * http
    idle_goal = best is not None and best["users"] >= 2000 and best["rss_kb"] < GIB_KB
    print("\ncasprobe Locust load benchmark (issue 5, done-when 4)")
    print(
        f"  lab (all threads) and HAProxy on core {bench.lab_core}, each Locust process (all threads) on core"
        f" {bench.locust_core}; every request to {bench.server}:{bench.org.config.port} (no HAProxy in the path)"
    )
    print(
        f"\n1. MAPI Execute (RopLogon) loop, {args.users} users, constant(0); {args.duration:g} s window after warm-up"
    )
    print("\n".join(rate_rows(rates)))
    print(
        "  req/s/core: Execute requests per CPU-second of the Locust process (utime+stime, /proc) in the window."
        "\n  'without auth' (FastHttpUser): the lab requires authentication on /mapi, so every request carries a"
        "\n  static preemptive 'Authorization: Basic' header (no NTLM handshake, no channel binding)."
        "\n  lab CPU: lab process + HAProxy (% of core); other: the rest of the machine (other processes, steal)."
    )
    for _cls, label, r in rates:
        if r["errors"]:
            print(f"  {label}: errors: {'; '.join(r['errors'])}")
        if (r["others_cpu_s"][2] - sum(r["others_cpu_s"][:2]) - r["cpu_s"]) / r["seconds"] > 0.1:
            print(f"  DISTURBED: other work used over 10% of a core during '{label}'")
    print("\n2. Idle Outlook sessions (OutlookClient, parked NotificationWait, idle 600 s) in one Locust process")
    print("\n".join(idle_rows(idle)))
    print(
        f"  KiB/session: (VmRSS now - VmRSS at test start) / sessions; CPU parked: the Locust process while all are"
        f"\n  parked ({args.hold:g} s hold, X-PendingPeriod {PENDING_PERIOD_MS} ms); lab conns: established"
        f" connections to {bench.server} (lab side)."
    )
    for s in idle:
        if s["errors"]:
            print(f"  {s['users']} sessions: errors: {'; '.join(s['errors'])}")
    summary = [
        "casprobe bench_load summary",
        f"  Outlook user   : {outlook:6.0f} Execute/s per Locust core",
        f"  HttpUser+NTLM  : {http:6.0f} Execute/s per Locust core",
        f"  FastHttpUser   : {fast:6.0f} Execute/s per Locust core (static Basic header, no handshake)",
        f"  Outlook / HttpUser baseline = {outlook / http:.2f}x (goal >= 2x: {'MET' if rate_goal else 'NOT MET'})",
        f"  Outlook / FastHttpUser      = {outlook / fast:.2f}x",
    ]
    for s in idle:
        ok, why = parked(s)
        state = "all parked" if ok else f"NOT verified ({why})"
        summary.append(
            f"  {s['users']:>5} idle sessions in one Locust process: {state}, VmRSS {s['rss_kb'] / 1024:.0f} MiB"
        )
    goal = f"{best['users']} sessions at {best['rss_kb'] / 1024:.0f} MiB" if best else "none verified"
    summary.append(
        f"  idle goal >= 2,000 sessions under 1 GiB per worker: {'MET' if idle_goal else 'NOT MET'} ({goal})"
    )
    width = max(map(len, summary)) + 2
    print("\n" + "=" * width + "\n" + "\n".join(summary) + "\n" + "=" * width)
    return rate_goal and idle_goal


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark of casprobe's Locust users (prints numbers; not a test).")
    parser.add_argument("--quick", action="store_true", help="short windows, 2,000 idle sessions only (~1.2 min)")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds per rate load (10; quick 4)")
    parser.add_argument("--users", type=int, default=32, help="users per rate load (default 32)")
    parser.add_argument("--idle", default=None, help="idle session steps (default 2000,3000; quick 2000)")
    parser.add_argument("--spawn-rate", type=float, default=100.0, help="idle users started per second (100)")
    parser.add_argument("--base-address", default="127.0.210.10", help="the lab's loopback range (HAProxy's address)")
    args = parser.parse_args(argv)
    args.duration = args.duration or (4.0 if args.quick else 10.0)
    args.warmup = 2.0 if args.quick else 3.0
    args.hold = PENDING_PERIOD_MS / 1000 + (2.0 if args.quick else 10.0)
    try:
        args.idle_steps = [int(x) for x in (args.idle or ("2000" if args.quick else "2000,3000")).split(",")]
    except ValueError:
        parser.error("--idle: comma-separated user counts, e.g. 2000,3000")
    if args.idle_steps != sorted(set(args.idle_steps)) or not 1 <= args.idle_steps[0] <= args.idle_steps[-1] <= 10000:
        parser.error("--idle: increasing user counts between 1 and 10000")
    if not 1 <= args.duration <= 120 or not 1 <= args.users <= 500 or not 1 <= args.spawn_rate <= 1000:
        parser.error("--duration 1..120 s, --users 1..500, --spawn-rate 1..1000")
    return args


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard limit (inherited by the lab and Locust); the new soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run(folder: Path, args: argparse.Namespace) -> bool:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise BenchError("needs two cores (the lab on one, Locust on another); this process may use one")
    lab_core, locust_core = cores[0], cores[1]
    nofile = raise_nofile()
    if nofile < max(args.idle_steps) * 2 + 1000:
        raise BenchError(f"open-file limit {nofile} is too low for {max(args.idle_steps)} idle sessions")
    os.sched_setaffinity(0, {lab_core})  # the lab and HAProxy start from here and inherit it
    config = LabConfig(
        servers=2,
        users_per_database=5,
        base_address=args.base_address,
        port=443 if os.geteuid() == 0 else 8443,
        notification_wait_s=900.0,  # longer than the bench: a parked wait only ends when the client drops it
        pending_period_ms=PENDING_PERIOD_MS,
    )
    check_free(config)
    started = time.perf_counter()
    org = lab_up(folder / "lab", config)
    lab_pid, lb_pid = read_pid(folder / "lab" / "lab.pid"), read_pid(folder / "lab" / "haproxy" / "haproxy.pid")
    pin(lab_pid, {lab_core})
    pin(lb_pid, {lab_core})
    progress(f"lab up in {time.perf_counter() - started:.1f} s on {args.base_address}; open-file limit {nofile}")
    bench = Bench(folder, org, lab_core, locust_core, f"{lab_pid},{lb_pid}")
    rates = [(cls, label, measure_rate(bench, cls, args)) for cls, label in RATE_USERS]
    idle = measure_idle(bench, args)
    goals = report(bench, args, rates, idle)
    if not parked(idle[0])[0]:
        raise BenchError(f"{idle[0]['users']} idle sessions could not be verified parked: {parked(idle[0])[1]}")
    invalid = [label for _cls, label, r in rates if r["failures"] > 0.01 * r["requests"]]
    if invalid:
        raise BenchError(f"over 1% of the Executes failed for: {', '.join(invalid)}: their rates mean little")
    return goals


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def stop_locust() -> None:
        for locust in RUNS:
            locust.stop(grace_s=0)

    return guarded_run(
        "bench_load",
        lambda folder: run(folder, args),
        errors=(CasprobeError, BenchError, OSError),
        lab_subdir="lab",
        before_teardown=stop_locust,
    )


if __name__ == "__main__":
    sys.exit(main())
