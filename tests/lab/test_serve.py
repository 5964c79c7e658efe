"""`casprobe serve` as Prometheus sees it: a subprocess scraped over HTTP, probing the session lab and a silent
server, with its deadlines, its bound on concurrent probes, its 400s, its reloads and its pages."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hostile_servers import CertKit, HostileServer, always, silent
from tests.labkit import LabHandle

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
MODULES = {
    "health": ["health"],
    "autodiscover": ["autodiscover"],
    "mapi": ["mapi"],
    "ews": ["ews"],
    "outlook": ["health", "autodiscover", "mapi", "ews"],
}


class Serve:
    """A running `casprobe serve` subprocess and an HTTP client for it."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self._err = log.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "casprobe", "-vv", "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._err,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, f"no listening line: {line!r}; log: {log.read_text()}"
        self.base = f"http://127.0.0.1:{match.group(1)}"
        self.http = httpx.Client(base_url=self.base, trust_env=False, timeout=30)

    def probe(self, module: str, target: str, *, header: str | None = "10", **params: str) -> httpx.Response:
        headers = {"X-Prometheus-Scrape-Timeout-Seconds": header} if header is not None else {}
        return self.http.get("/probe", params={"module": module, "target": target, **params}, headers=headers)

    def metric(self, name_and_labels: str) -> float:
        for line in self.http.get("/metrics").text.splitlines():
            if line.startswith(name_and_labels + " "):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name_and_labels} not in /metrics")

    def stop(self) -> str:
        """Stop the server with SIGTERM (once) and return its log."""
        if self.proc.poll() is None:
            self.http.close()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._err.close()
        return self.log.read_text(encoding="utf-8")


def _samples(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] != "#"}


def _lab_config(lab: LabHandle, slow: HostileServer, kit: CertKit, *, max_concurrency: int = 16) -> str:
    profile = tomllib.loads((lab.folder / "profile.toml").read_text(encoding="utf-8"))
    box = profile["mailbox"]
    names = [lab.org.namespace, *(server.fqdn for server in lab.org.servers)]
    lines = [
        f"max_concurrency = {max_concurrency}",
        f"namespace = {json.dumps(lab.org.namespace)}",
        f"targets = {json.dumps(names)}",
        f"port = {lab.port}",
        "[resolve]",
        *(f"{json.dumps(name)} = {json.dumps(address)}" for name, address in lab.org.names().items()),
        f'"slow.test" = {json.dumps(slow.address)}',
    ]
    for name, probes in MODULES.items():
        lines += [
            f"[modules.{name}]",
            f"probes = {json.dumps(probes)}",
            f"mailbox = {json.dumps(box['smtp'])}",
            f"user = {json.dumps(box['user'])}",
            f"password_file = {json.dumps(box['password_file'])}",
            f"ca_file = {json.dumps(str(lab.ca_file))}",
            "timeout = 15",
        ]
    lines += _slow_module("slow", slow, kit)
    return "\n".join(lines) + "\n"


def _slow_module(name: str, slow: HostileServer, kit: CertKit) -> list[str]:
    return [
        f"[modules.{name}]",
        'probes = ["health"]',
        'targets = ["slow.test"]',
        f"port = {slow.port}",
        f"ca_file = {json.dumps(str(kit.ca_file))}",
        "timeout = 30",
    ]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertKit:
    return CertKit(tmp_path_factory.mktemp("serve-certs"))


@pytest.fixture(scope="module")
def slow(certs: CertKit) -> Iterator[HostileServer]:
    """A TLS server that reads each request and never answers."""
    with HostileServer(always(silent()), certs, names=["slow.test"]) as server:
        yield server


@pytest.fixture(scope="module")
def served(
    lab: LabHandle, slow: HostileServer, certs: CertKit, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Serve]:
    """`casprobe -vv serve` with every module over the session lab, plus the silent server's module."""
    folder = tmp_path_factory.mktemp("serve")
    config = folder / "casprobe.toml"
    config.write_text(_lab_config(lab, slow, certs), encoding="utf-8")
    server = Serve(config, folder / "serve.log")
    yield server
    server.stop()


