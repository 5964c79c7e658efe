"""`casprobe lab up/status/down`: the lab starts, answers on every name, refuses a second start, leaves nothing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from casprobe.errors import LabError
from casprobe.lab.cli import lab_up
from tests.labkit import TEST_CONFIG, LabHandle, start_lab

pytestmark = pytest.mark.lab

VDIRS = ("autodiscover", "ews", "mapi", "owa", "oab", "rpc", "Microsoft-Server-ActiveSync")


@pytest.mark.parametrize("vdir", VDIRS)
def test_every_server_answers_its_health_check_with_its_own_name(lab: LabHandle, vdir: str) -> None:
    """`/<vdir>/healthcheck.htm` answers 200 `200 OK<br/><fqdn>` anonymously on every server and the namespace."""
    with lab.httpx_client() as client:
        for server in lab.org.servers:
            response = client.get(lab.url(server.fqdn, f"/{vdir}/healthcheck.htm"))
            assert response.status_code == 200
            assert response.text == f"200 OK<br/>{server.fqdn}"
            assert response.headers["x-feserver"] == server.netbios
        through_lb = client.get(lab.url(lab.org.namespace, f"/{vdir}/healthcheck.htm"))
        assert through_lb.status_code == 200
        assert through_lb.text.startswith("200 OK<br/>mb")


def test_protocol_endpoints_require_authentication_and_offer_ntlm(lab: LabHandle) -> None:
    """Everything but health checks and v2 JSON answers 401 with the offered schemes when no credentials come."""
    with lab.httpx_client() as client:
        for path in ("/EWS/Exchange.asmx", "/mapi/emsmdb/", "/autodiscover/autodiscover.xml"):
            response = client.post(lab.url(lab.org.namespace, path), content=b"<x/>")
            assert response.status_code == 401, path
            offered = response.headers.get_list("www-authenticate")
            assert "NTLM" in offered
            assert "Negotiate" in offered


def test_unknown_paths_get_404(lab: LabHandle) -> None:
    """An unknown path gets IIS's 404, through a server and through the namespace."""
    with lab.httpx_client() as client:
        for host in (lab.org.namespace, lab.org.servers[0].fqdn):
            response = client.get(lab.url(host, "/no/such/healthcheck.htm"))
            assert response.status_code == 404


def test_certificates_name_the_server_and_the_namespace(lab: LabHandle) -> None:
    """TLS verification against the lab CA succeeds for every name; a client without the CA is refused."""
    with lab.httpx_client() as client:
        for name in lab.org.names():
            assert client.get(lab.url(name, "/ews/healthcheck.htm")).status_code == 200
    with httpx.Client(trust_env=False) as untrusting:  # system CAs only
        address = lab.org.servers[0].address
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusting.get(f"https://{address}:{lab.port}/ews/healthcheck.htm")


def test_status_reports_servers_databases_and_haproxy(lab: LabHandle) -> None:
    """`lab status` shows every server on, every database active on its first copy, HAProxy's backends UP."""
    with lab.control() as control:
        status = control.status()
    assert status["ready"] is True
    assert set(status["servers"]) == set(lab.org.server_names)
    assert all(s["power"] == "on" for s in status["servers"].values())
    for db in lab.org.databases:
        assert status["databases"][db.name]["active"] == db.copies[0]
    assert status["haproxy"]
    assert set(status["haproxy"].values()) == {"UP"}


def test_a_second_lab_up_in_the_same_folder_is_refused(lab: LabHandle) -> None:
    """While a lab runs, `lab up` on its folder says so instead of starting another."""
    with pytest.raises(LabError, match="already running"):
        lab_up(lab.folder, lab.org.config)


def test_the_event_log_records_the_start(lab: LabHandle) -> None:
    """The lab's start and HAProxy's initial view are in the event log, with both clocks."""
    events = lab.events()
    kinds = [e.kind for e in events]
    assert "lab.up" in kinds
    assert "haproxy.server" in kinds
    assert all(e.wall > 1e9 and e.mono > 0 for e in events)


def _processes_mentioning(folder: Path) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if str(folder) in cmdline and stat.rpartition(")")[2].split()[0] != "Z":
            found.append(f"{pid}: {cmdline}")
    return found


def test_lab_down_leaves_no_process_behind(tmp_path: Path) -> None:
    """After `lab down` neither the lab process nor its HAProxy is left; a second down says none was running."""
    handle = start_lab(tmp_path / "lab", servers=2)
    assert _processes_mentioning(handle.folder)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    down = subprocess.run(
        [sys.executable, "-m", "casprobe", "lab", "--dir", str(handle.folder), "down"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stdout
    assert _processes_mentioning(handle.folder) == []
    again = subprocess.run(
        [sys.executable, "-m", "casprobe", "lab", "--dir", str(handle.folder), "down"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert "no lab was running" in again.stdout


def test_status_without_a_lab_is_a_clear_message_not_a_traceback(tmp_path: Path) -> None:
    """`lab status` on a folder with no lab exits 3 with one line saying so."""
    result = subprocess.run(
        [sys.executable, "-m", "casprobe", "lab", "--dir", str(tmp_path), "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert "no lab is running" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_lab_that_cannot_listen_fails_at_once_with_the_reason(tmp_path: Path) -> None:
    """An address already taken ends `lab up` within seconds, quoting the lab's own error, no process left."""
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    port = 443 if os.geteuid() == 0 else 8443
    blocker.bind(("127.0.99.11", port))
    blocker.listen(1)
    started = time.monotonic()
    try:
        with pytest.raises(LabError, match=r"cannot listen on 127\.0\.99\.11"):
            lab_up(tmp_path / "lab", replace(TEST_CONFIG, base_address="127.0.99.10", port=port))
    finally:
        blocker.close()
    assert time.monotonic() - started < 10
    assert _processes_mentioning(tmp_path / "lab") == []
