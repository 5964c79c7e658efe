"""Benchmark of ``casprobe check``: wall time of one round with 1 and with 10 servers, and CPU time per probe.

Starts its own lab with 10 servers on 127.0.210.10.. (HAProxy on .10), runs every available probe against one
server, then against all ten, through the library (the same path as the CLI, without interpreter start-up), and
prints the wall time of each round, the CPU time this process spent per probe (``resource.getrusage`` around
the round, divided by the number of probes) and the ratio of the two wall times: 10 × the work in about the
same time is what concurrent probes buy. The lab's own CPU is not counted. Each measurement
is repeated with the lab adding a delay before every answer (``--delays``, default 0 and 20 ms), a stand-in for
the network round trips of a real organisation, where the concurrency shows.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from casprobe.errors import CasprobeError
from casprobe.lab.cli import lab_down, lab_up
from casprobe.lab.org import LabConfig
from casprobe.model import ProbeResult
from casprobe.runner import available_probes, run_round
from casprobe.targets import CheckOptions, CheckPlan, build_plan


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_round(plan: CheckPlan, servers: tuple[str, ...]) -> tuple[float, float, list[ProbeResult]]:
    """Wall seconds, CPU seconds of this process, and the results of one round against ``servers``."""
    targets = plan.targets()
    chosen = tuple(t for t in targets if t.name in servers)
    cpu, wall = cpu_seconds(), time.perf_counter()
    results = run_round(chosen, plan.probes, plan.settings, plan.resolver())
    return time.perf_counter() - wall, cpu_seconds() - cpu, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measurement (default 3; the median wins)")
    parser.add_argument("--base-address", default="127.0.210.10", help="HAProxy's loopback address; servers follow")
    parser.add_argument(
        "--delays", type=int, nargs="+", default=[0, 20], help="lab response delays to measure with, ms (0 20)"
    )
    args = parser.parse_args(argv)
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        print("bench_check: HAProxy is not installed; the lab needs it", file=sys.stderr)
        return 2
    print("casprobe check benchmark: every available probe, against 1 and then 10 servers of a 10-server lab")
    columns = ("delay", 5), ("servers", 7), ("probes", 6), ("wall s (med)", 12), ("CPU ms/probe", 12), ("CPU/wall", 8)
    print("  " + " ".join(f"{name:>{width}}" for name, width in columns) + f" {'failed':>6}")
    for delay in args.delays:
        folder = Path(tempfile.mkdtemp(prefix="casprobe-bench-check-"))
        port = 443 if os.geteuid() == 0 else 8443
        config = replace(LabConfig(), servers=10, base_address=args.base_address, port=port, response_delay_ms=delay)
        try:
            org = lab_up(folder, config)
            options = CheckOptions(lab=True, lab_dir=folder)
            plan = build_plan(options, available=available_probes(), interactive=False)
            servers = tuple(s.fqdn for s in org.servers)
            one_round(plan, servers)  # warm-up: imports, first TLS contexts
            walls = {}
            for count in (1, 10):
                measured = [one_round(plan, servers[:count]) for _ in range(args.rounds)]
                wall = statistics.median(m[0] for m in measured)
                probes = len(measured[0][2])
                cpu_per_probe = statistics.median(m[1] for m in measured) / probes
                failed = sum(1 for m in measured for r in m[2] if not r.success)
                walls[count] = wall
                busy = cpu_per_probe * probes / wall
                row = f"{delay:>3}ms {count:>7} {probes:>6} {wall:>12.3f} {cpu_per_probe * 1000:>12.1f} {busy:>8.2f}"
                print(f"  {row} {failed:>6}")
            print(f"        10 servers / 1 server wall time: {walls[10] / walls[1]:.2f} (10.0 = no concurrency)")
        except CasprobeError as exc:
            print(f"bench_check: {exc}", file=sys.stderr)
            return 1
        finally:
            lab_down(folder)
            shutil.rmtree(folder, ignore_errors=True)
    print(
        "  delay: added by the lab before every answer (a stand-in for network round trips). Without it the round"
        " is bound by this process's CPU (TLS, NTLM, XML under the GIL); with it, probes overlap their waiting."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
