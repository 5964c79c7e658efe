"""``casprobe watch``: probe every name × probe on a fixed schedule through a maintenance, storing as it goes.

Parses the check's target/auth/TLS options (:mod:`casprobe.cli.options`) and the watch's own, builds the jobs
(stateless probes, plus one long-lived ``mapi-session`` per name), opens the run store and runs the
:class:`casprobe.watch.Scheduler` with the live view, the lab-event tail and the metrics endpoint around it.

SIGINT (Ctrl-C) and SIGTERM end the run cleanly: the handler only sets a flag (the scheduler polls it), then no
slot starts, runs in flight get until their deadline, sessions disconnect, the store is finished and its path
printed; exit status 0. A second signal during that ends the process at once (results already stored stay).
"""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import click

from casprobe import __version__
from casprobe.cli.options import check_options, target_options
from casprobe.config import default_lab_dir
from casprobe.errors import ConfigError
from casprobe.model import ProbeResult, RunInfo, Target
from casprobe.probes import PROBE_NAMES
from casprobe.runner import available_probes, load_probes
from casprobe.store import RunStore
from casprobe.targets import build_plan, discover_servers
from casprobe.watch import MIN_INTERVAL_S, Job, LabTail, ResultSink, Scheduler, probe_deadline, probe_job
from casprobe.watch_metrics import MetricsServer, parse_address
from casprobe.watch_session import PROBE as SESSION
from casprobe.watch_session import WAIT_HOLD_S, SessionProbe
from casprobe.watch_view import Board, LiveView, PlainView, View, ViewHeader

__all__ = ["parse_seconds", "watch"]

_log = logging.getLogger(__name__)
_FILE = click.Path(dir_okay=False, path_type=Path)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
_SECONDS = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)


def parse_seconds(text: str, option: str) -> float:
    """``0.5``, ``500ms``, ``1s``, ``2m``, ``1h`` → seconds; ConfigError otherwise."""
    match = _SECONDS.match(text)
    if match is None:
        raise ConfigError(f"{option} wants a duration such as 0.5, 500ms, 1s or 2m, not {text!r}")
    return float(match.group(1)) * _UNITS[(match.group(2) or "").lower()]


@dataclass(frozen=True, slots=True)
class _Setup:
    """What a run needs once the options are understood."""

    store: Path
    interval: float
    duration: float | None
    budget: float
    targets: tuple[Target, ...]
    jobs: tuple[Job, ...]
    sessions: tuple[SessionProbe, ...]
    run: RunInfo
    lab_events: Path | None
    metrics: tuple[str, int] | None


class _StopFlag:
    """Set by SIGINT/SIGTERM (a plain attribute: safe in a signal handler); a second signal interrupts at once."""

    def __init__(self) -> None:
        self.set = False

    def __call__(self) -> bool:
        return self.set

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True


@click.command("watch")
@target_options
@click.option(
    "--probe",
    "probes",
    multiple=True,
    type=click.Choice((*PROBE_NAMES, SESSION)),
    help="Watch this probe (repeatable; default: all that can run, plus mapi-session).",
)
@click.option("--interval", default="1s", show_default=True, help="Time between two probes of a row (>= 0.25 s).")
@click.option("--duration", help="End the run after this long (e.g. 30m; default: until Ctrl-C).")
@click.option("--store", "store", type=_FILE, required=True, help="The run store to create (SQLite; must not exist).")
@click.option("--no-session", is_flag=True, help="Do not keep a long-lived MAPI session (mapi-session) per name.")
@click.option("--metrics", metavar="HOST:PORT", help="Serve Prometheus metrics on this address while watching.")
def watch(namespace: str | None, **opts: Any) -> None:
    """Probe NAMESPACE and each server name continuously (Ctrl-C ends it); results go to the --store file."""
    setup = _prepare(namespace, opts)
    board = Board([(job.target, job.probe) for job in setup.jobs])
    metrics = None
    if setup.metrics is not None:  # bound before the store exists: a refused address leaves no empty store
        metrics = MetricsServer(board, setup.metrics, tls_verification=setup.run.tls_verification)
    store = RunStore.create(setup.store, setup.run)
    try:
        _run(setup, store, board, metrics)
    finally:
        store.close()


