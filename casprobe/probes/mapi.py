"""``mapi``: MAPI over HTTP as Outlook speaks it, through the target's name ([MS-OXCMAPIHTTP] v20181211).

1. **Autodiscover** POX on the target ([MS-OXDSCLI] §3.1.5, §3.2.5.1 ``X-MapiHttpCapability: 1``, §4.4; the lookup
   and its redirects are :func:`casprobe.probes.discovery.pox_lookup`): ``User/LegacyDN`` is the Connect UserDn
   and the RopLogon Essdn, the ``mapiHttp`` Protocol's MailStore URL gives the EMSMDB path with its
   ``MailboxId``. Only that URL's path and query are used, with the **target's** host: the probe measures MAPI
   through this name, whatever name Autodiscover hands out (fact ``mapi.mailstore_url``; judging the handed-out
   names is the ``autodiscover`` probe's business). Autodiscover failing fails the probe with its class.
2. **Connect** (2.2.4.1) on a fresh connection: the probe's main request (resolve, connect, TLS and the
   authentication legs are its phases).
3. **Execute** (2.2.4.2) with a private-mailbox RopLogon ([MS-OXCROPS] 2.2.3.1): success gives the mailbox GUID
   and logon time; the redirect form (ecWrongServer, 2.2.3.1.4) names the server the mailbox is on.
4. With ``settings.mapi_notification_wait_s`` > 0: **NotificationWait** (2.2.4.4) held up to that long (the server
   may answer first; still held at the limit is a success) and **PING** (2.2.6).
5. **Disconnect** (2.2.4.3): always once connected, even after a failure, within the deadline.

Error classes (:mod:`casprobe.probes.mapireply`): 401 → ``auth``; another HTTP status (503 from a draining
server) → ``http_status``; X-ResponseCode != 0 (header or DONE block), bad framing or body, StatusCode != 0,
ErrorCode != 0 (ecMdbNotInit while a database moves), a RopLogon error or redirect → ``protocol``; no answer →
``dns`` / ``connect`` / ``tls`` / ``timeout``. Facts: ``mapi.*`` (URLs, MailboxId, X-ServerApplication,
X-ExpirationInfo, X-PendingPeriod, the codes of each step, front and back end).
"""

from __future__ import annotations

import time
from urllib.parse import parse_qsl, urlsplit

from casprobe.errors import ConfigError
from casprobe.model import ErrorClass, ProbeResult
from casprobe.probes.authflow import auth_for, note_auth
from casprobe.probes.base import ProbeContext, Recorder
from casprobe.probes.discovery import POX_PATH, Session, pox_lookup
from casprobe.probes.mapireply import MapiOutcome
from casprobe.probes.mapisession import MapiMailbox, MapiSession, WaitResult
from casprobe.protocols.autodiscover import PoxResponse
from casprobe.protocols.mapierrors import error_code_name
from casprobe.protocols.mapihttp import ConnectResponse, describe_response_code
from casprobe.protocols.rops import LogonRedirect, LogonResponse, LogonSuccess

__all__ = ["mailbox_from_pox", "probe"]

_MIN_WAIT_S = 0.5  # a NotificationWait shorter than this is not worth sending


def probe(ctx: ProbeContext) -> ProbeResult:
    mailbox = ctx.mailbox("mapi")
    rec = Recorder(ctx, "mapi")
    try:
        return _run(ctx, rec, mailbox)
    except ConfigError:
        raise
    except Exception as exc:  # a bug: reported as internal, never raised into the run
        return rec.from_exception(exc, "mapi")


