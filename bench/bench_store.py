"""Benchmark of the run store: results/s committed one by one, from one and from several writer threads.

Each measurement creates a fresh store in a temporary folder and writes rich results (TLS facts, phases with auth
legs, four steps, facts: about what a MAPI probe records) with ``add_result``, each committed before it returns,
as ``casprobe watch`` does. With several threads the writes share the store's one connection and lock, so the
number shows what the lock costs, not more parallel disk writes. Then reads the store back
(``results()``: decode included) and prints the bytes each result takes on disk. A watch at 0.25 s over
10 names × 5 probes writes 200 results/s: the write rate is how far that is from the store's limit.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from casprobe import __version__
from casprobe.model import (
    ErrorClass,
    PhaseTimings,
    ProbeResult,
    RunInfo,
    Severity,
    Step,
    Target,
    TargetKind,
    TlsFacts,
)
from casprobe.store import RunStore


def sample(i: int) -> ProbeResult:
    """A MAPI-sized result; every tenth one a failure."""
    ok = i % 10 != 0
    target = Target(f"mb{i % 4 + 1}.lab.test", TargetKind.SERVER, 443, "127.0.0.11", f"mb{i % 4 + 1}")
    return ProbeResult(
        target=target,
        probe="mapi",
        success=ok,
        severity=Severity.OK if ok else Severity.CRITICAL,
        error_class=None if ok else ErrorClass.HTTP_STATUS,
        detail="" if ok else "HTTP 503 from a draining server",
        started_at=time.time(),
        duration=0.05,
        phases=PhaseTimings(0.0001, 0.0004, 0.004, (0.003, 0.006), 0.02, 0.05),
        address="127.0.0.11",
        fe_server="MB1",
        be_server="mb1.lab.test",
        tls=TlsFacts(
            "TLSv1.3",
            "TLS_AES_256_GCM_SHA384",
            True,
            True,
            "2030-01-01T00:00:00+00:00",
            1500,
            "CN=mb1.lab.test",
            "CN=Lab CA",
            ("mb1.lab.test",),
        ),
        auth_offered=("Negotiate", "NTLM"),
        auth_used="NTLM",
        steps=tuple(
            Step(f"POST /mapi/emsmdb ({name})", ok, status_code=200, duration=0.01, fe_server="MB1", response_code=0)
            for name in ("Connect", "Execute", "PING", "Disconnect")
        ),
        facts=(("mapi.mailstore_url", "https://mb1.lab.test/mapi/emsmdb/?MailboxId=x@lab.test"), ("mapi.cookie", "1")),
        started_mono=time.monotonic(),
    )


def measure(folder: Path, count: int, threads: int) -> tuple[float, float, int]:
    """Writes/s with ``threads`` writers, reads/s of the whole store, bytes per result."""
    path = folder / f"bench-{threads}.db"
    info = RunInfo("bench", time.time(), __version__, 0.25, ("mb1",), ("mapi",))
    results = [sample(i) for i in range(count)]
    per_thread = count // threads
    with RunStore.create(path, info) as store:

        def write(part: list[ProbeResult]) -> None:
            for result in part:
                store.add_result(result)

        workers = [
            threading.Thread(target=write, args=(results[n * per_thread : (n + 1) * per_thread],))
            for n in range(threads)
        ]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        written = time.perf_counter() - start
        total = store.result_count()
    with RunStore.open(path) as reader:
        start = time.perf_counter()
        read = sum(1 for _ in reader.results())
        reading = time.perf_counter() - start
    size = sum(p.stat().st_size for p in folder.glob(f"{path.name}*"))
    assert read == total == per_thread * threads
    return total / written, read / reading, size // total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0] if __doc__ else None)
    parser.add_argument("--results", type=int, default=5000, help="results per measurement (default 5000)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4, 8], help="writer threads (1 4 8)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; the median is shown (3)")
    args = parser.parse_args(argv)
    print(f"casprobe run store benchmark: {args.results} MAPI-sized results, each committed on its own (WAL, NORMAL)")
    print(f"  {'threads':>7} {'writes/s':>10} {'reads/s':>10} {'bytes/result':>12}")
    for threads in args.threads:
        runs = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="casprobe-bench-store-") as tmp:
                runs.append(measure(Path(tmp), args.results, threads))
        writes = statistics.median(r[0] for r in runs)
        reads = statistics.median(r[1] for r in runs)
        size = runs[0][2]
        print(f"  {threads:>7} {writes:>10.0f} {reads:>10.0f} {size:>12}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
