"""``casprobe rehearse``: the whole maintenance story on the lab, from nothing to an HTML report, in one command.

It starts a lab of its own (its own folder and loopback addresses), ``casprobe watch`` on it (every name × probe,
and a long-lived MAPI session per name), and a Locust load whose clients are split into cohorts (the namespace,
and the own name of each server the scenario touches); then it plays the scenario:

- ``graceful``: baseline; mb1 into DAG maintenance in the documented order (drain transport, block activation,
  move its active databases away, ServerWideOffline inactive); hold; out of maintenance; after;
- ``power-off``: baseline; mb2 loses power (black hole: nothing answers, the DAG fails over after its delay);
  hold; power back; after;
- ``both``: the graceful maintenance of mb1, then the power-off of mb2.

Each step is also a marker in the run store ("mb1 maintenance start", …), besides the lab's own event log that
``watch`` copies in. At the end everything is stopped (watch, Locust, the lab), the load's disconnect records are
added to the run store, and ``reports/rehearsal-<date>.html`` is written; its path and a three-line summary are
printed. The lab lives in this package because the product never imports the lab; the rest is the product's own
commands and library.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from casprobe.errors import CasprobeError
from casprobe.lab.cli import lab_down, lab_up
from casprobe.lab.control import LabClient
from casprobe.lab.org import LabConfig
from casprobe.loadrun import LoadPlan, LoadResult, add_to_store, run_load
from casprobe.model import Marker
from casprobe.store import RunStore

__all__ = ["Timing", "rehearse"]


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds of each part of a scenario, and the watch interval."""

    baseline_s: float
    window_s: float
    after_s: float
    interval: str
    users: int

    @property
    def per_event_s(self) -> float:
        return self.window_s + self.after_s


FULL = Timing(baseline_s=30.0, window_s=60.0, after_s=30.0, interval="1s", users=30)
QUICK = Timing(baseline_s=8.0, window_s=14.0, after_s=8.0, interval="0.5s", users=12)


@dataclass(frozen=True, slots=True)
class _Step:
    at_s: float
    label: str
    action: Callable[[LabClient], object]


def _steps(scenario: str, t: Timing) -> list[_Step]:
    steps: list[_Step] = []
    at = t.baseline_s
    if scenario in ("graceful", "both"):
        steps.append(_Step(at, "mb1 maintenance start", lambda c: c.maintenance("mb1", "start")))
        steps.append(_Step(at + t.window_s, "mb1 maintenance end", lambda c: c.maintenance("mb1", "stop")))
        at += t.window_s + t.after_s
    if scenario in ("power-off", "both"):
        steps.append(_Step(at, "mb2 power off", lambda c: c.power("mb2", "off", "blackhole")))
        steps.append(_Step(at + t.window_s, "mb2 power on", lambda c: c.power("mb2", "on")))
        at += t.window_s + t.after_s
    return steps


def _cohorts(scenario: str) -> str:
    return {"graceful": "namespace=2,mb1=1", "power-off": "namespace=2,mb2=1"}.get(scenario, "namespace=2,mb1=1,mb2=1")


