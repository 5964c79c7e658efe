"""WireClient (casprobe.net.wire) against the real lab: MapiSession over it, NTLM with channel binding, Basic.

The lab (HAProxy, uvicorn servers, pyspnego's NTLM acceptor, IIS-like per-connection authentication) is the
other side; the session is casprobe's own MapiSession, unchanged, so these tests prove that the load tool's
transport carries a whole Outlook-shaped session ([MS-OXCMAPIHTTP] 3.2.5: Connect, Execute, PING,
NotificationWait, Disconnect) through a server name and through the load-balanced namespace.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from casprobe.model import ErrorClass, Target, TargetKind
from casprobe.net.auth import BasicAuth, SpnegoAuth
from casprobe.net.authreport import AuthFailure
from casprobe.net.credentials import Credentials, Secret
from casprobe.net.resolve import Resolver
from casprobe.net.tls import TlsOptions
from casprobe.net.transport import TransportOptions
from casprobe.net.wire import WireClient
from casprobe.probes.mapisession import MapiMailbox, MapiSession
from casprobe.protocols.rops import LogonSuccess
from tests.labkit import LabHandle

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]

EXECUTES = 4


def wire(lab: LabHandle, host: str, *, timeout_s: float = 5.0) -> WireClient:
    """A WireClient for ``host`` (a lab name), resolving the lab's names, trusting the lab's CA."""
    kind = TargetKind.NAMESPACE if host == lab.org.namespace else TargetKind.SERVER
    options = TransportOptions(tls=TlsOptions(ca_file=lab.ca_file), timeout_s=timeout_s)
    return WireClient(Target(host, kind, lab.port), resolver=Resolver(lab.org.names()), options=options)


def session(lab: LabHandle, client: WireClient, auth: httpx.Auth) -> MapiSession:
    """alice's MAPI/HTTP session over ``client`` (MapiSession is typed for ProbeClient; WireClient quacks alike)."""
    alice = lab.org.users[0]
    mailbox = MapiMailbox(alice.legacy_dn, f"/mapi/emsmdb/?MailboxId={alice.mailbox_id}", alice.mailbox_id)
    anyclient: Any = client
    return MapiSession(anyclient, mailbox, auth=auth)


def credentials(lab: LabHandle, password: str | None = None) -> Credentials:
    alice = lab.org.users[0]
    return Credentials(f"{lab.org.netbios}\\{alice.alias}", Secret(password or lab.password(alice.alias)))


def holder(lab: LabHandle) -> str:
    """The FQDN of the server where alice's database is active now."""
    with lab.control() as control:
        active = control.status()["databases"][lab.org.users[0].database]["active"]
    return lab.org.server(active).fqdn


@pytest.mark.parametrize("where", ["server", "namespace"])
def test_a_whole_mapi_session_runs_over_wire_with_one_ntlm_handshake_per_connection(lab: LabHandle, where: str) -> None:
    """Connect, Executes (RopLogon), PING, a parked NotificationWait and Disconnect succeed over WireClient with
    NTLM and a channel binding; the handshake runs once per connection: later requests on it carry no legs and
    leave the report alone, and the connection the parked wait dropped is authenticated afresh."""
    host = holder(lab) if where == "server" else lab.org.namespace
    auth = SpnegoAuth(credentials(lab), "ntlm", channel_binding=True)
    with wire(lab, host) as client:
        mapi = session(lab, client, auth)
        connect = mapi.connect()
        assert connect.ok, f"{connect.error_class} {connect.detail}"
        report = connect.auth
        assert report is not None
        assert report.ok
        assert report.method == "NTLM"
        assert report.channel_binding
        assert [leg.status for leg in report.legs] == [401, 401, 200]
        assert len({leg.connection for leg in report.legs}) == 1
        assert connect.exchange is not None
        assert len(connect.exchange.timings.auth) == 3
        assert mapi.cookies
        assert mapi.pending_period_ms == lab.org.config.pending_period_ms

        for _ in range(EXECUTES):
            logon = mapi.execute_logon()
            assert logon.ok, f"{logon.error_class} {logon.detail}"
            assert isinstance(logon.value, LogonSuccess)
            assert logon.exchange is not None
            assert logon.exchange.timings.auth == ()  # no 401 leg: the connection is authenticated
            assert logon.exchange.timings.connect is None  # and it is the same connection
            assert auth.last_report is report  # the flow did not run again
        last = logon.exchange
        assert last is not None
        assert last.be_server == holder(lab)
        if where == "server":
            assert last.fe_server == host.split(".")[0].upper()

        ping = mapi.ping()
        assert ping.ok, ping.detail
        assert ping.exchange is not None
        assert ping.exchange.timings.auth == ()

        started = time.monotonic()
        wait = mapi.notification_wait(1.3)
        held = time.monotonic() - started
        assert wait.ok, f"{wait.error_class} {wait.detail}"
        assert wait.value is not None
        assert wait.value.parked
        assert wait.value.keepalives >= 1
        assert 1.25 <= held < 1.8

        again = mapi.ping()  # the parked wait dropped its connection: a new one, a new handshake
        assert again.ok, again.detail
        assert again.exchange is not None
        assert again.exchange.timings.connect is not None
        assert again.auth is not None
        assert again.auth is not report
        assert again.auth.channel_binding
        assert [leg.status for leg in again.auth.legs] == [401, 401, 200]

        bye = mapi.disconnect()
        assert bye.ok, bye.detail
        assert bye.exchange is not None
        assert bye.exchange.timings.auth == ()


def test_basic_works_and_its_header_goes_with_every_request(lab: LabHandle) -> None:
    """Basic after a first 401, then on every later request: the lab does not remember Basic per connection, so
    Executes answered 200 without a 401 leg prove the header was sent again."""
    auth = BasicAuth(credentials(lab), preemptive=False)
    with wire(lab, lab.org.namespace) as client:
        mapi = session(lab, client, auth)
        connect = mapi.connect()
        assert connect.ok, f"{connect.error_class} {connect.detail}"
        assert connect.auth is not None
        assert connect.auth.method == "Basic"
        assert [leg.status for leg in connect.auth.legs] == [401, 200]
        for _ in range(3):
            logon = mapi.execute_logon()
            assert logon.ok, f"{logon.error_class} {logon.detail}"
            assert logon.exchange is not None
            assert logon.exchange.timings.auth == ()
            assert logon.exchange.timings.connect is None
        assert mapi.disconnect().ok


@pytest.mark.parametrize("scheme", ["NTLM", "Basic"])
def test_a_wrong_password_is_a_401_exchange_classified_auth(lab: LabHandle, scheme: str) -> None:
    """A wrong password is not an exception: the Connect's Exchange is the final 401, the outcome's class is auth
    and the report says rejected; the password appears nowhere in the outcome."""
    wrong = "Wrong-Password-123"
    creds = credentials(lab, wrong)
    auth: httpx.Auth = SpnegoAuth(creds, "ntlm") if scheme == "NTLM" else BasicAuth(creds)
    with wire(lab, holder(lab)) as client:
        connect = session(lab, client, auth).connect()
    assert not connect.ok
    assert connect.error_class is ErrorClass.AUTH
    assert connect.exchange is not None
    assert connect.exchange.status == 401
    assert connect.auth is not None
    assert connect.auth.failure is AuthFailure.REJECTED
    assert wrong not in repr(connect)
