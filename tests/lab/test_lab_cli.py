"""The `casprobe lab` commands as an admin types them: operations, their output, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.labkit import LabHandle, start_lab

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]


def casprobe(lab: LabHandle, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    return subprocess.run(
        [sys.executable, "-m", "casprobe", "lab", "--dir", str(lab.folder), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture(scope="module")
def cli_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHandle]:
    handle = start_lab(tmp_path_factory.mktemp("cli") / "lab", servers=2)
    try:
        yield handle
    finally:
        handle.down()


def test_maintenance_switchover_and_power_from_the_command_line(cli_lab: LabHandle) -> None:
    """Each operation prints one plain sentence, `lab status --json` and `lab events` show its effect."""
    result = casprobe(cli_lab, "maintenance", "start", "mb1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "mb1 is in maintenance"
    status = json.loads(casprobe(cli_lab, "status", "--json").stdout)
    assert status["servers"]["mb1"]["maintenance"] is True
    assert status["databases"]["DB01"]["active"] == "mb2"
    assert "mb1 is out of maintenance" in casprobe(cli_lab, "maintenance", "stop", "mb1").stdout
    moved = casprobe(cli_lab, "switchover", "DB01", "--to", "mb1")
    assert moved.stdout.strip() == "DB01 is active on mb1"
    off = casprobe(cli_lab, "power", "off", "mb2", "--mode", "blackhole")
    assert off.returncode == 0, off.stderr
    assert "mb2 is powered off (blackhole)" in off.stdout
    assert casprobe(cli_lab, "power", "on", "mb2").stdout.strip() == "mb2 is powered on"
    kinds = [json.loads(line)["kind"] for line in casprobe(cli_lab, "events", "--json").stdout.splitlines()]
    for kind in ("maintenance.start", "maintenance.active", "maintenance.end", "copy.move.end", "power.off"):
        assert kind in kinds
    table = casprobe(cli_lab, "events").stdout
    assert "maintenance.start" in table
    assert "server=mb1" in table


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("maintenance", "start", "mb9"), "no server named 'mb9'"),
        (("switchover", "DB77", "--to", "mb1"), "no database named 'DB77'"),
        (("maintenance", "stop", "mb2"), "mb2 is not in maintenance"),
        (("power", "on", "mb1"), "mb1 is already powered on"),
    ],
)
def test_refused_operations_say_why_without_a_traceback(
    cli_lab: LabHandle, args: tuple[str, ...], message: str
) -> None:
    """A bad name or an operation the lab's state does not allow exits 3 with one readable line."""
    result = casprobe(cli_lab, *args)
    assert result.returncode == 3
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_passwords_are_shown_only_when_asked(cli_lab: LabHandle) -> None:
    """`lab status` never prints a password; `--show-passwords` does."""
    password = cli_lab.password("alice")
    assert password not in casprobe(cli_lab, "status").stdout
    assert password in casprobe(cli_lab, "status", "--show-passwords").stdout
    secret = cli_lab.folder / "secrets" / "alice.password"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert password not in (cli_lab.folder / "profile.toml").read_text()
    assert password not in (cli_lab.folder / "lab.log").read_text()


def test_haproxy_restart_cuts_the_namespace_briefly_and_comes_back(cli_lab: LabHandle) -> None:
    """`lab restart-lb` gives HAProxy a new pid, logs the restart, and the namespace answers again afterwards."""
    before = int((cli_lab.folder / "haproxy" / "haproxy.pid").read_text())
    result = casprobe(cli_lab, "restart-lb")
    assert result.returncode == 0, result.stderr
    assert f"pid {before} -> " in result.stdout
    restarts = [e for e in cli_lab.events() if e.kind == "haproxy.restart"]
    assert restarts
    assert restarts[-1].get("previous_pid") == before
    with cli_lab.httpx_client() as client:
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.get(cli_lab.url(cli_lab.org.namespace, "/ews/healthcheck.htm")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the namespace did not come back"
            time.sleep(0.2)
    deadline = time.monotonic() + 5
    while int((cli_lab.folder / "haproxy" / "haproxy.pid").read_text()) == before:
        assert time.monotonic() < deadline, "the pid file follows the restart"
        time.sleep(0.1)
