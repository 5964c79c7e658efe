"""The autodiscover probe against the real lab: HAProxy, uvicorn servers, NTLM/Negotiate, Extended Protection."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from casprobe.model import ErrorClass, ProbeResult, Severity, Target, TargetKind
from casprobe.net.credentials import Credentials, Secret
from casprobe.net.resolve import Pin
from casprobe.net.tls import TlsOptions
from casprobe.net.transport import TransportOptions
from casprobe.probes import discovery, get_probe
from casprobe.probes.base import AuthChoice, ProbeContext, ProbeSettings
from casprobe.probes.discovery import SrvAnswer
from tests.hostile_servers import LoopbackResolver
from tests.labkit import LabHandle, start_lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(180)]

probe = get_probe("autodiscover")


@pytest.fixture(autouse=True)
def no_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lab has no SRV record and tests ask no real DNS server."""
    monkeypatch.setattr(discovery, "lookup_srv", lambda name, timeout, nameservers=(): SrvAnswer(detail="no such name"))


def run(
    lab: LabHandle, name: str, *, alias: str = "alice", auth: AuthChoice = "auto", channel_binding: bool = True
) -> ProbeResult:
    """Probe ``name`` of the lab (the namespace or a server) as ``alias``."""
    org = lab.org
    kind = TargetKind.NAMESPACE if name == org.namespace else TargetKind.SERVER
    settings = ProbeSettings(
        mailbox=f"{alias}@{org.domain}",
        credentials=Credentials(f"{org.netbios}\\{alias}", Secret(lab.password(alias))),
        auth=auth,
        channel_binding=channel_binding,
        transport=TransportOptions(tls=TlsOptions(ca_file=lab.ca_file)),
        timeout_s=20.0,
        namespace=org.namespace,
        server_names=tuple(s.fqdn for s in org.servers),
    )
    resolver = LoopbackResolver([Pin(n, a) for n, a in org.names().items()])
    context = ProbeContext(Target(name, kind, lab.port), settings, resolver, time.monotonic() + settings.timeout_s)
    return probe(context)


def names(lab: LabHandle) -> list[str]:
    return [lab.org.namespace, *(s.fqdn for s in lab.org.servers)]


def test_every_name_of_the_healthy_lab_hands_out_the_namespace(lab: LabHandle) -> None:
    """Through the namespace and each server: success, OK, mapiHttp URLs on the namespace, authenticated."""
    alice = lab.org.find_user("alice")
    assert alice is not None
    for name in names(lab):
        result = run(lab, name)
        assert result.success, f"{name}: {result.detail}"
        assert result.severity is Severity.OK, f"{name}: {result.detail}"
        assert result.fact("autodiscover.mapi.names") == "namespace"
        assert result.fact("autodiscover.mapi.host") == lab.org.namespace
        mailstore = result.fact("autodiscover.mapi.mailstore.internal")
        assert mailstore == lab.url(lab.org.namespace, f"/mapi/emsmdb/?MailboxId={alice.mailbox_id}")
        assert result.fact("autodiscover.legacy_dn") == alice.legacy_dn
        assert result.fact("autodiscover.soap") == "ok"
        assert result.fact("autodiscover.v2") == "ok"
        assert result.fact("autodiscover.ews_url") == lab.url(lab.org.namespace, "/EWS/Exchange.asmx")
        assert result.auth_used in ("Negotiate", "NTLM")
        assert "NTLM" in result.auth_offered
        assert result.tls is not None
        assert result.tls.verified


def test_through_the_namespace_outlooks_discovery_finds_autodiscover_domain(lab: LabHandle) -> None:
    """lab.test itself has no address, autodiscover.lab.test answers: that is the candidate, the first one failed."""
    result = run(lab, lab.org.namespace)
    expected = lab.url(lab.org.autodiscover, "/autodiscover/autodiscover.xml")
    assert result.fact("autodiscover.candidate") == expected
    assert result.fact("autodiscover.candidate.mapi.host") == lab.org.namespace
    assert result.steps[0].error_class is ErrorClass.DNS
    assert "Outlook's discovery found" in result.detail


