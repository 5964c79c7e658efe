"""Bench-only Locust users for ``bench/bench_load.py`` (not a load profile: real runs use ``locustfiles/``).

``python -m locust -f bench/locust_bench.py <UserClass> --headless ... --casprobe-lab <lab folder>``; it imports
``locustfiles/_shared.py`` (casprobe options, settings, name pins, ``report``) as the real locustfiles do. Every
user talks to one lab server's own name (``CASPROBE_BENCH_SERVER``), so HAProxy is not in the path.

Execute loops: Connect once per user ([MS-OXCMAPIHTTP] 2.2.4.1), then Execute with one RopLogon (2.2.4.2,
[MS-OXCROPS] 2.2.3.1) built by casprobe's codecs, ``wait_time = constant(0)``, each Execute one Locust request:
:class:`OutlookExecuteUser` (WireClient + MapiSession + SpnegoAuth, NTLM with channel binding, events through
``_shared.report``), :class:`NtlmHttpExecuteUser` (HttpUser + requests-ntlm, ``trust_env = False``, ``verify`` =
the lab CA: field-notes.md §4; cookies kept by the requests session) and :class:`BasicFastExecuteUser`
(FastHttpUser with a static preemptive ``Authorization: Basic`` header: the lab requires authentication on /mapi).
The baselines check HTTP 200 and ``X-ResponseCode: 0``; the Outlook user checks what MapiSession checks.
:class:`IdleOutlookUser` is casprobe.load.outlook's simulated Outlook, Autodiscover included, on the same name.

A probe greenlet writes JSON lines to ``CASPROBE_BENCH_OUT``. Rate mode (``CASPROBE_BENCH_WINDOW=warmup,seconds``):
one ``rate`` line for a window that starts once every user runs (this process's CPU from ``/proc/self/stat``, the
lab's and the machine's, Execute count, failures, percentiles of the window only), then Locust quits. Idle mode
(``CASPROBE_BENCH_STEPS=2000,3000``, ``_RATE``, ``_HOLD``, ``_PARK_TIMEOUT``): per step, once every user has done
its Execute (and so parked its NotificationWait, 3.2.5.5) and been held, a ``step`` line with VmRSS and the
lab-side established connections (``/proc/net/tcp``). Then ``done``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# As locustfiles/_shared.py explains: under gevent, httpcore's "import trio" must fail the expected way.
if "trio" not in sys.modules:
    sys.modules["trio"] = None  # type: ignore[assignment]
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "locustfiles"))

import base64
import itertools
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import gevent  # type: ignore[import-untyped]
import gevent.socket  # type: ignore[import-untyped]
import gevent.ssl  # type: ignore[import-untyped]
from _shared import LoadSettings, report, state
from locust import HttpUser, User, constant, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment
from requests_ntlm import HttpNtlmAuth

from casprobe.lab.org import Org
from casprobe.load.accounts import LoadAccount
from casprobe.load.cohorts import Cohort
from casprobe.load.outlook import OutlookClient, RequestReport
from casprobe.model import Target
from casprobe.net.auth import SpnegoAuth
from casprobe.net.wire import WireClient
from casprobe.probes.mapireply import MapiOutcome
from casprobe.probes.mapisession import CLIENT_APPLICATION, MapiMailbox, MapiSession
from casprobe.protocols.mapihttp import ConnectRequest, ExecuteRequest
from casprobe.protocols.rops import RopLogonRequest, build_rop_buffer

SERVER = os.environ.get("CASPROBE_BENCH_SERVER", "")
CLOCK_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_USER_NUMBERS = itertools.count()

# --------------------------------------------------------------------------- shared set-up


def _bench(environment: Environment) -> tuple[LoadSettings, Org, LoadAccount, int]:
    """The settings (casprobe options), the lab organisation, this user's account (in turn) and its index."""
    load = state(environment)
    settings = load.get_settings()
    if settings.profile.lab_dir is None:
        raise RuntimeError("locust_bench needs --casprobe-lab (a lab folder)")
    index = next(_USER_NUMBERS)  # this module's own count: _shared's user counters are not part of its API
    account = settings.accounts[index % len(settings.accounts)]
    return settings, Org.load(settings.profile.lab_dir / "org.json"), account, index


def _mailbox(org: Org, smtp: str) -> MapiMailbox:
    """What Autodiscover hands out for ``smtp`` (user DN, EMSMDB path), from the lab's org.json."""
    user = org.find_user(smtp)
    if user is None:
        raise RuntimeError(f"{smtp} is not a lab mailbox")
    return MapiMailbox(user.legacy_dn, f"/mapi/emsmdb/?MailboxId={user.mailbox_id}", user.mailbox_id)


