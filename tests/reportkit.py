"""A realistic synthetic run for the report tests: a namespace and three servers through mb1's maintenance.

Timeline (t = seconds from the run's start, one round per second):

- every name (namespace, mb1, mb2, mb3) × probe (health, mapi, ews, mapi-session);
- markers "mb1 maintenance start" at 60.0 and "mb1 maintenance end" at 121.0; lab events maintenance.start mb1
  (60.2), HAProxy be_mapi / be_ews mb1 DOWN (63.0 / 63.1), maintenance.end mb1 (120.3), HAProxy UP (125.0 / 125.1);
- mb1 fails every probe from 61 to 124 (http_status until 70, then connect);
- the namespace's mapi fails at 61 and 62 (http_status), its mapi-session at 62 (protocol); mb3's mapi fails at
  150 (timeout); after 125 the namespace is answered by MB1 again;
- one load run (namespace: 8 clients, mb1: 2 clients) with disconnect records and Locust request figures.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

from casprobe.model import (
    ErrorClass,
    LabEventRecord,
    LoadDisconnect,
    LoadRun,
    Marker,
    PhaseTimings,
    ProbeResult,
    RequestStat,
    RunInfo,
    Severity,
    Target,
    TargetKind,
    TlsFacts,
)
from casprobe.store import RunStore

WALL = 1_746_000_000.0  # 2025-04-30 08:00:00 UTC
MONO = 5_000.0
NS = Target("outlook.lab.test", TargetKind.NAMESPACE, label="namespace")
MB1 = Target("mb1.lab.test", TargetKind.SERVER, label="mb1")
MB2 = Target("mb2.lab.test", TargetKind.SERVER, label="mb2")
MB3 = Target("mb3.lab.test", TargetKind.SERVER, label="mb3")
TARGETS = (NS, MB1, MB2, MB3)
PROBES = ("health", "mapi", "ews", "mapi-session")
RUN_ID = "0b5c9a3e-2f1d-4c1e-9d0a-6f7e8a9b0c1d"


def run_info(*, ended: bool = True, seconds: int = 180, tls: bool = True) -> RunInfo:
    return RunInfo(
        run_id=RUN_ID,
        started_at=WALL,
        casprobe_version="0.1.0",
        interval_s=1.0,
        targets=tuple(f"{t.display}={t.name}" for t in TARGETS),
        probes=PROBES,
        tls_verification=tls,
        settings=json.dumps({"interval_s": 1.0, "user": "LAB\\alice", "lab_dir": "/tmp/lab <x>"}),
        host="probe-host",
        ended_at=WALL + seconds if ended else None,
    )


def _failure(target: Target, probe: str, t: float) -> tuple[ErrorClass, str] | None:
    if target is MB1 and 61 <= t < 125:
        return (ErrorClass.HTTP_STATUS, "503 Service Unavailable") if t < 70 else (ErrorClass.CONNECT, "refused")
    if target is NS and probe == "mapi" and t in (61.0, 62.0):
        return ErrorClass.HTTP_STATUS, "503 from a draining server"
    if target is NS and probe == "mapi-session" and t == 62.0:
        return ErrorClass.PROTOCOL, "X-ResponseCode 10 (context lost)"
    if target is MB3 and probe == "mapi" and t == 150.0:
        return ErrorClass.TIMEOUT, "read timeout"
    return None


def _tls(target: Target) -> TlsFacts:
    days = 12 if target is MB3 else 300
    return TlsFacts(
        version="TLSv1.3",
        cipher="TLS_AES_256_GCM_SHA384",
        verified=True,
        name_match=True,
        not_after="2026-02-24T08:00:00+00:00",
        days_left=days,
        subject=f"CN={target.name}",
        issuer="CN=casprobe lab CA",
        san=(target.name,),
    )


def results(seconds: int = 180) -> Iterator[ProbeResult]:
    """Every result of the run, round by round."""
    for i in range(seconds):
        t = float(i)
        for target in TARGETS:
            for probe in PROBES:
                failure = _failure(target, probe, t)
                fe = None
                if target is NS and failure is None:
                    choices = ("MB2", "MB3") if 61 <= t < 125 else ("MB1", "MB2", "MB3")
                    fe = choices[i % len(choices)]
                elif target is not NS and failure is None:
                    fe = target.display.upper()
                base = 0.02 + 0.001 * (i % 7) + (0.03 if 60 <= t < 121 else 0.0)
                yield ProbeResult(
                    target,
                    probe,
                    failure is None,
                    Severity.OK if failure is None else Severity.CRITICAL,
                    None if failure is None else failure[0],
                    "" if failure is None else failure[1],
                    started_at=WALL + t + 0.001,
                    duration=base if failure is None else 0.5,
                    phases=PhaseTimings(connect=0.001, tls=0.004, auth=(0.003, 0.005), first_byte=base / 2, total=base),
                    fe_server=fe,
                    be_server="mb2.lab.test" if fe else None,
                    tls=_tls(target) if failure is None or failure[0] is not ErrorClass.CONNECT else None,
                    auth_offered=("Negotiate", "NTLM") if probe != "health" and failure is None else (),
                    auth_used="NTLM" if probe != "health" and failure is None else None,
                    started_mono=MONO + t,
                )


def markers() -> list[Marker]:
    return [
        Marker(WALL + 60.0, MONO + 60.0, "mb1 maintenance start"),
        Marker(WALL + 121.0, MONO + 121.0, "mb1 maintenance end"),
    ]


def lab_events() -> list[LabEventRecord]:
    rows = [
        (60.2, "maintenance.start", {"server": "mb1"}),
        (63.0, "haproxy.server", {"backend": "be_mapi", "server": "mb1", "state": "DOWN"}),
        (63.1, "haproxy.server", {"backend": "be_ews", "server": "mb1", "state": "DOWN"}),
        (120.3, "maintenance.end", {"server": "mb1"}),
        (125.0, "haproxy.server", {"backend": "be_mapi", "server": "mb1", "state": "UP"}),
        (125.1, "haproxy.server", {"backend": "be_ews", "server": "mb1", "state": "UP"}),
    ]
    return [LabEventRecord(i, WALL + t, MONO + t, kind, json.dumps(data)) for i, (t, kind, data) in enumerate(rows, 1)]


def load_run() -> tuple[LoadRun, list[LoadDisconnect]]:
    run = LoadRun(
        WALL + 10,
        WALL + 170,
        "locust 2.47.0, 1 worker",
        (("namespace", 8), ("mb1", 2)),
        (
            RequestStat("MAPI", "Connect", 40, 2, 35.0, 80.0, 210.0),
            RequestStat("MAPI", "Execute", 1200, 9, 22.0, 61.0, 400.0),
        ),
    )

    def d(cohort: str, user: str, start: float, end: float | None) -> LoadDisconnect:
        return LoadDisconnect(
            cohort, user, "outlook", f"{cohort}.lab.test", WALL + start, end and WALL + end, 2, ("http_status",)
        )

    return run, [
        d("namespace", "u1", 61.0, 63.0),
        d("namespace", "u2", 61.5, 62.5),
        d("mb1", "u9", 61.0, 124.0),
        d("mb1", "u10", 61.2, 124.5),
    ]


def build_store(path: Path, *, seconds: int = 180, ended: bool = True, load: bool = True) -> Path:
    """Write the run to a new store at ``path``."""
    with RunStore.create(path, run_info(ended=ended, seconds=seconds)) as store:
        for result in results(seconds):
            store.add_result(result)
        for marker in markers():
            store.add_marker(marker)
        store.add_lab_events(lab_events())
        if load:
            store.add_load_run(*load_run())
    return path


_FORBIDDEN_TAGS = {"script", "link", "img", "iframe", "object", "embed", "image", "video", "audio", "source", "base"}
_URL = re.compile(r"url\(\s*(?!['\"]?#)|@import", re.IGNORECASE)


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _FORBIDDEN_TAGS:
            self.found.append(f"<{tag}>")
        self._style = tag == "style"
        for name, value in attrs:
            value = (value or "").strip()
            if name.split(":")[-1] in ("href", "src", "srcset", "action", "data") and not value.startswith("#"):
                self.found.append(f"{tag} {name}={value}")
            if name == "style" and _URL.search(value):
                self.found.append(f"{tag} style={value}")

    def handle_endtag(self, tag: str) -> None:
        self._style = False

    def handle_data(self, data: str) -> None:
        if self._style and _URL.search(data):
            self.found.append("a url() or @import in a stylesheet")


def external_references(page: str) -> list[str]:
    """Every element, attribute or stylesheet rule of ``page`` that could load something from outside the page."""
    parser = _References()
    parser.feed(page)
    parser.close()
    return parser.found