def test_every_module_scrapes_green_through_the_namespace_and_a_server(served: Serve, lab: LabHandle) -> None:
    """Each module, for the namespace and for mb1, answers probe_success 1 with one series per probe, the
    certificate expiry, the auth method, MAPI's X-ResponseCode 0, and mb1 itself as the backend of mb1."""
    mb1 = lab.org.servers[0].fqdn
    jobs = [(module, target) for module in MODULES for target in (lab.org.namespace, mb1)]
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: (job, served.probe(*job)), jobs))
    for (module, target), answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = _samples(answer.text)
        assert samples["probe_success"] == 1, (module, target, answer.text)
        for probe in MODULES[module]:
            assert samples[f'probe_success{{probe="{probe}"}}'] == 1
            assert samples[f'casprobe_probe_error{{probe="{probe}",class="timeout"}}'] == 0
            assert samples[f'probe_ssl_earliest_cert_expiry{{probe="{probe}"}}'] > time.time()
            assert samples[f'probe_http_status_code{{probe="{probe}"}}'] in (200, 302)
            if target == mb1:
                assert samples[f'casprobe_probe_backend{{probe="{probe}",backend="mb1"}}'] == 1
        if "mapi" in MODULES[module]:
            assert samples['casprobe_mapi_response_code{probe="mapi"}'] == 0
            used = [k for k, v in samples.items() if k.startswith('casprobe_probe_auth_method{probe="mapi"') and v]
            assert used in (
                ['casprobe_probe_auth_method{probe="mapi",method="NTLM"}'],
                ['casprobe_probe_auth_method{probe="mapi",method="Negotiate"}'],
            )


@pytest.mark.parametrize(
    ("params", "reason", "message"),
    [
        ({"module": "nope", "target": "outlook.lab.test"}, "unknown_module", "unknown module 'nope'"),
        ({"module": "health"}, "missing_target", "missing parameter 'target'"),
        ({"module": "health", "target": "www.example.com"}, "target_not_allowed", "is not allowed for module"),
        ({"module": "slow", "target": "outlook.lab.test"}, "target_not_allowed", "(the configuration lists slow.test)"),
        ({"target": "outlook.lab.test"}, "unknown_module", "missing parameter 'module'"),
    ],
)
def test_bad_parameters_get_400_with_a_clear_message_and_serving_goes_on(
    served: Serve, lab: LabHandle, params: dict[str, str], reason: str, message: str
) -> None:
    """Unknown module, missing target or module, a target the configuration does not allow: HTTP 400 saying so,
    counted by reason; the next good scrape still works, and an unknown path is 404."""
    before = served.metric(f'casprobe_serve_bad_requests_total{{reason="{reason}"}}')
    answer = served.http.get("/probe", params=params)
    assert answer.status_code == 400
    assert message in answer.text
    assert served.metric(f'casprobe_serve_bad_requests_total{{reason="{reason}"}}') == before + 1
    assert served.http.get("/nothing-here").status_code == 404
    assert _samples(served.probe("health", lab.org.namespace).text)["probe_success"] == 1


def test_a_bad_timeout_header_is_a_400(served: Serve, lab: LabHandle) -> None:
    """An X-Prometheus-Scrape-Timeout-Seconds that is no positive number is refused, not guessed."""
    answer = served.probe("health", lab.org.namespace, header="soon")
    assert answer.status_code == 400
    assert "X-Prometheus-Scrape-Timeout-Seconds" in answer.text


def test_a_probe_slower_than_the_scrape_timeout_is_cut_at_the_deadline_as_timeout(served: Serve) -> None:
    """Against a server that never answers, a scrape with a 2 s timeout header answers within 2 s (budget 1.5 s)
    with probe_success 0 and class timeout, and no probe stays in flight afterwards."""
    t0 = time.monotonic()
    answer = served.probe("slow", "slow.test", header="2")
    elapsed = time.monotonic() - t0
    samples = _samples(answer.text)
    assert elapsed < 2.0, elapsed
    assert samples["probe_success"] == 0
    assert samples['casprobe_probe_error{probe="health",class="timeout"}'] == 1
    assert samples["casprobe_probe_timeout_seconds"] <= 1.5
    assert served.metric("casprobe_serve_probes_in_flight") == 0


