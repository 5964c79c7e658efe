"""``autodiscover``: what Autodiscover hands Outlook (POX with mapiHttp), exchangelib (SOAP) and v2 clients.

Follows [MS-OXDSCLI] §2.2.3-§2.2.4, §3.1.5 and §4.4 (POX request, ``X-MapiHttpCapability``, the mapiHttp
Protocol block, redirectAddr / redirectUrl, the error document), [MS-OXDISCO] §3.1.5 (candidate URLs, HTTP
redirect, SRV), [MS-OXWSADISC] §3.1.4.5 (SOAP GetUserSettings, what exchangelib 5.x speaks) and protocols.md
1.1-1.7 (Autodiscover v2 JSON). The POX lookup and the candidates are in :mod:`casprobe.probes.discovery`.

Per target (namespace or server):

1. Through the namespace, when a domain is known (``settings.domain`` or the mailbox's): Outlook's candidate trace
   for that domain, first (at most half of the probe's time); which candidate answered is ``autodiscover.candidate``.
2. POX ``POST https://<target>/autodiscover/autodiscover.xml`` (authenticated) — the probe's main request. Success
   needs the mapiHttp Protocol with MailStore and AddressBook URLs.
3. SOAP ``GetUserSettings`` on ``/autodiscover/autodiscover.svc`` (authenticated), then v2 JSON
   ``/autodiscover/autodiscover.json/v1.0/<smtp>?Protocol=EWS`` (anonymous); skipped when POX could not reach the
   target at all.

Facts: ``autodiscover.mapi.{mailstore,addressbook}.{internal,external}``, ``autodiscover.mapi.host`` (and
``autodiscover.mapi.hosts`` when the URLs name several), ``autodiscover.mapi.names`` (``namespace`` | ``server`` |
``other``), ``autodiscover.ews_url`` (+ ``.source``), ``autodiscover.legacy_dn``, ``autodiscover.display_name``,
``autodiscover.soap*``, ``autodiscover.v2*``, ``autodiscover.candidate*``.

Severity: a POX failure is CRITICAL with its class. Success is a WARNING when the mapiHttp URLs name a single
server's own name — on **any** target: through the namespace it is what clients get now; through a server it is what
every client gets whenever the load balancer sends its Autodiscover to that server (either way those clients connect
to that one server and freeze when it goes into maintenance). Also a WARNING: the SOAP or v2 endpoint failing, or
none of Outlook's candidates answering. A candidate that failed before a later one answered is only mentioned.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlsplit

from casprobe.errors import ConfigError
from casprobe.model import ErrorClass, ProbeResult, Severity, TargetKind
from casprobe.net.transport import classify
from casprobe.probes.base import ProbeContext, Recorder
from casprobe.probes.discovery import (
    MAX_HOPS,
    POX_PATH,
    CandidateResult,
    PoxOutcome,
    Session,
    pox_lookup,
    try_candidates,
)
from casprobe.protocols.autodiscover import AutodiscoverError, PoxResponse
from casprobe.protocols.autodiscover_soap import build_get_user_settings_request, parse_get_user_settings_response
from casprobe.protocols.autodiscover_v2 import AutodV2Error, parse_v2_response

__all__ = ["SOAP_PATH", "SOAP_SETTINGS", "V2_PATH", "Naming", "naming_of", "probe"]

SOAP_PATH = "/autodiscover/autodiscover.svc"
V2_PATH = "/autodiscover/autodiscover.json/v1.0/"
SOAP_SETTINGS = ("UserDisplayName", "UserDN", "ExternalEwsUrl", "InternalEwsUrl", "EwsSupportedSchemas", "CasVersion")
_SOAP_FACTS = {
    "ExternalEwsUrl": "external_ews_url",
    "InternalEwsUrl": "internal_ews_url",
    "UserDN": "user_dn",
    "EwsSupportedSchemas": "ews_schemas",
    "CasVersion": "cas_version",
}
_MAPI_URLS = (
    ("mailstore.internal", "mailstore_internal_url"),
    ("mailstore.external", "mailstore_external_url"),
    ("addressbook.internal", "addressbook_internal_url"),
    ("addressbook.external", "addressbook_external_url"),
)

Naming = Literal["namespace", "server", "other"]


@dataclass(frozen=True, slots=True)
class _Check:
    """How a secondary endpoint (SOAP, v2) went. Attributes: ok; error_class, detail; ews_url it gave."""

    ok: bool
    error_class: ErrorClass | None = None
    detail: str = ""
    ews_url: str | None = None

    def line(self) -> str:
        return "ok" if self.ok else f"{self.error_class}: {self.detail}"


def naming_of(host: str, ctx: ProbeContext) -> Naming:
    """Whether a URL host is the run's namespace, one server's own name, or something else."""
    host = host.lower().rstrip(".")
    target = ctx.target
    namespace = ctx.settings.namespace or (target.name if target.kind is TargetKind.NAMESPACE else None)
    if namespace and host == namespace.lower().rstrip("."):
        return "namespace"
    servers = {s.lower().rstrip(".") for s in ctx.settings.server_names}
    if target.kind is TargetKind.SERVER:
        servers.add(target.name.lower().rstrip("."))
    if host in servers or ("." in host and host.split(".", 1)[0] in servers):
        return "server"
    return "other"


def probe(ctx: ProbeContext) -> ProbeResult:
    mailbox = ctx.mailbox("autodiscover")
    rec = Recorder(ctx, "autodiscover")
    try:
        return _run(ctx, rec, mailbox)
    except ConfigError:
        raise
    except Exception as exc:  # a bug: reported as internal, never raised into the run
        return rec.from_exception(exc, "autodiscover")


def _run(ctx: ProbeContext, rec: Recorder, mailbox: str) -> ProbeResult:
    domain = (ctx.settings.domain or mailbox.rpartition("@")[2]).lower().strip(".")
    candidates: CandidateResult | None = None
    if ctx.target.kind is TargetKind.NAMESPACE and domain:
        now = time.monotonic()
        candidates = try_candidates(ctx, rec, domain, mailbox, now + max(0.0, ctx.deadline - now) / 2)
        rec.fact("autodiscover.candidate", candidates.answered or "none")
    origin = ctx.target.origin()
    with Session(ctx, rec, ctx.deadline) as session:
        outcome = pox_lookup(session, origin + POX_PATH, mailbox)
        soap = v2 = None
        if outcome.transport_failure:
            rec.note("SOAP GetUserSettings and v2 JSON skipped", ok=False, detail="the target did not answer POX")
        else:
            soap = _soap(session, origin + SOAP_PATH, outcome.address)
            v2 = _v2(session, origin, outcome.address)
    rec.main = outcome.exchange
    rec.tls = outcome.exchange.tls if outcome.exchange is not None else None
    if outcome.error_class is ErrorClass.TLS:
        rec.inspect_certificate()  # what the target presents: wrong name, expired, untrusted issuer
    return _verdict(ctx, rec, outcome, candidates, soap, v2)


def _verdict(
    ctx: ProbeContext,
    rec: Recorder,
    outcome: PoxOutcome,
    candidates: CandidateResult | None,
    soap: _Check | None,
    v2: _Check | None,
) -> ProbeResult:
    warnings: list[str] = []
    notes: list[str] = []
    if candidates is not None:
        _candidate_verdict(ctx, rec, candidates, warnings, notes)
    pox = outcome.response
    ews_url = _ews_url(rec, pox, soap, v2)
    for name, check in (("soap", soap), ("v2", v2)):
        if check is not None:
            rec.fact(f"autodiscover.{name}", check.line())
            if not check.ok:
                what = "SOAP GetUserSettings (exchangelib)" if name == "soap" else "Autodiscover v2 JSON"
                warnings.append(f"{what} failed: {check.detail}")
    if pox is None:
        assert outcome.error_class is not None
        return rec.failure(outcome.error_class, "; ".join([f"POX: {outcome.detail}", *notes]))
    _user_facts(rec, pox, outcome)
    block = pox.protocol("mapiHttp")
    urls = {key: getattr(block, attr) for key, attr in _MAPI_URLS if block is not None and getattr(block, attr)}
    for key, url in urls.items():
        rec.fact(f"autodiscover.mapi.{key}", url)
    if not any(k.startswith("mailstore") for k in urls) or not any(k.startswith("addressbook") for k in urls):
        detail = "POX answered without a mapiHttp Protocol holding MailStore and AddressBook URLs"
        return rec.failure(ErrorClass.CONTENT, "; ".join([f"{detail} (is MAPI over HTTP enabled?)", *notes]))
    hosts = list(dict.fromkeys((urlsplit(u).hostname or "?").lower() for u in urls.values()))
    names = {host: naming_of(host, ctx) for host in hosts}
    overall: Naming = "server" if "server" in names.values() else "other" if "other" in names.values() else "namespace"
    rec.fact("autodiscover.mapi.host", hosts[0])
    if len(hosts) > 1:
        rec.fact("autodiscover.mapi.hosts", ", ".join(hosts))
    rec.fact("autodiscover.mapi.names", overall)
    summary = f"mapiHttp URLs name {', '.join(hosts)}"
    if overall == "server":
        server = next(h for h, n in names.items() if n == "server")
        warnings.insert(0, _server_warning(ctx, server))
    elif overall == "other":
        notes.insert(
            0,
            f"{', '.join(h for h, n in names.items() if n == 'other')} is neither the namespace nor a "
            "known server name",
        )
    else:
        summary += " (the namespace)"
    if ews_url is not None:
        summary += f"; EWS {ews_url}"
    detail = "; ".join([summary, *notes, *warnings])
    result = rec.success(detail)
    return dataclasses.replace(result, severity=Severity.WARNING) if warnings else result


def _server_warning(ctx: ProbeContext, server: str) -> str:
    if ctx.target.kind is TargetKind.NAMESPACE:
        return (
            f"WARNING: through the namespace Autodiscover hands out {server}, a single server's name: Outlook "
            "connects to that server directly and freezes when it goes into maintenance"
        )
    return (
        f"WARNING: this server hands out its own name {server} instead of the namespace: every client whose "
        "Autodiscover the load balancer sends here connects to this one server and freezes in its maintenance"
    )


def _candidate_verdict(
    ctx: ProbeContext, rec: Recorder, candidates: CandidateResult, warnings: list[str], notes: list[str]
) -> None:
    if candidates.answered is None:
        warnings.append("none of Outlook's Autodiscover candidates answered: " + "; ".join(candidates.failures))
        return
    if candidates.failures:
        failed = "; ".join(candidates.failures)
        notes.append(f"Outlook's discovery found {candidates.answered} after {failed}")
    else:
        notes.append(f"Outlook's discovery found {candidates.answered}")
    pox = candidates.outcome.response if candidates.outcome is not None else None
    block = pox.protocol("mapiHttp") if pox is not None else None
    url = block.mailstore_internal_url or block.mailstore_external_url if block is not None else None
    host = (urlsplit(url).hostname or "").lower() if url else ""
    if host:
        rec.fact("autodiscover.candidate.mapi.host", host)
        if naming_of(host, ctx) == "server":
            warnings.append(f"WARNING: the discovery candidate {candidates.answered} hands out {host}, a single server")


def _user_facts(rec: Recorder, pox: PoxResponse, outcome: PoxOutcome) -> None:
    user = pox.user
    if user is not None:
        for name, value in (("display_name", user.display_name), ("legacy_dn", user.legacy_dn)):
            if value:
                rec.fact(f"autodiscover.{name}", value)
    if outcome.hops:
        rec.fact("autodiscover.redirects", outcome.hops)
        rec.fact("autodiscover.address", outcome.address)
        rec.fact("autodiscover.url", outcome.url)


def _ews_url(rec: Recorder, pox: PoxResponse | None, soap: _Check | None, v2: _Check | None) -> str | None:
    """The EWS URL a client would use: SOAP (ExternalEwsUrl, as exchangelib), else POX, else v2."""
    web = pox.protocol("WEB") if pox is not None else None
    for source, url in (
        ("soap", soap.ews_url if soap else None),
        ("pox", pox.legacy_ews_url if pox else None),
        ("pox WEB", web.as_url if web else None),
        ("v2", v2.ews_url if v2 else None),
    ):
        if url:
            rec.fact("autodiscover.ews_url", url)
            rec.fact("autodiscover.ews_url.source", source)
            return url
    return None


def _soap(session: Session, url: str, address: str) -> _Check:
    """GetUserSettings, following RedirectAddress / RedirectUrl (https only) within the hop limit."""
    rec = session.rec
    seen: set[tuple[str, str]] = set()
    for _ in range(MAX_HOPS + 1):
        if (url.lower(), address.lower()) in seen:
            return _soap_fail(rec, url, ErrorClass.PROTOCOL, "redirect loop")
        seen.add((url.lower(), address.lower()))
        step = f"POST {url} (GetUserSettings)"
        try:
            body = build_get_user_settings_request(address, SOAP_SETTINGS, url)
            headers = {"Content-Type": "text/xml; charset=utf-8", "X-AnchorMailbox": address}
            exchange = session.send("POST", url, headers, body)
        except AutodiscoverError as exc:
            return _soap_fail(rec, step, ErrorClass.PROTOCOL, f"cannot ask for {address!r}: {exc}")
        except Exception as exc:  # transport failures are data
            error_class, detail = classify(exc)
            return _soap_fail(rec, step, error_class, detail)
        if exchange.status == 401:
            detail = session.auth_failure(exchange)
            rec.exchange(step, exchange, ok=False, detail=detail, error_class=ErrorClass.AUTH)
            return _Check(False, ErrorClass.AUTH, detail)
        try:
            answer = parse_get_user_settings_response(exchange.body)
        except AutodiscoverError as exc:
            error_class = ErrorClass.PROTOCOL if exchange.status == 200 else ErrorClass.HTTP_STATUS
            detail = f"HTTP {exchange.status}: {exc}"
            rec.exchange(step, exchange, ok=False, detail=detail, error_class=error_class)
            return _Check(False, error_class, detail)
        user = answer.user
        problem = None
        if answer.fault is not None:
            problem = f"SOAP fault {answer.fault.code}: {answer.fault.message or ''}".rstrip(": ")
        elif answer.error_code not in (None, "NoError") or user is None:
            problem = f"GetUserSettings error {answer.error_code}: {answer.error_message or 'no UserResponse'}"
        if problem is not None or user is None:
            rec.exchange(step, exchange, ok=False, detail=problem or "", error_class=ErrorClass.PROTOCOL)
            return _Check(False, ErrorClass.PROTOCOL, problem or "")
        code, target = user.error_code, (user.redirect_target or "").strip()
        if code in ("RedirectAddress", "RedirectUrl") and target:
            https = urlsplit(target).scheme.lower() == "https"
            if code == "RedirectUrl" and not https:
                detail = f"redirect to {target[:200]} refused: Autodiscover redirects must go to https"
                rec.exchange(step, exchange, ok=False, detail=detail, error_class=ErrorClass.PROTOCOL)
                return _Check(False, ErrorClass.PROTOCOL, detail)
            rec.exchange(step, exchange, ok=True, detail=f"{code} to {target}")
            url, address = (target, address) if code == "RedirectUrl" else (url, target)
            continue
        if code not in ("", "NoError"):
            error_class = ErrorClass.CONTENT if code == "InvalidUser" else ErrorClass.PROTOCOL
            detail = f"UserResponse {code}: {user.error_message}".rstrip(": ")
            rec.exchange(step, exchange, ok=False, detail=detail, error_class=error_class)
            return _Check(False, error_class, detail)
        for setting, fact in _SOAP_FACTS.items():
            if user.settings.get(setting):
                rec.fact(f"autodiscover.soap.{fact}", user.settings[setting])
        if answer.server_version is not None:
            rec.fact("autodiscover.soap.server_version", answer.server_version.build)
        ews = user.settings.get("ExternalEwsUrl") or user.settings.get("InternalEwsUrl")
        rec.exchange(step, exchange, ok=True, detail=f"EWS {ews}" if ews else "no EWS URL")
        return _Check(True, ews_url=ews)
    return _soap_fail(rec, url, ErrorClass.PROTOCOL, f"more than {MAX_HOPS} redirects")


def _soap_fail(rec: Recorder, step: str, error_class: ErrorClass, detail: str) -> _Check:
    rec.note(step, ok=False, detail=detail, error_class=error_class)
    return _Check(False, error_class, detail)


def _v2(session: Session, origin: str, address: str) -> _Check:
    """Autodiscover v2: anonymous GET for the EWS endpoint (no redirects followed)."""
    url = f"{origin}{V2_PATH}{quote(address, safe='@')}?Protocol=EWS"
    step = f"GET {url}"
    try:
        exchange = session.send("GET", url, {"Accept": "application/json"}, max_body=64 * 1024, anonymous=True)
    except Exception as exc:  # transport failures are data
        error_class, detail = classify(exc)
        session.rec.note(step, ok=False, detail=detail, error_class=error_class)
        return _Check(False, error_class, detail)
    rec = session.rec
    try:
        answer = parse_v2_response(exchange.body)
    except AutodV2Error as exc:  # an ErrorCode document (400 + jsonerror on Exchange Online)
        detail = f"HTTP {exchange.status}: {exc}"
        rec.exchange(step, exchange, ok=False, detail=detail, error_class=ErrorClass.CONTENT)
        return _Check(False, ErrorClass.CONTENT, detail)
    except AutodiscoverError as exc:
        ok_status = exchange.status == 200
        error_class = ErrorClass.PROTOCOL if ok_status else ErrorClass.HTTP_STATUS
        detail = f"HTTP 200: {exc}" if ok_status else f"HTTP {exchange.status}"
        rec.exchange(step, exchange, ok=False, detail=detail, error_class=error_class)
        return _Check(False, error_class, detail)
    session.rec.exchange(step, exchange, ok=True, detail=f"{answer.protocol} {answer.url}")
    session.rec.fact("autodiscover.v2.ews_url", answer.url)
    return _Check(True, ews_url=answer.url)