def mailbox_from_pox(pox: PoxResponse, host_origin: str) -> tuple[MapiMailbox, str] | str:
    """The session's mailbox from a POX settings answer (MailStore path on ``host_origin``'s host), and the URL
    Autodiscover handed out; or why the answer is not usable."""
    user_dn = pox.user.legacy_dn if pox.user is not None else None
    if not user_dn:
        return "the Autodiscover answer has no User/LegacyDN"
    mapi_http = pox.protocol("mapiHttp")
    if mapi_http is None:
        return "the Autodiscover answer has no mapiHttp Protocol block (MAPI over HTTP not offered)"
    url = mapi_http.mailstore_internal_url or mapi_http.mailstore_external_url
    if not url:
        return "the mapiHttp Protocol block has no MailStore URL"
    parts = urlsplit(url)
    if parts.scheme.lower() != "https" or not parts.path.startswith("/"):
        return f"unusable MailStore URL {url[:200]!r} (https with a path expected)"
    query = dict(parse_qsl(parts.query))
    mailbox_id = next((v for k, v in query.items() if k.lower() == "mailboxid"), None)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return MapiMailbox(user_dn, path, mailbox_id), url


def _run(ctx: ProbeContext, rec: Recorder, address: str) -> ProbeResult:
    origin = ctx.target.origin()
    with Session(ctx, rec, ctx.deadline) as discovery:
        found = pox_lookup(discovery, origin + POX_PATH, address, label="Autodiscover: ")
    if found.response is None:
        if found.error_class is ErrorClass.TLS:
            rec.inspect_certificate()  # what the target presents: wrong name, expired, untrusted issuer
        return rec.failure(found.error_class or ErrorClass.PROTOCOL, f"Autodiscover: {found.detail}")
    usable = mailbox_from_pox(found.response, origin)
    if isinstance(usable, str):
        rec.note("mapiHttp settings", ok=False, detail=usable, error_class=ErrorClass.CONTENT)
        return rec.failure(ErrorClass.CONTENT, f"Autodiscover: {usable}")
    mailbox, handed_out = usable
    rec.fact("mapi.mailstore_url", handed_out)
    rec.fact("mapi.url", origin + mailbox.path)
    rec.fact("mapi.user_dn", mailbox.user_dn)
    if mailbox.mailbox_id:
        rec.fact("mapi.mailbox_id", mailbox.mailbox_id)
    with ctx.client() as client:
        session = MapiSession(client, mailbox, auth=auth_for(ctx.settings))
        return _session(ctx, rec, session)


def _session(ctx: ProbeContext, rec: Recorder, session: MapiSession) -> ProbeResult:
    step = _Steps(rec, "POST " + session.mailbox.path.partition("?")[0])
    connect = session.connect()
    step.record(connect, _connect_detail(rec, connect))
    main = rec.main if connect.exchange is not None else None
    _session_facts(rec, session)
    failure: MapiOutcome[object] | None = None if connect.ok else connect
    if connect.ok:
        logon = session.execute_logon()
        step.record(logon, _logon_detail(rec, logon))
        failure = None if logon.ok else logon
        wait_s = ctx.settings.mapi_notification_wait_s
        if failure is None and wait_s > 0:
            failure = _wait_and_ping(ctx, step, session, wait_s)
    if session.connected:
        bye = session.disconnect()
        step.record(bye, "context closed" if bye.ok else bye.detail)
        failure = failure or (None if bye.ok else bye)
    if main is not None:
        rec.main = main
    if failure is not None:
        if failure.error_class is ErrorClass.TLS:
            rec.inspect_certificate()
        return rec.failure(failure.error_class or ErrorClass.PROTOCOL, f"{failure.request_type}: {failure.detail}")
    return rec.success(step.summary(session))


def _wait_and_ping(ctx: ProbeContext, step: _Steps, session: MapiSession, wait_s: float) -> MapiOutcome[object] | None:
    """NotificationWait up to ``wait_s`` (leaving time for PING and Disconnect), then PING; the first failure."""
    remaining = ctx.deadline - time.monotonic()
    hold = min(wait_s, remaining - min(3.0, max(1.0, remaining / 4)))
    if hold < _MIN_WAIT_S:
        step.rec.note("NotificationWait", ok=True, detail="skipped: too little time left before the deadline")
    else:
        wait = session.notification_wait(hold)
        step.record(wait, _wait_detail(wait.value) if wait.ok else wait.detail)
        if wait.value is not None:
            _wait_facts(step.rec, wait.value)
        if not wait.ok:
            return wait
    ping = session.ping()
    step.record(ping, "context alive" if ping.ok else ping.detail)
    return None if ping.ok else ping


