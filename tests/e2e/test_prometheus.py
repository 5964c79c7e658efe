"""``casprobe serve`` under a real Prometheus (Debian's), with the shipped scrape config and alert rules.

The lab, ``casprobe serve`` and ``prometheus`` run as a user runs them (child processes on loopback). The scrape
config and the rules are the files in ``examples/prometheus/``, changed only where a test must: the targets are
the lab's names, the prober's address is the test's, the intervals are a second or two, and every ``for:`` is
2 s so that a rule fires within the test. After mb1 goes into maintenance, Prometheus's query API must show
``probe_success`` 0 for mb1's MAPI module and 1 for the namespace's, and the rule for a failing server must fire
for mb1 (and the namespace rule must not).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.labkit import LabHandle, start_lab

pytestmark = [
    pytest.mark.lab,
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed"),
]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.loads(answer.read())


def _wait(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r:.300})")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabHandle]:
    handle = start_lab(tmp_path / "lab")
    try:
        yield handle
    finally:
        handle.down()


def _serve_config(lab: LabHandle) -> str:
    profile = (lab.folder / "profile.toml").read_text(encoding="utf-8")
    box = dict(re.findall(r'^(smtp|user|password_file) = (".*")$', profile, re.MULTILINE))
    names = [lab.org.namespace, *(s.fqdn for s in lab.org.servers)]
    lines = [
        f"namespace = {json.dumps(lab.org.namespace)}",
        f"targets = {json.dumps(names)}",
        f"port = {lab.port}",
        "[resolve]",
        *(f"{json.dumps(n)} = {json.dumps(a)}" for n, a in lab.org.names().items()),
        "[modules.outlook_mapi]",
        'probes = ["mapi"]',
        f"mailbox = {box['smtp']}",
        f"user = {box['user']}",
        f"password_file = {box['password_file']}",
        f"ca_file = {json.dumps(str(lab.ca_file))}",
        "[modules.health]",
        'probes = ["health"]',
        f"ca_file = {json.dumps(str(lab.ca_file))}",
    ]
    return "\n".join(lines) + "\n"


def _prometheus_config(lab: LabHandle, prober: str, folder: Path) -> Path:
    config = yaml.safe_load((EXAMPLES / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    config["global"].update(scrape_interval="2s", scrape_timeout="2s", evaluation_interval="1s")
    servers = [s.fqdn for s in lab.org.servers]
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            role = static.get("labels", {}).get("role")
            if role == "namespace":
                static["targets"] = [lab.org.namespace]
            elif role == "server":
                static["targets"] = servers
            else:
                static["targets"] = [prober]
        for rule in job.get("relabel_configs", []):
            if rule.get("target_label") == "__address__":
                rule["replacement"] = prober
    rules = yaml.safe_load((EXAMPLES / "prometheus" / "casprobe.rules.yml").read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "2s"
    (folder / "casprobe.rules.yml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_shipped_rules_and_config_pass_promtool() -> None:
    """The shipped alert rules and scrape config are what promtool accepts."""
    for args in (["check", "rules", "casprobe.rules.yml"], ["check", "config", "prometheus.yml"]):
        done = subprocess.run(
            ["promtool", *args], cwd=EXAMPLES / "prometheus", capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
    dashboard = json.loads((EXAMPLES / "grafana" / "casprobe-dashboard.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    assert all("probe_" in e or "casprobe_" in e for e in exprs)


def test_prometheus_sees_mb1_fail_and_the_server_alert_fire(lab: LabHandle, tmp_path: Path) -> None:
    """mb1 in maintenance: probe_success 0 for mb1's MAPI module, 1 for the namespace's; ExchangeServerFailing
    fires for mb1 and OutlookLogonFailingThroughNamespace does not."""
    port, web = _free_port(), _free_port()
    prober = f"127.0.0.1:{port}"
    serve_toml = tmp_path / "casprobe.toml"
    serve_toml.write_text(_serve_config(lab), encoding="utf-8")
    serve = subprocess.Popen(
        [sys.executable, "-m", "casprobe", "serve", "--config", str(serve_toml), "--listen", prober],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    config = _prometheus_config(lab, prober, tmp_path)
    prometheus = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    api = f"http://127.0.0.1:{web}/api/v1"

    def value(query: str) -> float | None:
        data = _get(f"{api}/query?query={urllib.parse.quote(query)}")["data"]["result"]
        return float(data[0]["value"][1]) if data else None

    mb1 = 'probe_success{module="outlook_mapi",instance="mb1.lab.test"}'
    namespace = f'probe_success{{module="outlook_mapi",instance="{lab.org.namespace}"}}'
    try:
        _wait("Prometheus ready", lambda: urllib.request.urlopen(f"http://127.0.0.1:{web}/-/ready", timeout=2), 30)
        _wait("mb1 and the namespace green", lambda: value(mb1) == 1.0 and value(namespace) == 1.0, 40)
        with lab.control() as control:
            control.maintenance("mb1", "start")
        _wait("mb1's MAPI failing in Prometheus", lambda: value(mb1) == 0.0, 40)
        assert value(namespace) == 1.0
        # the health pages fail a little later than MAPI (mb1's databases move away first), on their own schedule
        mb1_health = 'probe_success{module="health",instance="mb1.lab.test"}'
        _wait("mb1's health pages failing in Prometheus", lambda: value(mb1_health) == 0.0, 30)

        def firing() -> list[dict[str, Any]]:
            alerts = _get(f"{api}/alerts")["data"]["alerts"]
            return [a for a in alerts if a["state"] == "firing"]

        alerts = _wait(
            "ExchangeServerFailing firing for mb1",
            lambda: [a for a in firing() if a["labels"]["alertname"] == "ExchangeServerFailing"],
            30,
        )
        assert {a["labels"]["instance"] for a in alerts} == {"mb1.lab.test"}
        assert not [a for a in firing() if a["labels"]["alertname"] == "OutlookLogonFailingThroughNamespace"]
    finally:
        for proc in (prometheus, serve):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