def test_pages_and_debug_output_show_traces_and_no_secret(served: Serve, lab: LabHandle) -> None:
    """/ lists recent scrapes with their step traces, /metrics counts them by module and outcome, debug=true
    shows trace, metrics and the module's settings; alice's password is in none of them nor in the -vv log."""
    password = lab.password("alice")
    debug = served.probe("mapi", lab.org.namespace, debug="true")
    assert debug.status_code == 200
    for part in ("Trace:", "[mapi] ok", "Metrics that would have been returned:", "Module configuration:"):
        assert part in debug.text
    assert '"password": "file ' in debug.text
    page = served.http.get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert "<script" not in page.text
    assert "mapi" in page.text
    assert "X-FEServer" in page.text
    metrics = served.http.get("/metrics").text
    assert served.metric('casprobe_serve_scrapes_total{module="mapi",outcome="success"}') >= 1
    assert served.metric("process_resident_memory_bytes") > 0
    for text in (debug.text, page.text, metrics):
        assert password not in text
    assert password not in served.log.read_text(encoding="utf-8")


@pytest.fixture
def limited(slow: HostileServer, certs: CertKit, tmp_path: Path) -> Iterator[Serve]:
    """A server allowed one probe at a time, with only the silent server's module."""
    config = tmp_path / "limited.toml"
    head = ["max_concurrency = 1", "[resolve]", f'"slow.test" = {json.dumps(slow.address)}']
    config.write_text("\n".join([*head, *_slow_module("slow", slow, certs)]) + "\n", encoding="utf-8")
    server = Serve(config, tmp_path / "limited.log")
    yield server
    server.stop()


def test_concurrent_scrapes_beyond_the_limit_are_answered_as_timeouts_not_queued(
    limited: Serve, slow: HostileServer
) -> None:
    """With one probe slot, four simultaneous scrapes (2 s header) all answer within 2 s with class timeout:
    one probed the silent server, three gave up waiting for the slot and are counted as rejected."""
    before = len(slow.requests)
    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: limited.probe("slow", "slow.test", header="2"), range(4)))
    assert time.monotonic() - t0 < 2.0
    for answer in answers:
        assert _samples(answer.text)['casprobe_probe_error{probe="health",class="timeout"}'] == 1
    assert len(slow.requests) - before == 1
    assert limited.metric("casprobe_serve_rejected_scrapes_total") == 3
    assert limited.metric('casprobe_serve_scrapes_total{module="slow",outcome="rejected"}') == 3
    assert limited.metric("casprobe_serve_probes_in_flight") == 0


def _wait_for(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not callable(check) or not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_sighup_and_post_reload_take_a_good_config_and_refuse_a_bad_one(
    limited: Serve, slow: HostileServer, certs: CertKit
) -> None:
    """SIGHUP with a new module brings it in; SIGHUP with an inline password is refused (logged, counted, the
    running configuration stays); POST /-/reload says 500 for a bad file and 200 for a good one."""
    good = limited.config.read_text(encoding="utf-8") + "\n".join(_slow_module("slow2", slow, certs)) + "\n"
    assert limited.http.get("/probe", params={"module": "slow2", "target": "slow.test"}).status_code == 400
    limited.config.write_text(good, encoding="utf-8")
    os.kill(limited.proc.pid, signal.SIGHUP)
    _wait_for(lambda: limited.metric('casprobe_serve_config_reloads_total{outcome="success"}') == 1)
    assert limited.probe("slow2", "slow.test", header="1").status_code == 200

    limited.config.write_text(good + 'user = "LAB\\\\alice"\npassword = "Hunter2-secret"\n', encoding="utf-8")
    os.kill(limited.proc.pid, signal.SIGHUP)
    _wait_for(lambda: limited.metric('casprobe_serve_config_reloads_total{outcome="failure"}') == 1)
    assert limited.metric("casprobe_serve_config_last_reload_successful") == 0
    assert limited.probe("slow2", "slow.test", header="1").status_code == 200  # the previous config stays
    refused = limited.http.post("/-/reload")
    assert refused.status_code == 500
    assert "modules.slow2.password: an inline secret is refused" in refused.text
    assert "Hunter2-secret" not in refused.text

    limited.config.write_text(good, encoding="utf-8")
    assert limited.http.post("/-/reload").status_code == 200
    assert limited.metric("casprobe_serve_config_last_reload_successful") == 1
    log = limited.stop()
    assert "configuration reload refused" in log
    assert "Hunter2-secret" not in log
