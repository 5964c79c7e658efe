"""Graceful DAG maintenance and abrupt power-off, measured through HAProxy against the lab's event log."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.labkit import LabHandle, start_lab

pytestmark = pytest.mark.lab


@dataclass(frozen=True)
class Sample:
    started: float  # time.monotonic() when the request was sent
    status: int  # 0 when the request failed
    fe_server: str


class NamespacePoller:
    """Sends a request through the namespace every few ms on a new connection and notes who answered."""

    def __init__(self, lab: LabHandle, path: str) -> None:
        self.lab, self.path = lab, path
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        # a new client (so a new TCP connection) per request: with L4 passthrough an open connection stays
        # with its server whatever HAProxy thinks of it, which is not what this poller measures
        url = self.lab.url(self.lab.org.namespace, self.path)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with self.lab.httpx_client(timeout=3.0) as client:
                    response = client.post(url, content=b"")
                self.samples.append(Sample(started, response.status_code, response.headers.get("x-feserver", "")))
            except httpx.HTTPError:
                self.samples.append(Sample(started, 0, ""))
            time.sleep(0.02)

    def __enter__(self) -> NamespacePoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture(params=["l7", "l4"])
def own_lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LabHandle]:
    handle = start_lab(tmp_path / "lab", lb=request.param)
    try:
        yield handle
    finally:
        handle.down()


def _first(events: list, kind: str, after: float = 0.0, **match: object) -> float:
    for event in events:
        if event.kind == kind and event.mono >= after and all(event.get(k) == v for k, v in match.items()):
            return float(event.mono)
    raise AssertionError(f"no {kind} event matching {match} after {after}")


def test_graceful_maintenance_drains_mb1_from_the_namespace_and_brings_it_back(own_lab: LabHandle) -> None:
    """HAProxy stops sending mb1 traffic within inter × fall + 1 s of its health checks turning 503; its
    databases are active elsewhere; no namespace response comes from MB1 afterwards; the end brings it back."""
    lab = own_lab
    config = lab.org.config
    backend = "be_mapi" if config.lb == "l7" else "be_exchange"  # L4: one TCP backend checked on /mapi/
    budget = config.check_inter_ms * config.check_fall / 1000 + 1.0
    with NamespacePoller(lab, "/mapi/emsmdb/") as poller, lab.control() as control:
        time.sleep(1.0)
        control.maintenance("mb1", "start")
        status = control.status()
        time.sleep(budget + 0.5)
        events = lab.events()
        offline = _first(events, "component.state", server="mb1", component="ServerWideOffline", state="Inactive")
        down = _first(events, "haproxy.server", after=offline, backend=backend, server="mb1", state="DOWN")
        assert down - offline <= budget
        for db, info in status["databases"].items():
            assert info["active"] != "mb1", db
        moved = [e for e in events if e.kind == "copy.move.end" and e.get("reason") == "maintenance"]
        assert {e.get("db") for e in moved} == {d.name for d in lab.org.databases if d.copies[0] == "mb1"}
        assert all(e.mono < offline for e in moved), "databases move before ServerWideOffline (documented order)"

        control.maintenance("mb1", "stop")
        up = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if up is None:
                ups = [
                    e.mono
                    for e in lab.events()
                    if e.kind == "haproxy.server"
                    and e.mono > down
                    and (e.get("backend"), e.get("server"), e.get("state")) == (backend, "mb1", "UP")
                ]
                up = ups[0] if ups else None
            elif any(s.fe_server == "MB1" and s.started > up + 0.05 for s in poller.samples):
                break
            time.sleep(0.1)
    assert up is not None, "HAProxy saw mb1 come back"
    before = [s for s in poller.samples if s.started < offline]
    after_down = [s for s in poller.samples if down + 0.05 < s.started < up]
    after_up = [s for s in poller.samples if s.started > up + 0.05]
    assert any(s.fe_server == "MB1" for s in before), "mb1 served through the namespace before the maintenance"
    assert after_down, "the namespace was polled while mb1 was drained"
    assert not [s for s in after_down if s.fe_server == "MB1"]
    assert all(s.status == 401 for s in after_down), "the namespace kept answering (401 = reached a live server)"
    assert any(s.fe_server == "MB1" for s in after_up), "mb1 is back in rotation after the maintenance"


@pytest.mark.parametrize("mode", ["refuse", "blackhole"])
def test_power_off_fails_direct_requests_while_the_namespace_keeps_answering(own_lab: LabHandle, mode: str) -> None:
    """Powered-off mb1 refuses (or black-holes) direct connections; the namespace answers once HAProxy noticed;
    the DAG fails mb1's databases over; power on makes mb1 answer again."""
    lab = own_lab
    mb1 = lab.org.server("mb1")
    direct = lab.url(mb1.fqdn, "/mapi/healthcheck.htm")
    with lab.httpx_client(timeout=httpx.Timeout(1.0)) as client, lab.control() as control:
        assert client.get(direct).status_code == 200
        control.power("mb1", "off", mode)
        started = time.monotonic()
        if mode == "refuse":
            with pytest.raises(httpx.ConnectError):
                client.get(direct)
            assert time.monotonic() - started < 0.9, "a refused connection fails at once"
        else:
            with pytest.raises(httpx.TimeoutException):
                client.get(direct)
        budget = lab.org.config.check_inter_ms * lab.org.config.check_fall / 1000 + 1.0
        deadline = time.monotonic() + budget + 4
        events = lab.events()
        while time.monotonic() < deadline:
            events = lab.events()
            if any(
                e.kind == "haproxy.server" and e.get("server") == "mb1" and e.get("state") == "DOWN" for e in events
            ):
                break
            time.sleep(0.1)
        off = _first(events, "power.off", server="mb1")
        down = _first(events, "haproxy.server", after=off, server="mb1", state="DOWN")
        assert down - off <= budget + 2.0  # a timed-out check takes up to one more interval than a 503
        answers = []
        for _ in range(12):
            with lab.httpx_client(timeout=3.0) as fresh:
                answers.append(fresh.get(lab.url(lab.org.namespace, "/mapi/healthcheck.htm")))
        assert [r.status_code for r in answers] == [200] * 12
        assert all(r.headers["x-feserver"] != "MB1" for r in answers)
        # the DAG notices and fails over mb1's databases
        deadline = time.monotonic() + lab.org.config.failover_delay_s + 5
        while time.monotonic() < deadline:
            if all(info["active"] not in ("mb1", None) for info in control.status()["databases"].values()):
                break
            time.sleep(0.2)
        assert all(info["active"] not in ("mb1", None) for info in control.status()["databases"].values())
        control.power("mb1", "on")
        assert client.get(direct).status_code == 200
    kinds = [e.kind for e in lab.events()]
    assert "power.on" in kinds
    assert any(
        e.kind == "copy.move.end" and e.get("reason") == "failover" and e.get("source") == "mb1" for e in lab.events()
    )
