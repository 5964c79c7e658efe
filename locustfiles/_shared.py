"""What casprobe's Locust users share: options, the lab or profile they point at, cohorts, and the disconnect
records (Locust ignores files whose name starts with ``_`` when given a directory).

- Options (``--casprobe-…``, also as ``CASPROBE_…`` environment variables; Locust hands them to its workers).
- Every simulated client belongs to a cohort (``--casprobe-cohorts namespace=2,mb1=1``): the namespace, or one
  server's own name. Each client keeps a :class:`~casprobe.load.tracker.DisconnectTracker`; every interval in which
  it could not work becomes a ``DISCONNECT`` request in Locust's statistics, named after the cohort, whose
  response time is the interval's length: Locust's table then shows, per cohort, the disconnect count and the
  longest one beside the usual request rows; the per-cohort totals are printed (and written as
  ``<csv prefix>_cohorts.csv``) at the end.
- The records (``--casprobe-records run.jsonl``, see :mod:`casprobe.load.records`) are written by the process that
  coordinates: a worker sends each record to the master (``casprobe_record`` messages), which writes them; a
  single process writes them itself. ``casprobe load`` then hands them to a run store.
"""

from __future__ import annotations

import sys

# Locust has monkey-patched the standard library with gevent by now, and gevent removes select.epoll; httpcore
# (under casprobe.net) probes for trio with "import trio", and trio then fails with AttributeError instead of the
# ImportError httpcore expects. casprobe never uses trio: make that import fail the expected way.
if "trio" not in sys.modules:
    sys.modules["trio"] = None  # type: ignore[assignment]

import csv
import itertools
import logging
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from casprobe import __version__
from casprobe.analysis_load import cohort_figures
from casprobe.config import Profile, lab_profile_path, load_profile
from casprobe.errors import CasprobeError
from casprobe.load.accounts import LoadAccount, read_accounts
from casprobe.load.cohorts import CohortPlan, parse_cohorts
from casprobe.load.outlook import OutlookBehaviour, RequestReport
from casprobe.load.records import RecordWriter, collect, disconnect_record
from casprobe.load.tracker import DisconnectTracker
from casprobe.model import LoadDisconnect
from casprobe.net.credentials import Credentials
from casprobe.net.resolve import Resolver
from casprobe.net.tls import TlsOptions
from casprobe.net.transport import TransportOptions

log = logging.getLogger("casprobe.load")

MESSAGE = "casprobe_record"
DISCONNECT = "DISCONNECT"


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("casprobe", "Outlook-shaped load against an Exchange organisation or the lab")
    group.add_argument("--casprobe-lab", default="", env_var="CASPROBE_LAB", help="lab folder (its profile.toml)")
    group.add_argument("--casprobe-profile", default="", env_var="CASPROBE_PROFILE", help="casprobe profile (TOML)")
    group.add_argument("--casprobe-accounts", default="", env_var="CASPROBE_ACCOUNTS", help="accounts CSV")
    group.add_argument("--casprobe-cohorts", default="", env_var="CASPROBE_COHORTS", help="e.g. namespace=2,mb1=1")
    group.add_argument("--casprobe-auth", default="ntlm", choices=["ntlm", "negotiate", "basic"], help="auth")
    group.add_argument("--casprobe-burst", type=int, default=3, help="Executes per work cycle")
    group.add_argument("--casprobe-idle", default="5-10", help="NotificationWait parked between bursts, s (A-B)")
    group.add_argument("--casprobe-ping-every", type=int, default=4, help="cycles between PINGs (0 = never)")
    group.add_argument("--casprobe-backoff", default="1-2", help="wait after a failure, s (A-B)")
    group.add_argument("--casprobe-think", default="2-5", help="Outlook for Mac: think time between EWS calls, s")
    group.add_argument("--casprobe-timeout", type=float, default=10.0, help="per-operation timeout, s")
    group.add_argument("--casprobe-records", default="", env_var="CASPROBE_RECORDS", help="records file (JSONL)")