class MapiExchange:
    """A baseline's Connect and Execute: the bodies and the headers MapiSession sends (``{GUID}:n`` ids)."""

    def __init__(self, mailbox: MapiMailbox, extra: Mapping[str, str]) -> None:
        self.path, self.extra, self.counter = mailbox.path, dict(extra), 0
        self.request_guid = "{" + str(uuid.uuid4()).upper() + "}"
        self.client_info = "{" + str(uuid.uuid4()).upper() + "}:1"
        self.connect = ConnectRequest(mailbox.user_dn, 0, 1252, 1033, 1033).encode()
        self.execute = ExecuteRequest(
            build_rop_buffer(RopLogonRequest(mailbox.user_dn).encode(), [0xFFFFFFFF])
        ).encode()

    def headers(self, kind: str) -> dict[str, str]:
        self.counter += 1
        return {
            "Content-Type": "application/mapi-http",
            "Accept": "*/*",
            "Accept-Encoding": "identity",
            "X-RequestType": kind,
            "X-RequestId": f"{self.request_guid}:{self.counter}",
            "X-ClientInfo": self.client_info,
            "X-ClientApplication": CLIENT_APPLICATION,
            **self.extra,
        }

    def post(self, client: Any, kind: str) -> None:
        """POST through a Locust client; a failure unless HTTP 200 with X-ResponseCode 0."""
        body = self.connect if kind == "Connect" else self.execute
        with client.post(self.path, data=body, headers=self.headers(kind), name=kind, catch_response=True) as answer:
            code = answer.headers.get("X-ResponseCode")
            if answer.status_code != 200 or code != "0":
                answer.failure(f"HTTP {answer.status_code}, X-ResponseCode {code}")


# --------------------------------------------------------------------------- the Execute loops


class OutlookExecuteUser(User):
    """The Outlook user's stack in an Execute loop: WireClient + MapiSession + SpnegoAuth (NTLM, channel binding)."""

    wait_time = constant(0)

    def on_start(self) -> None:
        settings, org, account, _index = _bench(self.environment)
        target = Target(SERVER, port=settings.profile.port or 443)
        self.client = WireClient(target, resolver=settings.resolver, options=settings.transport)
        auth = SpnegoAuth(account.credentials, "ntlm", channel_binding=True)
        self.session = MapiSession(self.client, _mailbox(org, account.smtp), auth=auth)
        self._timed("Connect", self.session.connect)

    def _timed(self, name: str, call: Callable[[], MapiOutcome[Any]]) -> None:
        """As OutlookClient._timed: run, then one RequestReport through _shared.report."""
        started = time.perf_counter()
        outcome = call()
        size = len(outcome.exchange.body) if outcome.exchange is not None else 0
        kind = outcome.error_class.value if outcome.error_class is not None else "protocol"
        error = None if outcome.ok else f"{kind}: {outcome.detail}"[:120]
        elapsed = (time.perf_counter() - started) * 1000.0
        report(self.environment, RequestReport("MAPI", name, elapsed, size, error, "bench"))

    @task
    def execute(self) -> None:
        if self.session.connected:
            self._timed("Execute", self.session.execute_logon)
        else:
            self._timed("Connect", self.session.connect)

    def on_stop(self) -> None:
        self.client.close()


class NtlmHttpExecuteUser(HttpUser):
    """Locust's HttpUser with requests-ntlm (channel binding on by default): the same Connect and Execute."""

    wait_time = constant(0)

    def on_start(self) -> None:
        settings, org, account, _index = _bench(self.environment)
        self.client.trust_env = False  # else REQUESTS_CA_BUNDLE overrides verify (field-notes.md §4)
        self.client.verify = str(settings.profile.ca_file)
        self.client.auth = HttpNtlmAuth(account.credentials.username, account.credentials.secret.reveal())
        self.mapi = MapiExchange(_mailbox(org, account.smtp), {})
        self.mapi.post(self.client, "Connect")

    @task
    def execute(self) -> None:
        self.mapi.post(self.client, "Execute")


def _fast_tls() -> Any:
    """The lab CA only (certificate checks on), for geventhttpclient."""
    return gevent.ssl.create_default_context(cafile=os.environ.get("CASPROBE_BENCH_CA") or None)


