"""The mapi and ews probes against the real lab (HAProxy, uvicorn servers, NTLM with channel binding).

Healthy lab: both probes succeed through the namespace and through every server name, and report which front end
answered and which server holds the mailbox. Own labs: maintenance (503 through the server's own name, success
through the namespace), power off (refused → connect, black hole → timeout within the deadline), a database
switchover (ecMdbNotInit / ErrorMailboxStoreUnavailable while it moves, success after), Extended Protection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from casprobe.model import ErrorClass, ProbeResult, Target, TargetKind
from casprobe.net.credentials import Credentials, Secret
from casprobe.net.resolve import Resolver
from casprobe.net.tls import TlsOptions
from casprobe.net.transport import TransportOptions
from casprobe.probes import get_probe
from casprobe.probes.base import AuthChoice, ProbeContext, ProbeSettings
from tests.labkit import LabHandle, start_lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(180)]


def run(
    lab: LabHandle,
    probe: str,
    host: str,
    *,
    auth: AuthChoice = "ntlm",
    channel_binding: bool = True,
    timeout_s: float = 10.0,
    wait_s: float = 0.0,
) -> ProbeResult:
    """Run one probe as alice (NTLM as LAB\\alice) against ``host``, resolving the lab's names."""
    alice = lab.org.users[0]
    settings = ProbeSettings(
        mailbox=alice.smtp,
        credentials=Credentials(f"{lab.org.netbios}\\{alice.alias}", Secret(lab.password(alice.alias))),
        auth=auth,
        channel_binding=channel_binding,
        transport=TransportOptions(tls=TlsOptions(ca_file=lab.ca_file), timeout_s=timeout_s),
        timeout_s=timeout_s,
        mapi_notification_wait_s=wait_s,
    )
    kind = TargetKind.NAMESPACE if host == lab.org.namespace else TargetKind.SERVER
    ctx = ProbeContext(Target(host, kind, lab.port), settings, Resolver(lab.org.names()), time.monotonic() + timeout_s)
    return get_probe(probe)(ctx)


def holder(lab: LabHandle) -> str:
    """The FQDN of the server where alice's database is active now."""
    alice = lab.org.users[0]
    with lab.control() as control:
        active = control.status()["databases"][alice.database]["active"]
    return lab.org.server(active).fqdn


def hosts(lab: LabHandle) -> list[str]:
    return [lab.org.namespace, *(s.fqdn for s in lab.org.servers)]


def until_ok(lab: LabHandle, host: str, budget_s: float = 15.0) -> None:
    """Wait until both probes succeed through ``host``."""
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline:
        if run(lab, "mapi", host).success and run(lab, "ews", host).success:
            return
        time.sleep(0.3)


@pytest.mark.parametrize("probe", ["mapi", "ews"])
def test_probes_succeed_through_the_namespace_and_every_server(lab: LabHandle, probe: str) -> None:
    """Healthy lab: success through outlook.lab.test and each mbN.lab.test, NTLM used, front and back end named."""
    expected_be = holder(lab)
    for host in hosts(lab):
        result = run(lab, probe, host)
        assert result.success, f"{host}: {result.error_class} {result.detail}"
        assert result.auth_used == "NTLM"
        assert result.fe_server, host
        assert result.be_server == expected_be, host
        assert result.phases.tls is not None, host
        assert result.phases.auth, host
        if host != lab.org.namespace:
            assert result.fe_server == host.split(".")[0].upper()


def test_mapi_notification_wait_is_parked_with_keepalives_then_ping(lab: LabHandle) -> None:
    """A NotificationWait shorter than the lab's hold is still held at the probe's limit, PENDING seen, PING after."""
    result = run(lab, "mapi", lab.org.namespace, wait_s=2.5)
    assert result.success, result.detail
    assert result.fact("mapi.notificationwait.event_pending") == "parked"
    assert int(result.fact("mapi.notificationwait.keepalives") or 0) >= 1
    assert result.fact("mapi.pending_period_ms") == str(lab.org.config.pending_period_ms)
    assert [s.name.rsplit("(", 1)[1] for s in result.steps[1:]] == [
        "Connect)",
        "Execute)",
        "NotificationWait)",
        "PING)",
        "Disconnect)",
    ]