def _prepare(namespace: str | None, opts: dict[str, Any]) -> _Setup:
    interval = parse_seconds(opts.pop("interval"), "--interval")
    if interval < MIN_INTERVAL_S:
        raise ConfigError(f"--interval must be at least {MIN_INTERVAL_S:g} s")
    raw_duration = opts.pop("duration")
    duration = None if raw_duration is None else parse_seconds(raw_duration, "--duration")
    if duration is not None and duration <= 0:
        raise ConfigError("--duration must be longer than 0")
    store_path: Path = opts.pop("store")
    if store_path.exists():
        raise ConfigError(f"{store_path} already exists: a watch writes a new run store (choose another --store)")
    no_session = bool(opts.pop("no_session"))
    metrics = opts.pop("metrics")
    address = parse_address(metrics) if metrics else None
    asked = tuple(opts.pop("probes"))
    if SESSION in asked and no_session:
        raise ConfigError(f"--probe {SESSION} and --no-session contradict each other")
    options = check_options(namespace, opts, tuple(p for p in asked if p != SESSION))
    plan = build_plan(options, available=available_probes(), interactive=sys.stdin is not None and sys.stdin.isatty())
    if asked and options.probes == ():
        plan = replace(plan, probes=())  # only mapi-session was asked for
    settings = plan.settings
    ready = bool(settings.mailbox) and (settings.credentials is not None or settings.bearer is not None)
    if SESSION in asked and not ready:
        raise ConfigError(f"probe {SESSION!r} needs a mailbox (--mailbox) and credentials (--user or a token)")
    with_session = SESSION in asked or (not asked and not no_session and ready)
    resolver = plan.resolver()
    discovered: tuple[str, ...] = ()
    if plan.discover and plan.namespace is not None:
        found = discover_servers(
            plan.namespace, port=plan.port, resolver=resolver, options=settings.transport, max_seconds=10.0
        )
        discovered = found.servers
        click.echo(f"server discovery: {found.detail}", err=True)
    targets = plan.targets(discovered)
    settings = plan.settings_for(discovered)
    fns = load_probes(plan.probes)
    jobs = [probe_job(target, name, fn, settings, resolver) for target in targets for name, fn in fns.items()]
    sessions = tuple(SessionProbe(target, settings, resolver) for target in targets) if with_session else ()
    jobs += [Job(session.target, SESSION, session, abandonable=False) for session in sessions]
    budget = probe_deadline(interval, settings.timeout_s)
    probes = (*plan.probes, *((SESSION,) if with_session else ()))
    lab_dir = (options.lab_dir or default_lab_dir()) if options.lab else None
    summary = {
        **plan.summary(),
        "probes": list(probes),
        "interval_s": interval,
        "probe_deadline_s": budget,
        "duration_s": duration,
        "notification_wait_hold_s": WAIT_HOLD_S if with_session else None,
        "lab_dir": str(lab_dir) if lab_dir is not None else None,
        "metrics": metrics,
        "discovered_servers": list(discovered),
    }
    run = RunInfo(
        run_id=str(uuid.uuid4()),
        started_at=time.time(),
        casprobe_version=__version__,
        interval_s=interval,
        targets=tuple(f"{t.display}={t.name}" for t in targets),
        probes=probes,
        tls_verification=not settings.transport.tls.insecure,
        settings=json.dumps(summary, default=str, sort_keys=True),
        host=socket.gethostname(),
    )
    events = lab_dir / "events.jsonl" if lab_dir is not None else None
    return _Setup(store_path, interval, duration, budget, targets, tuple(jobs), sessions, run, events, address)


class _Deliver:
    """The fan-out every result goes through (from worker threads): the store first, then the board and view."""

    def __init__(self, store: ResultSink, board: Board, view: View) -> None:
        self.store, self.board, self.view = store, board, view
        self.scheduler: Scheduler | None = None
        self.unsaved = 0
        self._lock = threading.Lock()

    def __call__(self, result: ProbeResult) -> None:
        try:
            self.store.add_result(result)
        except Exception as exc:  # the watch goes on; the end of the run says how many were not stored
            with self._lock:
                self.unsaved += 1
                count = self.unsaved
            if count == 1 or count % 100 == 0:
                _log.warning("storing a result failed (%d so far): %s", count, exc)
        if self.scheduler is not None:
            self.board.set_skipped(self.scheduler.skipped())
        event = self.board.record(result)
        if event is not None:
            self.view.outage(event)


def _run(setup: _Setup, store: ResultSink, board: Board, metrics: MetricsServer | None) -> None:
    interactive = sys.stdout.isatty()
    header = ViewHeader(setup.store, setup.interval, setup.run.tls_verification, time.monotonic())
    view: View = LiveView(board, header) if interactive else PlainView()
    deliver = _Deliver(store, board, view)
    scheduler = Scheduler(setup.jobs, interval_s=setup.interval, budget_s=setup.budget, on_result=deliver)
    deliver.scheduler = scheduler
    tail = LabTail(setup.lab_events, store) if setup.lab_events is not None else None
    flag = _StopFlag()
    previous = {sig: signal.signal(sig, flag.handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    names = len(setup.targets)
    click.echo(
        f"casprobe watch: {names} name(s) × {len(setup.run.probes)} probe(s) every {setup.interval:g} s "
        f"(deadline {setup.budget:g} s); store {setup.store}; Ctrl-C ends the run"
        + ("" if setup.run.tls_verification else "; TLS verification OFF"),
        err=not interactive,
    )
    started = time.monotonic()
    try:
        if metrics is not None:
            metrics.start()
            click.echo(f"metrics on http://{metrics.address[0]}:{metrics.address[1]}/metrics", err=True)
        if tail is not None:
            tail.start()
        view.start()
        try:
            scheduler.run(duration_s=setup.duration, stop_flag=flag)
        finally:
            view.stop()
            _close_sessions(setup.sessions)
            if tail is not None:
                tail.stop()
            store.finish(time.time())
    finally:
        if metrics is not None:
            metrics.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _summary(board, scheduler, setup, time.monotonic() - started, deliver.unsaved, tail)


def _close_sessions(sessions: tuple[SessionProbe, ...], timeout_s: float = 2.0) -> None:
    """Disconnect every session at once (each within ``timeout_s``): a dead server costs the wait once, not per name."""
    threads = [threading.Thread(target=s.close, args=(timeout_s,), daemon=True) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=2 * timeout_s + 1.0)


def _summary(
    board: Board, scheduler: Scheduler, setup: _Setup, elapsed: float, unsaved: int, tail: LabTail | None
) -> None:
    rows = board.snapshot()
    results = sum(row.results for row in rows)
    outages = sum(row.outages for row in rows)
    skipped = sum(scheduler.skipped().values())
    lines = [f"watched for {elapsed:.1f} s: {results} results, {outages} outage(s), {skipped} skipped slot(s)"]
    lines += [
        f"  {row.target.display} {row.probe}: {row.outages} outage(s), {row.failures}/{row.results} failed"
        for row in rows
        if row.outages
    ]
    if tail is not None:
        lines.append(f"lab events copied: {tail.copied}")
    if unsaved:
        lines.append(f"WARNING: {unsaved} result(s) could not be stored")
    lines.append(f"store: {setup.store}")
    click.echo("\n".join(lines))