class _Children:
    """The child processes and threads of a rehearsal, all stopped on the way out whatever happens."""

    def __init__(self) -> None:
        self.watch: subprocess.Popen[bytes] | None = None
        self.load: threading.Thread | None = None
        self.load_result: LoadResult | None = None
        self.load_error: BaseException | None = None
        self.stop_load = threading.Event()

    def stop_all(self) -> None:
        """Stop the load (Locust's children with it) and the watch; used on the way out, however it came."""
        self.stop_load.set()
        if self.load is not None:
            self.load.join(60)
        self.stop_watch()

    def stop_watch(self) -> None:
        proc, self.watch = self.watch, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # watch ends cleanly on Ctrl-C and closes its store
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _start_watch(folder: Path, store: Path, interval: str, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "casprobe", "watch", "--lab", str(folder), "--interval", interval]
    command += ["--store", str(store), "--timeout", "8"]
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _wait_for_results(store: Path, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CasprobeError(f"casprobe watch stopped at once (exit {proc.returncode}); see {store.parent}")
        if store.exists():
            with contextlib.suppress(CasprobeError), RunStore.open(store) as run:
                if run.result_count() > 0:
                    return
        time.sleep(0.3)
    raise CasprobeError(f"casprobe watch stored no result within {timeout_s:.0f} s")


def _mark(store: Path, text: str) -> None:
    with RunStore.open(store, readonly=False) as run:
        run.add_marker(Marker(wall=time.time(), mono=time.monotonic(), text=text, source="rehearse"))


@contextlib.contextmanager
def _lab(folder: Path, servers: int, base: str, keep: bool) -> Iterator[None]:
    config = LabConfig(
        servers=servers,
        base_address=base,
        port=443 if os.geteuid() == 0 else 8443,
        check_inter_ms=1000,
        switchover_s=2.0,
        failover_delay_s=3.0,
        notification_wait_s=60.0,
        pending_period_ms=5000,
    )
    lab_up(folder, config)
    try:
        yield
    finally:
        if not keep:
            lab_down(folder)


def _summary(report_path: Path, store: Path) -> list[str]:
    from casprobe.report import load_report

    data = load_report(store)
    by_kind = sorted(data.verdicts, key=lambda v: (v.kind.value != "namespace", v.ok, -(v.longest_s or 0.0)))
    lines = [v.sentence for v in by_kind[:2]]
    if data.load:
        load = data.load[0]
        parts = [f"{f.cohort} {f.mean_per_user_s:.1f} s" for f in load.cohorts]
        lines = [*lines[:2], f"Load clients cut off on average: {', '.join(parts)}."]
    return [*lines[:3], f"Report: {report_path}"]


def run_rehearsal(
    scenario: str,
    servers: int,
    timing: Timing,
    out: Path,
    *,
    base: str,
    workdir: Path,
    keep_lab: bool,
    progress: Callable[[str], None],
) -> list[str]:
    """Play the scenario and write the report; returns the summary lines (see the module docstring)."""
    folder, store = workdir / "lab", workdir / "run.db"
    steps = _steps(scenario, timing)
    total = (steps[-1].at_s if steps else 0.0) + timing.after_s + timing.baseline_s / 2
    kids = _Children()
    progress(f"starting the lab ({servers} servers) in {folder}")
    with _lab(folder, servers, base, keep_lab):
        try:
            kids.watch = _start_watch(folder, store, timing.interval, workdir / "watch.log")
            _wait_for_results(store, kids.watch)
            plan = LoadPlan(
                out_dir=workdir / "load",
                target=("--casprobe-lab", str(folder)),
                users=timing.users,
                spawn_rate=max(1.0, timing.users / 2),
                run_time_s=total,
                cohorts=_cohorts(scenario),
                extra=("--casprobe-idle", "1-3", "--casprobe-timeout", "5"),
            )

            def load() -> None:
                try:
                    kids.load_result = run_load(plan, stop=kids.stop_load)
                except BaseException as exc:  # reported after the scenario, never lost
                    kids.load_error = exc

            kids.load = threading.Thread(target=load, name="rehearsal-load", daemon=True)
            kids.load.start()
            started = time.monotonic()
            with LabClient(folder) as control:
                for step in steps:
                    wait = max(0.0, started + step.at_s - time.monotonic())
                    progress(f"next: '{step.label}' in {wait:.0f} s")
                    time.sleep(max(0.0, started + step.at_s - time.monotonic()))
                    progress(step.label)
                    _mark(store, step.label)
                    step.action(control)
            progress("after the scenario: watching the recovery")
            kids.load.join(max(0.0, started + total - time.monotonic()) + 120)
        finally:
            kids.stop_all()
    if kids.load_error is not None:
        raise CasprobeError(f"the load run failed: {kids.load_error}")
    if kids.load_result is not None:
        add_to_store(kids.load_result.records, store)
    progress("writing the report")
    from casprobe.report import load_report
    from casprobe.report.render import render_html

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(load_report(store)), encoding="utf-8")
    return _summary(out, store)


@click.command("rehearse")
@click.option("--scenario", type=click.Choice(["graceful", "power-off", "both"]), default="graceful", show_default=True)
@click.option("--servers", type=click.IntRange(2, 16), default=3, show_default=True)
@click.option("--quick", is_flag=True, help="Short phases (about a minute in all) instead of about 3 minutes.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="The report's path.")
@click.option("--base-address", default="127.0.60.10", show_default=True, help="The rehearsal lab's first address.")
@click.option("--keep", is_flag=True, help="Keep the lab running and its folder afterwards.")
def rehearse(scenario: str, servers: int, quick: bool, output: Path | None, base_address: str, keep: bool) -> None:
    """Play a maintenance on the lab with watch and a Locust load, and write the HTML report."""
    from casprobe.loadrun import locust_available

    if not locust_available():
        raise CasprobeError("the rehearsal needs Locust: pip install -e '.[lab,load]'")
    timing = QUICK if quick else FULL
    stamp = time.strftime("%Y-%m-%d-%H%M%S")
    out = output or Path("reports") / f"rehearsal-{stamp}.html"
    workdir = Path(tempfile.mkdtemp(prefix=f"casprobe-rehearsal-{stamp}-"))
    started = time.monotonic()

    def progress(phase: str) -> None:
        click.echo(f"[{time.monotonic() - started:6.1f} s] {phase}", err=True)

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)  # a service manager's stop: clean up as Ctrl-C does
    try:
        lines = run_rehearsal(
            scenario, servers, timing, out, base=base_address, workdir=workdir, keep_lab=keep, progress=progress
        )
    except KeyboardInterrupt:
        click.echo(f"interrupted: the lab, watch and Locust are stopped (what was recorded is in {workdir})", err=True)
        raise SystemExit(130) from None
    for line in lines:
        click.echo(line)
    click.echo(f"(run store, load and logs: {workdir})", err=True)