@pytest.fixture(scope="module")
def own_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHandle]:
    handle = start_lab(tmp_path_factory.mktemp("probes") / "lab", switchover_s=3.0)
    try:
        yield handle
    finally:
        handle.down()


def test_maintenance_fails_the_server_name_and_not_the_namespace(own_lab: LabHandle) -> None:
    """mb1 in maintenance: both probes through mb1 fail with HTTP 503; through the namespace they succeed."""
    lab = own_lab
    mb1 = lab.org.server("mb1").fqdn
    with lab.control() as control:
        control.maintenance("mb1", "start")
    try:
        for probe in ("mapi", "ews"):
            result = run(lab, probe, mb1)
            assert result.error_class is ErrorClass.HTTP_STATUS, f"{probe}: {result.detail}"
            assert "503" in result.detail
        lab.wait_lb("mb1", up=False)  # until then a request through the namespace may still reach mb1
        for _ in range(3):
            for probe in ("mapi", "ews"):
                result = run(lab, probe, lab.org.namespace)
                assert result.success, f"{probe}: {result.detail}"
                assert result.fe_server != "MB1"
                assert result.be_server != mb1
    finally:
        with lab.control() as control:
            control.maintenance("mb1", "stop")


@pytest.mark.parametrize(("mode", "error_class"), [("refuse", ErrorClass.CONNECT), ("blackhole", ErrorClass.TIMEOUT)])
def test_powered_off_server_is_connect_or_timeout_within_the_deadline(
    own_lab: LabHandle, mode: str, error_class: ErrorClass
) -> None:
    """mb1 off: refused connections are connect, a black hole is timeout, and neither outlasts the deadline."""
    lab = own_lab
    with lab.control() as control:
        control.power("mb1", "off", mode=mode)
    try:
        for probe in ("mapi", "ews"):
            started = time.monotonic()
            result = run(lab, probe, lab.org.server("mb1").fqdn, timeout_s=3.0)
            assert result.error_class is error_class, f"{probe}: {result.detail}"
            assert time.monotonic() - started < 4.0
    finally:
        with lab.control() as control:
            control.power("mb1", "on")


def test_switchover_is_visible_then_recovers(own_lab: LabHandle) -> None:
    """While alice's database moves: mapi ecMdbNotInit, ews ErrorMailboxStoreUnavailable (protocol); then success."""
    lab = own_lab
    alice = lab.org.users[0]
    until_ok(lab, lab.org.namespace)
    source = holder(lab).split(".")[0]
    target = next(s for s in lab.org.database(alice.database).copies if s != source)
    errors: list[BaseException] = []

    def switch() -> None:
        try:
            with lab.control() as control:
                control.switchover(alice.database, target)
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    mover = threading.Thread(target=switch)
    mover.start()
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            with lab.control() as control:
                if control.status()["databases"][alice.database]["active"] is None:
                    break
            time.sleep(0.05)
        mapi = run(lab, "mapi", lab.org.namespace)
        ews = run(lab, "ews", lab.org.namespace)
    finally:
        mover.join(timeout=30)
    assert not errors
    assert mapi.error_class is ErrorClass.PROTOCOL, mapi.detail
    assert "ecMdbNotInit" in mapi.detail
    assert ews.error_class is ErrorClass.PROTOCOL, ews.detail
    assert "ErrorMailboxStoreUnavailable" in ews.detail
    after_mapi, after_ews = run(lab, "mapi", lab.org.namespace), run(lab, "ews", lab.org.namespace)
    assert after_mapi.success, after_mapi.detail
    assert after_ews.success, after_ews.detail
    assert after_mapi.be_server == after_ews.be_server == lab.org.server(target).fqdn


def test_extended_protection_needs_the_channel_binding(tmp_path: Path) -> None:
    """With Extended Protection behind an L4 balancer, NTLM with channel binding works and without it is auth."""
    lab = start_lab(tmp_path / "lab", extended_protection=True, lb="l4")
    try:
        for host in (lab.org.namespace, lab.org.server("mb2").fqdn):
            for probe in ("mapi", "ews"):
                good = run(lab, probe, host)
                assert good.success, f"{probe} {host}: {good.detail}"
                bad = run(lab, probe, host, channel_binding=False)
                assert bad.error_class is ErrorClass.AUTH, f"{probe} {host}: {bad.detail}"
    finally:
        lab.down()
