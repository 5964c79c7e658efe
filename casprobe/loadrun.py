"""Run casprobe's Locust users headless, on one machine or as a master with workers, and keep what they measured.

casprobe never imports Locust (it brings gevent's monkey-patching with it): it starts ``python -m locust`` as child
processes with the ``locustfiles/`` of this checkout (or those given), the way an admin would from a shell. The
command lines are the documented ones (README, "Load"):

    master/single: locust -f outlook.py[,mac_outlook.py][,shapes.py] --headless -u N -r R -t T
                   --csv DIR/locust --html DIR/locust.html --casprobe-records DIR/records.jsonl --casprobe-…
                   [--master --master-bind-host 127.0.0.1 --master-bind-port P --expect-workers W]
    each worker:   locust -f … --worker --master-host 127.0.0.1 --master-port P

Afterwards the records (:mod:`casprobe.load.records`) and Locust's ``locust_stats.csv`` are read back into a
:class:`~casprobe.model.LoadRun` and its :class:`~casprobe.model.LoadDisconnect` records, and can be added to a
run store. Every child is stopped when the run ends, fails or is interrupted; a run never outlives its run time
plus :data:`GRACE_S`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import casprobe
from casprobe.errors import CasprobeError, ConfigError
from casprobe.load.records import LoadRecords, read_locust_json, read_locust_stats, read_records
from casprobe.model import RequestStat

__all__ = [
    "GRACE_S",
    "LoadError",
    "LoadPlan",
    "LoadResult",
    "add_to_store",
    "default_locustfiles",
    "read_result",
    "read_stats",
    "run_load",
    "stats_file",
    "stats_from",
]

GRACE_S = 60.0
_WORKER_WAIT_S = 30.0


class LoadError(CasprobeError):
    """The load run could not be made (Locust missing or failing, no records)."""


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """A headless Locust run.

    Attributes: out_dir (Locust's CSV/HTML, the records, the logs); users, spawn_rate, run_time_s; target: the
    ``--casprobe-lab DIR`` or ``--casprobe-profile FILE`` option pair; cohorts (spec, "" = default); mac: add
    Outlook for Mac users; stages: a stage table (shapes.py) instead of users/spawn rate; workers: 0 = one
    process; extra: more ``--casprobe-…`` options; locustfiles: the folder holding outlook.py.
    """

    out_dir: Path
    target: tuple[str, str]
    users: int = 20
    spawn_rate: float = 10.0
    run_time_s: float = 60.0
    cohorts: str = ""
    mac: bool = False
    stages: str = ""
    workers: int = 0
    extra: tuple[str, ...] = ()
    locustfiles: Path | None = None


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What came out: the records read back (with Locust's request stats), the files, Locust's exit code."""

    records: LoadRecords
    out_dir: Path
    exit_code: int
    files: tuple[Path, ...] = field(default_factory=tuple)


def default_locustfiles() -> Path | None:
    """``locustfiles/`` beside the ``casprobe`` package (a checkout or an editable install), if it is there."""
    here = Path(casprobe.__file__).resolve().parent.parent / "locustfiles"
    return here if (here / "outlook.py").is_file() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _files(plan: LoadPlan) -> tuple[Path, str]:
    folder = plan.locustfiles or default_locustfiles()
    if folder is None or not (folder / "outlook.py").is_file():
        raise ConfigError("cannot find casprobe's locustfiles/ (outlook.py): give --locustfiles DIR")
    names = ["outlook.py"] + (["mac_outlook.py"] if plan.mac else []) + (["shapes.py"] if plan.stages else [])
    for name in names:
        if not (folder / name).is_file():
            raise ConfigError(f"{folder / name} is missing")
    return folder, ",".join(str(folder / n) for n in names)


def locust_available() -> bool:
    """Locust is importable by this Python (without importing it here: that would monkey-patch us)."""
    import importlib.util

    return importlib.util.find_spec("locust") is not None


def commands(plan: LoadPlan, port: int) -> tuple[list[str], list[list[str]]]:
    """The master (or single) command line and the workers' (see the module docstring)."""
    _folder, files = _files(plan)
    base = [sys.executable, "-m", "locust", "-f", files]
    out = plan.out_dir
    main = [
        *base,
        "--headless",
        "--run-time",
        f"{max(1, round(plan.run_time_s))}s",
        "--csv",
        str(out / "locust"),
        "--html",
        str(out / "locust.html"),
        "--json-file",
        str(out / "locust_stats"),
        "--casprobe-records",
        str(out / "records.jsonl"),
        "--stop-timeout",
        "5",
        *plan.target,
        *plan.extra,
    ]
    if plan.stages:
        main += ["--casprobe-stages", plan.stages]
    else:
        main += ["--users", str(plan.users), "--spawn-rate", f"{plan.spawn_rate:g}"]
    if plan.cohorts:
        main += ["--casprobe-cohorts", plan.cohorts]
    workers: list[list[str]] = []
    if plan.workers > 0:
        main += [
            "--master",
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            str(port),
            "--expect-workers",
            str(plan.workers),
            "--expect-workers-max-wait",
            f"{_WORKER_WAIT_S:g}",
        ]
        worker = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
        workers = [list(worker) for _ in range(plan.workers)]
    return main, workers


def _stop(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


def run_load(
    plan: LoadPlan, *, progress: Callable[[float], None] | None = None, stop: threading.Event | None = None
) -> LoadResult:
    """Run the plan to its end (or until ``stop`` is set, or interrupted) and read back what it measured."""
    if not locust_available():
        raise LoadError("Locust is not installed: pip install 'casprobe[load]'")
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    main_cmd, worker_cmds = commands(plan, _free_port())
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("CASPROBE_RECORDS", None)
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    started = time.monotonic()
    limit = started + plan.run_time_s + GRACE_S + (_WORKER_WAIT_S if worker_cmds else 0.0)
    try:
        for index, cmd in enumerate([main_cmd, *worker_cmds]):
            name = "locust.log" if index == 0 else f"worker{index}.log"
            log = (plan.out_dir / name).open("wb")
            logs.append(log)
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=plan.out_dir))
        master = procs[0]
        while master.poll() is None:
            if stop is not None and stop.is_set():
                break  # the finally below stops Locust (SIGINT: it still writes its statistics)
            if time.monotonic() > limit:
                raise LoadError(f"Locust did not stop within its run time + {GRACE_S:.0f} s: stopped it")
            if progress is not None:
                progress(time.monotonic() - started)
            time.sleep(0.5)
    finally:
        for proc in procs:
            _stop(proc, 15.0)
        for log in logs:
            log.close()
    code = procs[0].returncode if procs else 1
    return LoadResult(read_result(plan.out_dir), plan.out_dir, code, tuple(sorted(plan.out_dir.iterdir())))


