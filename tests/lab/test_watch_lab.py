"""`casprobe watch --lab` as a user runs it, through a switchover, an HAProxy restart and a power cycle."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from casprobe.model import LabEventRecord, ProbeResult
from casprobe.store import RunStore
from tests.labkit import LabHandle, start_lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = 0.5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def _until(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _restart_haproxy(lab: LabHandle) -> str:
    """Restart HAProxy through the lab's control API; where the lab has no such operation, kill it by its pid."""
    with lab.control() as control:
        restart = getattr(control, "restart_lb", None)
        if restart is not None:
            restart()
            return "haproxy.restart"
    pid = int((lab.folder / "haproxy" / "haproxy.pid").read_text().strip())
    os.kill(pid, signal.SIGKILL)
    return ""


def _rows(store: RunStore, name: str, probe: str) -> list[ProbeResult]:
    return list(store.results(target=name, probe=probe))


def _event(events: list[LabEventRecord], kind: str, after: float = 0.0) -> LabEventRecord:
    return next(e for e in events if e.kind == kind and e.mono >= after)


def test_watch_follows_a_switchover_an_haproxy_restart_and_a_power_cycle_then_stops_on_sigint(
    tmp_path: Path,
) -> None:
    """Through a switchover of DB01 the namespace's long-lived session fails with "context lost" and
    reconnects while new connections work again right after the move; it survives an HAProxy restart and a
    server powered off and on; lab events land in the store, /metrics answers, and SIGINT ends the run with exit 0
    and the store's path."""
    lab = start_lab(tmp_path / "lab")
    store_path = tmp_path / "run.db"
    port = _free_port()
    proc: subprocess.Popen[str] | None = None
    try:
        namespace = lab.org.namespace
        user_db = lab.org.users[0].database
        with lab.control() as control:
            status = control.status()
        active = status["databases"][user_db]["active"]
        args = ["watch", "--lab", str(lab.folder), "--interval", f"{INTERVAL}", "--store", str(store_path)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "casprobe", *args, "--metrics", f"127.0.0.1:{port}"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")},
        )
        _until(lambda: f'probe_success{{target="{namespace}",probe="mapi-session"}} 1' in _scrape(port), 20, "metrics")
        time.sleep(1.0)
        others = [s.name for s in lab.org.servers if s.name != active]
        with lab.control() as control:
            control.switchover(user_db, others[0])
        time.sleep(3.0)
        restart_kind = _restart_haproxy(lab)
        time.sleep(3.0)
        victim = others[-1]
        with lab.control() as control:
            control.power(victim, "off")
            time.sleep(2.0)
            control.power(victim, "on")
        time.sleep(4.0)
        metrics = _scrape(port)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        lab.down()
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err
    assert f"store: {store_path}" in out
    assert f'probe_success{{target="{namespace}",probe="mapi"}}' in metrics
    with RunStore.open(store_path) as store:
        events = store.lab_events()
        kinds = {e.kind for e in events}
        assert {"copy.move.start", "copy.move.end", "power.off", "power.on"} <= kinds
        move_start = _event(events, "copy.move.start")
        move_end = _event(events, "copy.move.end", move_start.mono)
        session = _rows(store, namespace, "mapi-session")
        lost = [r for r in session if not r.success and "context lost" in r.detail]
        assert lost, [r.detail for r in session if not r.success]
        first_lost = lost[0]
        assert move_start.mono - INTERVAL - 0.2 <= first_lost.started_mono <= move_end.mono + INTERVAL + 0.2
        back = next(r for r in session if r.success and r.started_mono > first_lost.started_mono)
        assert "back after" in back.detail
        assert back.started_mono - move_end.mono < 2 * INTERVAL + 0.5
        fresh = _rows(store, namespace, "mapi")
        assert any(r.success and move_end.mono < r.started_mono < move_end.mono + 2 * INTERVAL + 0.5 for r in fresh)
        if restart_kind:
            assert restart_kind in kinds
        power_on = _event(events, "power.on")
        for probe in ("mapi", "mapi-session", "health"):
            rows = _rows(store, namespace, probe)
            assert rows[-1].success, (probe, rows[-1].detail)
            assert any(r.started_mono > power_on.mono for r in rows)
        victim_rows = _rows(store, next(s.fqdn for s in lab.org.servers if s.name == victim), "mapi-session")
        assert any(not r.success for r in victim_rows)
        assert victim_rows[-1].success, victim_rows[-1].detail
        every = list(store.results())
        assert not [r.detail for r in every if r.error_class is not None and r.error_class.value == "internal"]
        assert store.run_info().ended_at is not None
        assert "mapi-session" in store.run_info().probes
