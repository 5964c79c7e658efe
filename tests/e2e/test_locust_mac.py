"""Locust as an admin runs it (a subprocess, never imported here: gevent would patch the test process): the
Outlook for Mac user on EWS (``locustfiles/mac_outlook.py``) and the stage-table shape (``locustfiles/shapes.py``)
against the session lab."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trustme

from casprobe.lab.haproxy_runtime import RuntimeClient
from casprobe.load.stages import parse_stages
from tests.labkit import LabHandle

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILES = ROOT / "locustfiles"
_LEAKY = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "HTTPS_PROXY", "https_proxy", "CASPROBE_LAB")


def _locust(
    cwd: Path, files: list[str], *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.Popen[str]:
    """Start ``python -m locust -f FILES --headless …`` writing ``run_*.csv``, ``run.json`` and ``run.jsonl``."""
    clean = {k: v for k, v in os.environ.items() if k not in _LEAKY}
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        ",".join(str(LOCUSTFILES / f) for f in files),
        "--headless",
        "--csv",
        "run",
        "--json-file",
        "run",
        "--casprobe-records",
        "run.jsonl",
        *args,
    ]
    return subprocess.Popen(
        command,
        cwd=cwd,
        env={**clean, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"locust did not stop in {timeout} s:\n{err[-3000:]}") from None
    return proc.returncode, out + err


def _json_stats(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Locust's final statistics (``--json-file``: written after the runner stopped, so nothing is missing)."""
    entries = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    return {(e["method"], e["name"]): e for e in entries}


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _records(folder: Path) -> list[dict[str, Any]]:
    lines = (folder / "run.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _frontend_sessions(lab: LabHandle) -> int:
    """How many client connections HAProxy's Exchange frontend has accepted so far (``show stat`` stot)."""
    answer = RuntimeClient(lab.folder / "haproxy" / "haproxy.sock").runtime("show stat")
    rows = csv.DictReader(answer.lstrip("# ").splitlines())
    return sum(int(r["stot"]) for r in rows if r["svname"] == "FRONTEND" and r["pxname"] == "fe_exchange")


def _profile_copy(lab: LabHandle, folder: Path, **changes: str) -> Path:
    """The lab's profile with some top-level keys replaced (``port = 1``, another ``ca_file``)."""
    text = (lab.folder / "profile.toml").read_text(encoding="utf-8")
    for key, value in changes.items():
        text, count = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert count == 1, key
    path = folder / "profile.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_mac_users_read_search_and_send_each_on_its_own_connection(lab: LabHandle, tmp_path: Path) -> None:
    """Six Outlook for Mac users sharing one mailbox, half through the namespace and half through mb1, do
    GetFolder, FindItem and CreateItem (SendAndSaveCopy) for 6 s without one failure, each on its own connection
    (exchangelib's per-process Protocol cache would have put the namespace half on a single one)."""
    accounts = tmp_path / "accounts.csv"
    accounts.write_text(
        f"smtp,user,password_file\nalice@lab.test,LAB\\alice,{lab.folder / 'secrets' / 'alice.password'}\n",
        encoding="utf-8",
    )
    before = _frontend_sessions(lab)
    proc = _locust(
        tmp_path,
        ["mac_outlook.py"],
        *("-u", "6", "-r", "6", "-t", "6s", "--casprobe-lab", str(lab.folder)),
        *("--casprobe-accounts", str(accounts), "--casprobe-cohorts", "namespace=1,mb1=1"),
        # short think times: ~100 calls in the run, so the 1-in-7 CreateItem cannot be missed by chance
        *("--casprobe-think", "0.1-0.3"),
    )
    code, output = _finish(proc)
    assert code == 0, output[-3000:]  # Locust exits 1 when any request failed
    assert "Traceback" not in output

    stats = _json_stats(tmp_path)
    for operation in ("GetFolder", "FindItem", "CreateItem"):
        entry = stats.get(("EWS", operation))
        assert entry is not None, f"no EWS {operation} in {sorted(stats)}"
        assert entry["num_requests"] >= 1
        assert entry["num_failures"] == 0
    assert sum(e["num_failures"] for e in stats.values()) == 0
    assert not [key for key in stats if key[0] == "DISCONNECT"]
    assert stats[("EWS", "GetFolder")]["total_content_length"] > 0  # answers are metered (Content-Length)
    rows = {(r["Type"], r["Name"]): r for r in _csv(tmp_path / "run_stats.csv")}
    assert {("EWS", "GetFolder"), ("EWS", "FindItem")} <= set(rows)
    assert all(r["Failure Count"] == "0" for r in rows.values())
    assert _csv(tmp_path / "run_failures.csv") == []
    assert _csv(tmp_path / "run_exceptions.csv") == []

    records = _records(tmp_path)
    users = [r for r in records if r["type"] == "user"]
    assert Counter(r["cohort"] for r in users) == {"namespace": 3, "mb1": 3}
    assert {r["client"] for r in users} == {"outlook-mac"}
    assert {r["name"] for r in users if r["cohort"] == "mb1"} == {"mb1.lab.test"}
    assert [r for r in records if r["type"] == "disconnect"] == []
    assert records[0]["type"] == "run"
    assert records[-1]["type"] == "end"
    assert _frontend_sessions(lab) - before >= 3  # one connection (at least) per namespace client


def test_the_stage_table_drives_locust_up_holds_and_down_then_ends_the_run(lab: LabHandle, tmp_path: Path) -> None:
    """``ramp:3s:6,hold:4s,down:2s`` with the Windows and the Mac users: Locust is told exactly the table's ticks,
    the user count over time (``--csv-full-history``) follows it, and the run ends by itself after 9 s."""
    spec = "ramp:3s:6,hold:4s,down:2s"
    table = parse_stages(spec)
    proc = _locust(
        tmp_path,
        ["outlook.py", "mac_outlook.py", "shapes.py"],
        *("--casprobe-lab", str(lab.folder), "--casprobe-stages", spec, "--csv-full-history"),
    )
    code, output = _finish(proc)
    assert code == 0, output[-3000:]
    assert "Shape test stopping" in output

    ticks = [(int(u), float(r)) for u, r in re.findall(r"Shape test updating to (\d+) users at ([\d.]+)", output)]
    expected = [(s.users, round(s.spawn_rate, 2)) for s in table.stages]
    assert ticks == expected

    history = [r for r in _csv(tmp_path / "run_stats_history.csv") if r["Name"] == "Aggregated"]
    times = [int(r["Timestamp"]) for r in history]
    counts = [int(r["User Count"]) for r in history]
    assert table.total_s - 1 <= times[-1] - times[0] <= table.total_s + 3
    assert max(counts) == table.peak
    assert counts.count(table.peak) >= 3  # the hold (4 s), seen once a second
    assert counts[-1] < table.peak  # on the way down when the last row was written
    for when, count in zip(times, counts, strict=True):
        t = when - times[0]
        window = [table.users_at(t + d / 2) for d in range(-4, 5)]  # ±2 s: whole-second stamps, tick delays
        assert min(window) - 1 <= count <= max(window) + 1, (t, count, window)

    stats = _json_stats(tmp_path)
    assert sum(e["num_failures"] for e in stats.values()) == 0
    users = [r for r in _records(tmp_path) if r["type"] == "user"]
    assert len(users) == table.peak  # started once each, never replaced
    assert {r["client"] for r in users} == {"outlook", "outlook-mac"}


def test_failures_are_counted_under_their_class_and_never_crash_locust(lab: LabHandle, tmp_path: Path) -> None:
    """A CA that did not sign the lab (while REQUESTS_CA_BUNDLE names the lab's CA) fails every request as ``tls``;
    a port nobody listens on as ``connect``; Locust keeps running, counts each one, and each user is cut off."""
    other = trustme.CA()
    runs: dict[str, tuple[Path, dict[str, str], dict[str, str]]] = {}
    for name in ("tls", "connect"):
        (tmp_path / name).mkdir()
    other.cert_pem.write_to_path(str(tmp_path / "tls" / "other-ca.pem"))
    ca = json.dumps(str(tmp_path / "tls" / "other-ca.pem"))
    runs["tls"] = (tmp_path / "tls", {"ca_file": ca}, {"REQUESTS_CA_BUNDLE": str(lab.ca_file)})
    runs["connect"] = (tmp_path / "connect", {"port": "1"}, {})
    procs = {}
    for name, (folder, changes, env) in runs.items():
        profile = _profile_copy(lab, folder, **changes)
        args = ("-u", "4", "-r", "4", "-t", "3s", "--casprobe-profile", str(profile))
        procs[name] = _locust(folder, ["mac_outlook.py"], *args, env=env)
    for name, proc in procs.items():
        folder = runs[name][0]
        code, output = _finish(proc)
        assert code == 1, output[-3000:]  # failures, not a crash (a crash would be 2 or a traceback)
        assert "Traceback" not in output
        stats = _json_stats(folder)
        ews = {key: e for key, e in stats.items() if key[0] == "EWS"}
        assert ews
        assert all(e["num_failures"] == e["num_requests"] > 0 for e in ews.values())
        failures = _csv(folder / "run_failures.csv")
        assert failures
        assert {f["Error"].split(":", 1)[0] for f in failures} == {name}
        if name == "tls":
            assert {f["Error"] for f in failures} == {
                "tls: certificate not trusted: unable to get local issuer certificate"
            }
        else:
            assert {f["Error"] for f in failures} == {"connect: connection refused"}
        assert _csv(folder / "run_exceptions.csv") == []
        records = _records(folder)
        cut = [r for r in records if r["type"] == "disconnect"]
        assert len(cut) == 4  # every user cut off once, the interval still open when the run ended
        assert all(r["ended_at"] is None and r["error_classes"] == [name] for r in cut)