class BasicFastExecuteUser(FastHttpUser):
    """FastHttpUser without a handshake: a static preemptive ``Authorization: Basic`` header on every request."""

    wait_time = constant(0)
    concurrency = 1  # one TCP connection per user, as the other two
    insecure = False
    ssl_context_factory = staticmethod(_fast_tls)

    def on_start(self) -> None:
        _settings, org, account, _index = _bench(self.environment)
        pair = f"{account.credentials.username}:{account.credentials.secret.reveal()}".encode()
        basic = {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        self.mapi = MapiExchange(_mailbox(org, account.smtp), basic)
        self.mapi.post(self.client, "Connect")

    @task
    def execute(self) -> None:
        self.mapi.post(self.client, "Execute")


# --------------------------------------------------------------------------- idle sessions


class IdleOutlookUser(User):
    """The simulated Outlook (casprobe.load.outlook), built as locustfiles/outlook.py does, all on one name."""

    wait_time = constant(0)  # the parked NotificationWait is the think time

    def on_start(self) -> None:
        settings, _org, account, index = _bench(self.environment)
        load = state(self.environment)
        cohort = Cohort("bench", SERVER, 1)
        self.outlook = OutlookClient(
            smtp=account.smtp,
            auth=SpnegoAuth(account.credentials, "ntlm", channel_binding=True),
            cohort=cohort,
            autodiscover_host=SERVER,
            port=settings.profile.port or 443,
            resolver=settings.resolver,
            options=settings.transport,
            tracker=load.tracker(cohort.label, f"{load.tag}-idle-{index}", "outlook", cohort.host),
            report=lambda request: report(self.environment, request),
            behaviour=settings.behaviour,
        )

    @task
    def work(self) -> None:
        self.outlook.step()


# --------------------------------------------------------------------------- the probe


def _proc_cpu(pid: str) -> float:
    """utime + stime of every thread of ``pid`` (``self`` or a number) so far, from /proc; NaN when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) * CLOCK_TICK_S
    except (OSError, ValueError, IndexError):
        return float("nan")


def other_cpu() -> list[float]:
    """CPU seconds so far of the pids in ``CASPROBE_BENCH_WATCH`` (lab, HAProxy), then of the whole machine
    (``/proc/stat`` user nice system irq softirq steal)."""
    out = [_proc_cpu(pid) for pid in filter(None, os.environ.get("CASPROBE_BENCH_WATCH", "").split(","))]
    fields = Path("/proc/stat").read_text().partition("\n")[0].split()[1:]
    return [*out, sum(int(fields[i]) for i in (0, 1, 2, 5, 6, 7)) * CLOCK_TICK_S]


def status_kb(field: str) -> int:
    """A ``kB`` line of ``/proc/self/status`` (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def lab_side_connections(address: str, port: int) -> int:
    """ESTABLISHED TCP connections whose local end is ``address:port`` (the server's side), from /proc/net/tcp."""
    want = f"{socket.inet_aton(address)[::-1].hex().upper()}:{port:04X}"
    with open("/proc/net/tcp") as table:
        return sum(1 for line in table if line.split()[1:4:2] == [want, "01"])


def _counts(environment: Environment) -> dict[str, tuple[int, int]]:
    """(requests, failures) per request name, every request type together."""
    out: dict[str, tuple[int, int]] = {}
    for (name, _method), entry in environment.stats.entries.items():
        done, failed = out.get(name, (0, 0))
        out[name] = (done + entry.num_requests, failed + entry.num_failures)
    return out


def _times(environment: Environment, name: str) -> dict[int, int]:
    """Locust's rounded response-time histogram (ms -> count) of the requests named ``name``."""
    merged: dict[int, int] = {}
    for (entry_name, _method), entry in environment.stats.entries.items():
        for ms, n in entry.response_times.items() if entry_name == name else ():
            merged[ms] = merged.get(ms, 0) + n
    return merged


def percentile(histogram: Mapping[int, int], q: float) -> float:
    """The q-quantile of a response-time histogram (ms); NaN when empty."""
    rank, seen = q * sum(histogram.values()), 0
    for ms in sorted(histogram):
        seen += histogram[ms]
        if seen >= rank > 0:
            return float(ms)
    return float("nan")


def _errors(environment: Environment) -> list[str]:
    top = sorted(environment.stats.errors.values(), key=lambda e: -e.occurrences)[:3]
    return [f"{e.occurrences}x {e.name}: {str(e.error)[:160]}" for e in top]


def _write(obj: dict[str, Any]) -> None:
    with open(os.environ["CASPROBE_BENCH_OUT"], "a", encoding="utf-8") as out:
        out.write(json.dumps(obj) + "\n")


def _rate_probe(environment: Environment, warmup: float, seconds: float) -> None:
    runner, options = environment.runner, environment.parsed_options
    users = int(options.num_users) if options is not None else 0
    deadline = time.monotonic() + 120
    while runner is None or runner.state != "running" or runner.user_count < users:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{users} users not running within 120 s: {_errors(environment)}")
        gevent.sleep(0.05)
    gevent.sleep(warmup)
    t0, cpu0, others0, n0, h0 = (
        time.monotonic(),
        _proc_cpu("self"),
        other_cpu(),
        _counts(environment),
        _times(environment, "Execute"),
    )
    gevent.sleep(seconds)
    t1, cpu1, others1, n1, h1 = (
        time.monotonic(),
        _proc_cpu("self"),
        other_cpu(),
        _counts(environment),
        _times(environment, "Execute"),
    )
    window = {ms: n - h0.get(ms, 0) for ms, n in h1.items()}
    (done0, failed0), (done1, failed1) = n0.get("Execute", (0, 0)), n1.get("Execute", (0, 0))
    _write(
        {
            "kind": "rate",
            "users": users,
            "seconds": t1 - t0,
            "cpu_s": cpu1 - cpu0,
            "others_cpu_s": [b - a for a, b in zip(others0, others1, strict=True)],
            "requests": done1 - done0,
            "failures": failed1 - failed0,
            "median_ms": percentile(window, 0.5),
            "p95_ms": percentile(window, 0.95),
            "totals": n1,
            "errors": _errors(environment),
        }
    )


def _idle_probe(environment: Environment, steps: list[int], rate: float, hold: float, timeout: float) -> None:
    runner, settings = environment.runner, state(environment).get_settings()
    pin = settings.resolver.pin_for(SERVER)
    if runner is None or pin is None:
        raise RuntimeError(f"no runner, or the lab profile pins no address for {SERVER}")
    _write({"kind": "start", "rss_kb": status_kb("VmRSS")})
    for number, users in enumerate(steps):
        if number:
            runner.start(users, rate)
        started, reached = time.monotonic(), False
        while not reached and time.monotonic() - started < timeout:
            counts = _counts(environment)
            if sum(failed for _done, failed in counts.values()):
                break
            reached = runner.user_count >= users and counts.get("Execute", (0, 0))[0] >= users
            gevent.sleep(0 if reached else 0.2)
        ramp_s, hold_cpu = time.monotonic() - started, float("nan")
        if reached:
            gevent.sleep(hold / 2)
            cpu0, t0 = _proc_cpu("self"), time.monotonic()
            gevent.sleep(hold / 2)
            hold_cpu = (_proc_cpu("self") - cpu0) / (time.monotonic() - t0)
        counts = _counts(environment)
        _write(
            {
                "kind": "step",
                "users": users,
                "running": runner.user_count,
                "reached": reached,
                "ramp_s": ramp_s,
                "hold_cpu": hold_cpu,
                "rss_kb": status_kb("VmRSS"),
                "hwm_kb": status_kb("VmHWM"),
                "lab_connections": lab_side_connections(pin.address, settings.profile.port or 443),
                "counts": counts,
                "errors": _errors(environment),
            }
        )
        failures = sum(failed for _done, failed in counts.values())
        if not reached or failures > 0:
            break


def _probe(environment: Environment) -> None:
    env = os.environ.get
    try:
        if window := env("CASPROBE_BENCH_WINDOW"):
            warmup, seconds = (float(x) for x in window.split(","))
            _rate_probe(environment, warmup, seconds)
        elif steps := env("CASPROBE_BENCH_STEPS"):
            steps_list = [int(x) for x in steps.split(",")]
            rate, hold = float(env("CASPROBE_BENCH_RATE", "100")), float(env("CASPROBE_BENCH_HOLD", "20"))
            _idle_probe(environment, steps_list, rate, hold, float(env("CASPROBE_BENCH_PARK_TIMEOUT", "120")))
    except Exception as exc:  # the parent must hear of it, not wait for a line that never comes
        _write({"kind": "error", "detail": f"probe failed: {type(exc).__name__}: {exc}"})
    _write({"kind": "done"})
    if env("CASPROBE_BENCH_WINDOW") and environment.runner is not None:
        environment.runner.quit()


def _pin_gevent_names(environment: Environment) -> None:
    """geventhttpclient resolves through gevent.socket.getaddrinfo, which _shared's pin does not cover."""
    resolver, original = state(environment).get_settings().resolver, gevent.socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        pin = resolver.pin_for(host) if isinstance(host, str) else None
        return original(pin.address if pin is not None else host, *args, **kwargs)

    gevent.socket.getaddrinfo = getaddrinfo


_started: list[bool] = []


@events.test_start.add_listener  # type: ignore[untyped-decorator]
def _start_probe(environment: Environment, **_kwargs: Any) -> None:
    if _started or not os.environ.get("CASPROBE_BENCH_OUT"):
        return
    _started.append(True)
    _pin_gevent_names(environment)
    gevent.spawn(_probe, environment)