class _Steps:
    """Records each outcome as a step (the ``auth`` phase from the flow's report) and the codes as facts."""

    def __init__(self, rec: Recorder, path: str) -> None:
        self.rec, self.path = rec, path
        self.fe_server: str | None = None
        self.be_server: str | None = None

    def record(self, outcome: MapiOutcome[object], detail: str) -> None:
        name = f"{self.path} ({outcome.request_type})"
        kind = outcome.request_type.lower()
        if outcome.response_code is not None:
            self.rec.fact(f"mapi.{kind}.response_code", describe_response_code(outcome.response_code))
        if outcome.error_code is not None:
            self.rec.fact(f"mapi.{kind}.error_code", error_code_name(outcome.error_code))
        exchange = note_auth(self.rec, outcome.auth, outcome.exchange)
        if exchange is None:
            self.rec.note(name, ok=outcome.ok, detail=detail, error_class=outcome.error_class)
            return
        self.fe_server = self.fe_server or exchange.fe_server
        self.be_server = self.be_server or exchange.be_server
        extra = {"response_code": outcome.response_code} if outcome.response_code is not None else {}
        self.rec.exchange(name, exchange, ok=outcome.ok, detail=detail, error_class=outcome.error_class, **extra)

    def summary(self, session: MapiSession) -> str:
        where = f" via {self.fe_server}" if self.fe_server else ""
        held = f", mailbox on {self.be_server}" if self.be_server else ""
        return f"Connect, RopLogon and Disconnect succeeded{where}{held} ({session.server_application or 'no version'})"


def _session_facts(rec: Recorder, session: MapiSession) -> None:
    for name, value in (
        ("mapi.server_application", session.server_application),
        ("mapi.expiration_ms", session.expiration_ms),
        ("mapi.pending_period_ms", session.pending_period_ms),
    ):
        if value is not None:
            rec.fact(name, value)
    exchange = rec.main
    if exchange is not None:
        for name, value in (("mapi.fe_server", exchange.fe_server), ("mapi.be_server", exchange.be_server)):
            if value:
                rec.fact(name, value)


def _connect_detail(rec: Recorder, outcome: MapiOutcome[ConnectResponse]) -> str:
    value = outcome.value
    if not outcome.ok or value is None:
        return outcome.detail
    if value.dn_prefix:
        rec.fact("mapi.dn_prefix", value.dn_prefix)
    return f"session context created for {value.display_name or 'the user'}"


def _logon_detail(rec: Recorder, outcome: MapiOutcome[LogonResponse]) -> str:
    value = outcome.value
    if isinstance(value, LogonRedirect):
        rec.fact("mapi.logon.redirect_server", value.server_name)
    if not isinstance(value, LogonSuccess) or not outcome.ok:
        return outcome.detail
    t = value.logon_time
    logon_time = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minutes:02d}:{t.seconds:02d}"
    rec.fact("mapi.mailbox_guid", value.mailbox_guid)
    rec.fact("mapi.logon_time", logon_time)
    return f"RopLogon to mailbox {value.mailbox_guid} at {logon_time}"


def _wait_detail(result: WaitResult | None) -> str:
    if result is None:
        return "no result"
    beats = f"{result.keepalives} keep-alive(s)"
    if result.parked:
        return f"still held after {result.held_s:.1f} s ({beats}); stopped at the probe's limit"
    return f"answered after {result.held_s:.1f} s ({beats}), EventPending={int(bool(result.event_pending))}"


def _wait_facts(rec: Recorder, result: WaitResult) -> None:
    rec.fact("mapi.notificationwait.held_s", f"{result.held_s:.2f}")
    rec.fact("mapi.notificationwait.keepalives", result.keepalives)
    rec.fact("mapi.notificationwait.event_pending", "parked" if result.parked else int(bool(result.event_pending)))
    if result.max_gap_s is not None:
        rec.fact("mapi.notificationwait.max_gap_s", f"{result.max_gap_s:.2f}")