def _range(text: str, what: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    try:
        a, b = float(low), float(high or low)
    except ValueError:
        raise CasprobeError(f"--casprobe-{what} {text!r}: expected seconds as A or A-B") from None
    if not 0 <= a <= b < 3600:
        raise CasprobeError(f"--casprobe-{what} {text!r}: expected 0 <= A <= B < 3600")
    return a, b


@dataclass(frozen=True, slots=True)
class LoadSettings:
    """Everything a simulated client needs, read once per process from the options."""

    profile: Profile
    accounts: tuple[LoadAccount, ...]
    cohorts: CohortPlan
    resolver: Resolver
    transport: TransportOptions
    behaviour: OutlookBehaviour
    auth: str
    think_s: tuple[float, float] = (2.0, 5.0)

    def describe(self) -> dict[str, Any]:
        """The settings as the records keep them (never a secret)."""
        return {
            "namespace": self.profile.namespace,
            "servers": list(self.profile.servers),
            "cohorts": {c.label: c.weight for c in self.cohorts.cohorts},
            "accounts": len(self.accounts),
            "auth": self.auth,
            "tls_verification": not self.transport.tls.insecure,
            "behaviour": {
                "executes_per_burst": self.behaviour.executes_per_burst,
                "idle_s": list(self.behaviour.idle_s),
                "ping_every": self.behaviour.ping_every,
                "backoff_s": list(self.behaviour.backoff_s),
            },
        }


def _profile(options: Any) -> Profile:
    if options.casprobe_profile:
        return load_profile(Path(options.casprobe_profile))
    folder = Path(options.casprobe_lab) if options.casprobe_lab else None
    return load_profile(lab_profile_path(folder))


def _accounts(options: Any, profile: Profile) -> tuple[LoadAccount, ...]:
    if options.casprobe_accounts:
        return read_accounts(Path(options.casprobe_accounts))
    if profile.lab_dir is not None and (profile.lab_dir / "accounts.csv").is_file():
        return read_accounts(profile.lab_dir / "accounts.csv")
    if profile.mailbox and profile.user and profile.password_file:
        from casprobe.net.credentials import Secret

        secret = Secret(profile.password_file.read_text(encoding="utf-8").rstrip("\r\n"))
        return (LoadAccount(profile.mailbox, Credentials(profile.user, secret)),)
    raise CasprobeError("no accounts: give --casprobe-accounts FILE (smtp,user,password_file)")


def load_settings(options: Any) -> LoadSettings:
    profile = _profile(options)
    if not profile.namespace:
        raise CasprobeError(f"{profile.path}: the profile names no namespace")
    first = profile.servers[0].split(".", 1)[0] if profile.servers else None
    spec = options.casprobe_cohorts or ("namespace=2" + (f",{first}=1" if first else ""))
    tls = TlsOptions(ca_file=profile.ca_file, insecure=bool(profile.insecure))
    return LoadSettings(
        profile=profile,
        accounts=_accounts(options, profile),
        cohorts=parse_cohorts(spec, namespace=profile.namespace, servers=profile.servers),
        resolver=Resolver(profile.resolve),
        transport=TransportOptions(tls=tls, timeout_s=options.casprobe_timeout),
        behaviour=OutlookBehaviour(
            executes_per_burst=max(1, options.casprobe_burst),
            idle_s=_range(options.casprobe_idle, "idle"),
            ping_every=max(0, options.casprobe_ping_every),
            backoff_s=_range(options.casprobe_backoff, "backoff"),
        ),
        auth=options.casprobe_auth,
        think_s=_range(getattr(options, "casprobe_think", "2-5"), "think"),
    )


class LoadState:
    """Per process: the settings, the user counter, the trackers alive, and the records sink."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.settings: LoadSettings | None = None
        self._counters: dict[str, itertools.count[int]] = {}
        self.trackers: dict[str, DisconnectTracker] = {}
        self.writer: RecordWriter | None = None
        self.records: list[dict[str, Any]] = []  # kept by the coordinating process for the summary
        self.requests: dict[str, int] = {}
        self.failures: dict[str, int] = {}
        self.started_at = time.time()

    @property
    def tag(self) -> str:
        """The process's part of a user id: ``w<index>`` on a worker (known once the master accepted it), ``l``."""
        runner = self.environment.runner
        return f"w{runner.worker_index}" if isinstance(runner, WorkerRunner) else "l"

    @property
    def coordinating(self) -> bool:
        return not isinstance(self.environment.runner, WorkerRunner)

    def next_index(self, client: str) -> int:
        """The next user number of a client kind in this process (each kind dealt out over cohorts on its own)."""
        return next(self._counters.setdefault(client, itertools.count()))

    def get_settings(self) -> LoadSettings:
        if self.settings is None:
            self.settings = load_settings(self.environment.parsed_options)
            _pin_names(self.settings.resolver)
        return self.settings

    def record(self, obj: dict[str, Any]) -> None:
        """Keep a record: write it here (coordinating process) or send it to the master (worker)."""
        runner = self.environment.runner
        if isinstance(runner, WorkerRunner):
            runner.send_message(MESSAGE, obj)
            return
        self.records.append(obj)
        if self.writer is not None:
            self.writer.write(obj)

    def tracker(self, cohort: str, user: str, client: str, name: str) -> DisconnectTracker:
        def closed(record: LoadDisconnect) -> None:
            end = record.ended_at if record.ended_at is not None else time.time()
            self.environment.events.request.fire(
                request_type=DISCONNECT,
                name=f"cohort {record.cohort}",
                response_time=(end - record.started_at) * 1000.0,
                response_length=record.failures,
                exception=None,
                context={"cohort": record.cohort},
            )
            self.record(disconnect_record(record))

        tracker = DisconnectTracker(cohort, user, client, name, closed)
        self.trackers[user] = tracker
        self.record({"type": "user", "cohort": cohort, "user": user, "client": client, "name": name})
        return tracker


_STATE: dict[int, LoadState] = {}


def state(environment: Environment) -> LoadState:
    found = _STATE.get(id(environment))
    if found is None:
        found = _STATE[id(environment)] = LoadState(environment)
    return found


def report(environment: Environment, request: RequestReport) -> None:
    """A simulated client's request into Locust's statistics (failures named by error class and detail)."""
    load = state(environment)
    load.requests[request.cohort] = load.requests.get(request.cohort, 0) + 1
    if request.error is not None:
        load.failures[request.cohort] = load.failures.get(request.cohort, 0) + 1
    environment.events.request.fire(
        request_type=request.kind,
        name=request.name,
        response_time=request.elapsed_ms,
        response_length=request.size,
        exception=request.error,  # a str: Locust's failure table shows it as is ("connect: connection refused")
        context={"cohort": request.cohort},
    )


def _pin_names(resolver: Resolver) -> None:
    """Make the profile's pinned names resolve for libraries that use the socket module (exchangelib)."""
    original = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any = None, *args: Any, **kwargs: Any) -> Any:
        pin = resolver.pin_for(host) if isinstance(host, str) else None
        if pin is None:
            return original(host, port, *args, **kwargs)
        return original(pin.address, pin.port or port, *args, **kwargs)

    if getattr(socket.getaddrinfo, "__casprobe__", False):
        return
    getaddrinfo.__casprobe__ = True  # type: ignore[attr-defined]
    socket.getaddrinfo = getaddrinfo


