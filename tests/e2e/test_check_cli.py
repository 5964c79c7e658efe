"""`casprobe check` as a user runs it: a subprocess against a lab on loopback, its outputs and its exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from casprobe.runner import available_probes
from tests.labkit import LabHandle, start_lab

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]


def _check(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "casprobe", "check", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _json(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def test_check_through_the_lab_is_green_for_every_name_and_protocol(lab: LabHandle) -> None:
    """`casprobe check outlook.lab.test --lab DIR` exits 0 and shows OK for the namespace and each server, for
    every available probe, in the table, in JSON and in the other formats."""
    out = _check(lab.org.namespace, "--lab", str(lab.folder))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "FAILED" not in out.stdout
    assert "Traceback" not in out.stderr
    for server in lab.org.servers:
        assert server.name in out.stdout
    doc = _json(_check(lab.org.namespace, "--lab", str(lab.folder), "--format", "json"))
    names = {r["target"]["name"] for r in doc["results"]}
    assert names == {lab.org.namespace, *(s.fqdn for s in lab.org.servers)}
    probes = {r["probe"] for r in doc["results"]}
    assert probes == set(available_probes())  # every probe this tree has, with the lab profile's mailbox
    assert len(doc["results"]) == len(names) * len(probes)
    failed = [(r["target"]["label"], r["probe"], r["detail"]) for r in doc["results"] if not r["success"]]
    assert failed == []
    assert doc["run"]["tls_verification"] is True
    for fmt in ("junit", "nagios", "prometheus"):
        other = _check(lab.org.namespace, "--lab", str(lab.folder), "--format", fmt, "--probe", "health")
        assert other.returncode == 0, fmt + other.stdout + other.stderr


def test_the_lab_password_appears_in_no_output_and_no_log(lab: LabHandle, tmp_path: Path) -> None:
    """With every available probe authenticating as alice and debug logging on, neither the reports (all formats)
    nor stderr contain alice's password."""
    password = lab.password("alice")
    seen = []
    for fmt in ("table", "json", "junit", "nagios", "prometheus"):
        target = tmp_path / f"out.{fmt}"
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "casprobe",
                "-vv",
                "check",
                "--lab",
                str(lab.folder),
                "--format",
                fmt,
                "--output",
                str(target),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert out.returncode in (0, 1), out.stderr
        seen.append(target.read_text() + out.stdout + out.stderr)
    assert all(password not in text for text in seen)
    assert "DEBUG" in "".join(seen)  # the logs really were at debug level


def test_maintenance_makes_mb1_critical_and_the_run_exit_2(tmp_path: Path) -> None:
    """With mb1 in DAG maintenance, the check exits 2, every mb1 row is critical, the other servers stay OK."""
    lab = start_lab(tmp_path / "lab")
    try:
        with lab.control() as control:
            control.maintenance("mb1", "start")
        lab.wait_lb("mb1", up=False)  # HAProxy needs fall × inter to drain mb1
        out = _check("--lab", str(lab.folder), "--format", "json", "--timeout", "10")
        assert out.returncode == 2, out.stderr
        doc = _json(out)
        assert doc["summary"]["status"] == "CRITICAL"
        rows = {(r["target"]["label"], r["probe"]): r for r in doc["results"]}
        mb1 = [r for (label, _), r in rows.items() if label == "mb1"]
        assert mb1
        assert all(r["severity"] == "CRITICAL" for r in mb1)
        assert rows[("mb1", "health")]["error_class"] == "http_status"
        assert all(r["success"] for (label, _), r in rows.items() if label in ("mb2", "mb3"))
        assert rows[("namespace", "health")]["success"], "HAProxy no longer sends health checks to mb1"
    finally:
        lab.down()


def test_a_black_holed_server_ends_the_run_within_its_deadline(tmp_path: Path) -> None:
    """With mb1 powered off as a black hole, the run still ends within the deadline (plus start-up), mb1's
    results are timeouts, and the other servers' health checks answered."""
    lab = start_lab(tmp_path / "lab")
    try:
        with lab.control() as control:
            control.power("mb1", "off", "blackhole")
        deadline = 3.0
        started = time.monotonic()
        out = _check("--lab", str(lab.folder), "--format", "json", "--timeout", str(deadline))
        elapsed = time.monotonic() - started
        assert out.returncode == 2, out.stderr
        assert elapsed < deadline + 1.0 + 4.0, elapsed  # deadline, grace, interpreter start-up and imports
        rows = {(r["target"]["label"], r["probe"]): r for r in _json(out)["results"]}
        assert all(r["error_class"] == "timeout" for (label, _), r in rows.items() if label == "mb1")
        # alice's database is still active on mb1 (until the DAG fails over), so only health is sure elsewhere
        assert rows[("mb2", "health")]["success"]
        assert rows[("mb3", "health")]["success"]
    finally:
        lab.down()