def test_the_redirect_domains_of_the_lab_are_followed(lab: LabHandle) -> None:
    """alice@mail.lab.test is redirectAddr'ed to alice@lab.test; the probe follows and reports it."""
    org = lab.org
    settings_mailbox = f"alice@mail.{org.domain}"
    settings = ProbeSettings(
        mailbox=settings_mailbox,
        credentials=Credentials(f"{org.netbios}\\alice", Secret(lab.password("alice"))),
        transport=TransportOptions(tls=TlsOptions(ca_file=lab.ca_file)),
        namespace=org.namespace,
        server_names=tuple(s.fqdn for s in org.servers),
    )
    resolver = LoopbackResolver([Pin(n, a) for n, a in org.names().items()])
    server = org.servers[0].fqdn
    result = probe(ProbeContext(Target(server, TargetKind.SERVER, lab.port), settings, resolver, time.monotonic() + 20))
    assert result.success, result.detail
    assert result.fact("autodiscover.address") == f"alice@{org.domain}"


@pytest.fixture(scope="module")
def server_url_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHandle]:
    handle = start_lab(tmp_path_factory.mktemp("urlmode") / "lab", servers=2, url_mode={"mb1": "server"})
    try:
        yield handle
    finally:
        handle.down()


def test_a_server_handing_out_its_own_name_is_a_warning(server_url_lab: LabHandle) -> None:
    """mb1 in "server" URL mode: probing mb1 reports its own name with a WARNING; mb2 still hands out the namespace.

    Chosen rule (documented in the probe): the warning goes to whichever target's answer names a single server, so
    mb1 always gets it, and the namespace gets it whenever the load balancer sends the probe's Autodiscover to mb1.
    """
    lab = server_url_lab
    mb1, mb2 = (s.fqdn for s in lab.org.servers)
    first = run(lab, mb1)
    assert first.success, first.detail
    assert first.severity is Severity.WARNING
    assert first.fact("autodiscover.mapi.host") == mb1
    assert first.fact("autodiscover.mapi.names") == "server"
    assert "freezes" in first.detail
    second = run(lab, mb2)
    assert second.severity is Severity.OK
    assert second.fact("autodiscover.mapi.names") == "namespace"
    seen = set()
    for _ in range(6):  # through the load balancer: whichever server answered (target or candidate) decides
        through = run(lab, lab.org.namespace)
        hosts = {through.fact("autodiscover.mapi.host"), through.fact("autodiscover.candidate.mapi.host")}
        seen |= hosts
        assert (through.severity is Severity.WARNING) == (mb1 in hosts), through.detail
    assert seen <= {mb1, lab.org.namespace}


@pytest.fixture(scope="module")
def ep_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHandle]:
    handle = start_lab(tmp_path_factory.mktemp("ep") / "lab", servers=2, extended_protection=True, lb="l4")
    try:
        yield handle
    finally:
        handle.down()


@pytest.mark.parametrize("auth", ["ntlm", "auto"])
def test_extended_protection_works_with_channel_binding(ep_lab: LabHandle, auth: AuthChoice) -> None:
    """With Extended Protection and TCP passthrough, NTLM with the channel binding succeeds on every name."""
    for name in names(ep_lab):
        result = run(ep_lab, name, auth=auth)
        assert result.success, f"{name}: {result.detail}"
        assert result.auth_used in ("NTLM", "Negotiate")


def test_extended_protection_refuses_ntlm_without_channel_binding(ep_lab: LabHandle) -> None:
    """The same lab refuses NTLM without a binding: an auth failure that says what was offered."""
    result = run(ep_lab, ep_lab.org.servers[0].fqdn, auth="ntlm", channel_binding=False)
    assert not result.success
    assert result.error_class is ErrorClass.AUTH
    assert "NTLM" in result.detail