def read_result(out_dir: Path) -> LoadRecords:
    """The records of a finished (or killed) run folder, with Locust's request stats when it wrote them."""
    records = out_dir / "records.jsonl"
    if not records.is_file():
        tail = _log_tail(out_dir / "locust.log")
        raise LoadError(f"the load run wrote no records ({records}); Locust said: {tail}")
    return read_records(records, stats=read_stats(out_dir))


def stats_file(out_dir: Path) -> Path | None:
    """Where a run folder holds Locust's request figures: its final JSON, else its CSV, else nowhere."""
    return next((p for p in (out_dir / "locust_stats.json", out_dir / "locust_stats.csv") if p.is_file()), None)


def read_stats(out_dir: Path) -> tuple[RequestStat, ...]:
    """Locust's request figures of a run folder (see :func:`stats_file`)."""
    return stats_from(stats_file(out_dir))


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip()[:200] for line in text[-lines:]) or "(empty log)"


def add_to_store(found: LoadRecords, store_path: Path) -> int:
    """Add a load run read back (:func:`read_result`, :func:`read_records`) to an existing run store; its id."""
    from casprobe.store import RunStore

    with RunStore.open(store_path, readonly=False) as store:
        return store.add_load_run(found.run, found.disconnects)


def stats_from(path: Path | None) -> tuple[RequestStat, ...]:
    """Locust's figures from a ``--json-file`` output (``.json``) or a ``_stats.csv``; none without a file."""
    if path is None:
        return ()
    return read_locust_json(path) if path.suffix == ".json" else read_locust_stats(path)


def describe_commands(plan: LoadPlan) -> Sequence[str]:
    """The command lines as a person would type them (for ``--dry-run`` and the README)."""
    import shlex

    main, workers = commands(plan, 5557)
    return [shlex.join(main), *(shlex.join(w) for w in workers)]