def test_discovery_finds_the_servers_through_the_namespace(lab: LabHandle) -> None:
    """--discover-servers with only the namespace learns every server FQDN from the health pages."""
    out = _check(
        lab.org.namespace,
        *(f"--resolve={name}:{address}" for name, address in lab.org.names().items()),
        "--port", str(lab.port), "--ca-file", str(lab.ca_file), "--discover-servers", "--format", "json",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    doc = _json(out)
    assert {r["target"]["name"] for r in doc["results"]} == {lab.org.namespace, *(s.fqdn for s in lab.org.servers)}
    assert any("server discovery: 3 server(s) found" in note for note in doc["run"]["notes"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["outlook.lab.test", "--probe", "owa"], "Invalid value for '--probe'"),
        (["outlook.lab.test", "--resolve", "outlook.lab.test:not-an-ip"], "'not-an-ip' is not an IP address"),
        (["outlook.lab.test", "--user", "LAB\\alice"], "no password for LAB\\alice: use --password-env VAR"),
        (["outlook.lab.test", "--password", "hunter2"], "No such option '--password'"),
        (["--lab", "/nonexistent/casprobe-lab"], "no lab profile at /nonexistent/casprobe-lab/profile.toml"),
    ],
)
def test_bad_arguments_exit_3_with_one_clear_line(args: list[str], message: str) -> None:
    """Unknown probe, bad --resolve, no password source without a terminal, a --password option, a missing lab:
    exit 3 (unknown), the reason on stderr, no traceback."""
    out = _check(*args, timeout=30)
    assert out.returncode == 3, out.stdout + out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stdout == ""


def test_extended_protection_lab_is_green_with_channel_binding_and_refuses_without(tmp_path: Path) -> None:
    """With Extended Protection on and TCP passthrough, every name × protocol is green over NTLM/Negotiate with
    channel binding; without the binding the authenticated probes fail with class auth (exit 2)."""
    handle = start_lab(tmp_path / "lab", servers=2, extended_protection=True, lb="l4")
    try:
        good = _json(_check(handle.org.namespace, "--lab", str(handle.folder), "--format", "json"))
        assert [(r["target"]["label"], r["probe"]) for r in good["results"] if not r["success"]] == []
        used = {r["auth_used"] for r in good["results"] if r["probe"] in ("mapi", "ews")}
        assert used <= {"NTLM", "Negotiate"}
        assert used
        bad = _check(handle.org.namespace, "--lab", str(handle.folder), "--format", "json", "--no-channel-binding")
        assert bad.returncode == 2
        classes = {(r["probe"], r["error_class"]) for r in _json(bad)["results"] if not r["success"]}
        assert ("ews", "auth") in classes
        assert ("mapi", "auth") in classes
        assert all(r["success"] for r in _json(bad)["results"] if r["probe"] == "health")
    finally:
        handle.down()


def test_behind_tls_offload_extended_protection_breaks_ntlm_through_the_namespace_only(tmp_path: Path) -> None:
    """With HAProxy terminating TLS (l7), the client's binding names HAProxy's certificate: the servers' own
    names stay green while the namespace's authenticated probes fail with class auth — what real Exchange does
    behind SSL offload, and what the check must make visible."""
    handle = start_lab(tmp_path / "lab", servers=2, extended_protection=True, lb="l7")
    try:
        out = _check(handle.org.namespace, "--lab", str(handle.folder), "--format", "json", "--probe", "ews")
        assert out.returncode == 2
        by_label = {r["target"]["name"]: r for r in _json(out)["results"]}
        assert by_label[handle.org.namespace]["error_class"] == "auth"
        assert all(by_label[s.fqdn]["success"] for s in handle.org.servers)
    finally:
        handle.down()