@events.init.add_listener
def _init(environment: Environment, **_kwargs: Any) -> None:
    # gevent's loop caches its clock and has not run while the locustfiles were imported (exchangelib alone takes
    # about a second): without this, Locust's --run-time timer fires early by that much
    gevent.get_hub().loop.update_now()
    load = state(environment)
    options = environment.parsed_options
    if options is None:
        return
    if isinstance(environment.runner, MasterRunner):
        environment.runner.register_message(MESSAGE, lambda msg, **_kw: load.record(msg.data))
    if load.coordinating and options.casprobe_records:
        load.writer = RecordWriter(Path(options.casprobe_records))


@events.test_start.add_listener
def _test_start(environment: Environment, **_kwargs: Any) -> None:
    load = state(environment)
    if not load.coordinating:
        return
    load.started_at = time.time()
    try:
        described = load.get_settings().describe()
    except CasprobeError as exc:
        log.error("casprobe: %s", exc)
        described = {}
    source = f"locust (casprobe {__version__})"
    if isinstance(environment.runner, MasterRunner):
        source += f", {environment.runner.worker_count} workers"
    load.record({"type": "run", "started_at": load.started_at, "source": source, "settings": described})


@events.test_stop.add_listener
def _test_stop(environment: Environment, **_kwargs: Any) -> None:
    load = state(environment)
    for tracker in list(load.trackers.values()):
        tracker.finish()
    for cohort, count in sorted(load.requests.items()):
        failed = load.failures.get(cohort, 0)
        load.record({"type": "tally", "cohort": cohort, "user": load.tag, "requests": count, "failures": failed})
    load.requests.clear()
    load.failures.clear()
    if not load.coordinating:
        return
    load.record({"type": "end", "ended_at": time.time()})


@events.quitting.add_listener
def _quitting(environment: Environment, **_kwargs: Any) -> None:
    load = state(environment)
    if not load.coordinating or not load.records:
        return
    summary = summarise(load.records)
    for line in summary_lines(summary):
        print(line)
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix:
        write_cohort_csv(Path(f"{prefix}_cohorts.csv"), summary)
    if load.writer is not None:
        load.writer.close()


def summarise(records: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per-cohort figures of the records kept so far (see casprobe.analysis_load)."""
    collected = collect(records)
    return [
        {
            "cohort": f.cohort,
            "users": f.users,
            "users_cut_off": f.users_cut_off,
            "disconnects": f.disconnects,
            "still_open": f.still_open,
            "client_seconds": round(f.client_seconds, 3),
            "longest_s": round(f.longest_s, 3),
            "mean_per_user_s": round(f.mean_per_user_s, 3),
        }
        for f in cohort_figures(collected.run, collected.disconnects)
    ]


def summary_lines(summary: list[dict[str, Any]]) -> list[str]:
    head = f"{'cohort':<12} {'users':>6} {'cut off':>8} {'disconnects':>11} {'total s':>10} {'longest s':>10}"
    lines = ["", "casprobe: time each cohort's clients could not work", head]
    for row in summary:
        lines.append(
            f"{row['cohort']:<12} {row['users']:>6} {row['users_cut_off']:>8} {row['disconnects']:>11} "
            f"{row['client_seconds']:>10.1f} {row['longest_s']:>10.1f}"
        )
    return lines


def write_cohort_csv(path: Path, summary: list[dict[str, Any]]) -> None:
    try:
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=list(summary[0]) if summary else ["cohort"])
            writer.writeheader()
            writer.writerows(summary)
    except OSError as exc:
        log.error("casprobe: cannot write %s: %s", path, exc)
