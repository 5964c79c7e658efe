"""Autodiscover POX lookups for the ``autodiscover`` probe: one lookup with its redirects, and Outlook's candidates.

- One lookup ([MS-OXDSCLI] §3.1.5, protocols.md 1.2-1.4): an authenticated ``POST`` of the Outlook POX request with
  ``X-MapiHttpCapability: 1`` and ``X-AnchorMailbox``; the answer is settings, ``redirectAddr`` (ask again, at the
  same URL, for the new address), ``redirectUrl`` (POST the same request there; https only) or the error document.
  HTTP 301/302/307/308 are followed (POST again) only to https. At most :data:`MAX_HOPS` redirects of any kind,
  and a URL/address pair asked twice is a loop. Bodies are capped at :data:`POX_MAX_BODY`, parsed by the hardened
  codec (no DTD, no entities: an XML bomb or an external entity is refused as ``protocol``).
- Candidates ([MS-OXDISCO] §3.1.5.1-§3.1.5.4, protocols.md 1.1), in Outlook's order: ``https://<domain>``,
  ``https://autodiscover.<domain>``, the anonymous ``GET http://autodiscover.<domain>`` whose **302** to https adds a
  URL to POST to, and the DNS SRV record ``_autodiscover._tcp.<domain>`` (dnspython, optional). Each candidate gets
  its own deadline, at most a third of the discovery budget left (half, then all of it, for the last two), so a
  dead candidate cannot eat the probe. The https candidates use the target's port (443 on a real deployment).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from urllib.parse import urljoin, urlsplit

from casprobe.model import ErrorClass, Target, TargetKind
from casprobe.net.transport import Exchange, ProbeClient, classify
from casprobe.probes.authflow import auth_failure_detail, auth_for, last_report, note_auth
from casprobe.probes.base import ProbeContext, Recorder
from casprobe.protocols.autodiscover import AutodiscoverError, PoxResponse, build_pox_request, parse_pox_response

__all__ = [
    "MAX_HOPS",
    "POX_MAX_BODY",
    "POX_PATH",
    "CandidateResult",
    "PoxOutcome",
    "Session",
    "SrvAnswer",
    "SrvRecord",
    "lookup_srv",
    "pox_lookup",
    "try_candidates",
]

POX_PATH = "/autodiscover/autodiscover.xml"
POX_MAX_BODY = 1024 * 1024
MAX_HOPS = 10
_FOLLOWED = (301, 302, 307, 308)
_TRANSPORT_CLASSES = (ErrorClass.DNS, ErrorClass.CONNECT, ErrorClass.TLS, ErrorClass.TIMEOUT)
_POX_ERRORS = {500: "unknown address", 501: "bad address", 600: "bad request", 601: "schema unsupported", 603: "failed"}


class Session:
    """The HTTP clients of one part of a probe (one per origin) under one deadline, with one auth flow.

    Each session builds its own flow (:func:`casprobe.probes.authflow.auth_for`: a flow keeps its last report).
    """

    def __init__(self, ctx: ProbeContext, rec: Recorder, deadline: float) -> None:
        self.ctx, self.rec, self.deadline = ctx, rec, min(deadline, ctx.deadline)
        self.auth = auth_for(ctx.settings)
        self._clients: dict[tuple[str, str, int], ProbeClient] = {}

    def client(self, url: str) -> ProbeClient:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port or (80 if parts.scheme == "http" else 443)
        if (parts.scheme, host, port) not in self._clients:
            mine = self.ctx.target
            address = mine.address if host == mine.name.lower() else None
            target = Target(host, TargetKind.SERVER, port, address, host)
            self._clients[parts.scheme, host, port] = replace(self.ctx, target=target, deadline=self.deadline).client()
        return self._clients[parts.scheme, host, port]

    def send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        content: bytes | None = None,
        *,
        max_body: int = POX_MAX_BODY,
        anonymous: bool = False,
    ) -> Exchange:
        """One request (authenticated unless ``anonymous``); what the flow did goes into the recorder."""
        auth = None if anonymous else self.auth
        exchange = self.client(url).request(method, url, headers=headers, content=content, max_body=max_body, auth=auth)
        return note_auth(self.rec, last_report(auth), exchange) or exchange

    def auth_failure(self, exchange: Exchange) -> str:
        """Why a 401 came back, with what the server offered."""
        detail = auth_failure_detail(last_report(self.auth), self.auth)
        if self.auth is None:
            offered = ", ".join(sorted(set(_offered(exchange)))) or "nothing (no WWW-Authenticate)"
            detail += f"; the server offers {offered}"
        return detail

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _offered(exchange: Exchange) -> list[str]:
    from casprobe.net.authreport import parse_www_authenticate

    return [c.scheme for c in parse_www_authenticate(exchange.headers.get_list("www-authenticate"))]


@dataclass(frozen=True, slots=True)
class PoxOutcome:
    """The end of one POX lookup.

    Attributes:
        response: the settings answer (None when the lookup failed).
        url: the URL that gave the last answer (or was being asked when it failed).
        address: the address the answer is for (changed by ``redirectAddr``).
        hops: redirects followed.
        error_class, detail: why it failed.
        exchange: the last HTTP exchange (timings, address, TLS facts), if any.
    """

    response: PoxResponse | None
    url: str
    address: str
    hops: int = 0
    error_class: ErrorClass | None = None
    detail: str = ""
    exchange: Exchange | None = None

    @property
    def ok(self) -> bool:
        return self.response is not None

    @property
    def transport_failure(self) -> bool:
        """The server was not reached or did not answer (dns, connect, tls, timeout)."""
        return self.error_class in _TRANSPORT_CLASSES


def _hostile_hint(exc: AutodiscoverError) -> str:
    text = str(exc)
    if "Forbidden" in text:
        return f"{text} (a DTD or entity declaration: refused, as an XML bomb or an external entity would be)"
    return text


def pox_lookup(session: Session, url: str, address: str, *, label: str = "", hops: int = 0) -> PoxOutcome:
    """POST the POX request to ``url`` and follow redirects until settings, an error, or a limit."""
    rec = session.rec
    seen: set[tuple[str, str]] = set()
    exchange: Exchange | None = None

    def fail(error_class: ErrorClass, detail: str) -> PoxOutcome:
        return PoxOutcome(None, url, address, hops, error_class, detail, exchange)

    while True:
        if (url.lower(), address.lower()) in seen:
            rec.note(f"{label}redirect to {url}", ok=False, detail="redirect loop", error_class=ErrorClass.PROTOCOL)
            return fail(ErrorClass.PROTOCOL, f"redirect loop: {url} for {address} was already asked")
        seen.add((url.lower(), address.lower()))
        step = f"{label}POST {url}"
        try:
            body = build_pox_request(address)
        except AutodiscoverError as exc:
            rec.note(step, ok=False, detail=str(exc), error_class=ErrorClass.PROTOCOL)
            return fail(ErrorClass.PROTOCOL, f"cannot ask for {address!r}: {exc}")
        headers = {"Content-Type": "text/xml", "X-MapiHttpCapability": "1", "X-AnchorMailbox": address}
        try:
            exchange = session.send("POST", url, headers, body)
        except Exception as exc:  # every transport failure becomes data (classify is the one map)
            error_class, detail = classify(exc)
            rec.note(step, ok=False, detail=detail, error_class=error_class)
            return fail(error_class, detail)
        status = exchange.status
        if status in _FOLLOWED:
            location = exchange.headers.get("location")
            if not location:
                rec.exchange(
                    step, exchange, ok=False, detail=f"HTTP {status} without Location", error_class=ErrorClass.PROTOCOL
                )
                return fail(ErrorClass.PROTOCOL, f"HTTP {status} without a Location header")
            target = urljoin(url, location.strip())
            refused = _redirect_step(rec, step, exchange, target, hops, f"HTTP {status}")
            if refused:
                return fail(ErrorClass.PROTOCOL, refused)
            url, hops = target, hops + 1
            continue
        if status == 401:
            detail = session.auth_failure(exchange)
            rec.exchange(step, exchange, ok=False, detail=detail, error_class=ErrorClass.AUTH)
            return fail(ErrorClass.AUTH, detail)
        if status != 200:
            rec.exchange(step, exchange, ok=False, detail=f"HTTP {status}", error_class=ErrorClass.HTTP_STATUS)
            return fail(ErrorClass.HTTP_STATUS, f"HTTP {status} from {url}")
        try:
            pox = parse_pox_response(exchange.body)
        except AutodiscoverError as exc:
            detail = f"not a usable POX answer: {_hostile_hint(exc)}"
            rec.exchange(step, exchange, ok=False, detail=detail, error_class=ErrorClass.PROTOCOL)
            return fail(ErrorClass.PROTOCOL, detail)
        if pox.error is not None:
            code = pox.error.code
            error_class = ErrorClass.CONTENT if code in (500, 501) else ErrorClass.PROTOCOL
            what = _POX_ERRORS.get(code, "error")
            detail = f"error document {code} ({what}): {pox.error.message or ''}".rstrip(": ")
            rec.exchange(step, exchange, ok=False, detail=detail, error_class=error_class, response_code=code)
            return fail(error_class, detail)
        action = (pox.action or "settings").lower()
        if action == "redirectaddr":
            new = (pox.redirect_addr or "").strip()
            if "@" not in new or len(new) > 320 or hops >= MAX_HOPS:
                why = f"more than {MAX_HOPS} redirects" if hops >= MAX_HOPS else f"unusable RedirectAddr {new[:80]!r}"
                rec.exchange(step, exchange, ok=False, detail=why, error_class=ErrorClass.PROTOCOL)
                return fail(ErrorClass.PROTOCOL, why)
            rec.exchange(step, exchange, ok=True, detail=f"redirectAddr to {new}")
            address, hops = new, hops + 1
            continue
        if action == "redirecturl":
            target = (pox.redirect_url or "").strip()
            refused = _redirect_step(rec, step, exchange, target, hops, "redirectUrl")
            if refused:
                return fail(ErrorClass.PROTOCOL, refused)
            url, hops = target, hops + 1
            continue
        if action != "settings":
            rec.exchange(step, exchange, ok=False, detail=f"unknown Action {action!r}", error_class=ErrorClass.PROTOCOL)
            return fail(ErrorClass.PROTOCOL, f"unknown Autodiscover Action {action[:40]!r}")
        rec.exchange(step, exchange, ok=True, detail="settings")
        return PoxOutcome(pox, url, address, hops, None, "", exchange)


def _redirect_step(rec: Recorder, step: str, exchange: Exchange, target: str, hops: int, what: str) -> str | None:
    """Record a redirect answer; return why it must not be followed, or None."""
    refused = _refuse_redirect(target, hops) if target else f"{what} without a target"
    error_class = ErrorClass.PROTOCOL if refused else None
    rec.exchange(step, exchange, ok=refused is None, detail=refused or f"{what} to {target}", error_class=error_class)
    return refused


def _refuse_redirect(target: str, hops: int) -> str | None:
    """Why a redirect must not be followed, or None."""
    parts = urlsplit(target)
    if parts.scheme.lower() != "https" or not parts.hostname:
        return f"redirect to {target[:200]} refused: Autodiscover redirects must go to https"
    if hops >= MAX_HOPS:
        return f"more than {MAX_HOPS} redirects (last to {target[:200]})"
    return None


# --- candidates ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SrvRecord:
    """One SRV record. Attributes: priority, weight, port, target (no trailing dot)."""

    priority: int
    weight: int
    port: int
    target: str


@dataclass(frozen=True, slots=True)
class SrvAnswer:
    """The SRV lookup. Attributes: records (best first, RFC 2782); detail: why empty; skipped: not attempted."""

    records: tuple[SrvRecord, ...] = ()
    detail: str = ""
    skipped: bool = False


def lookup_srv(name: str, timeout: float, nameservers: tuple[tuple[str, int], ...] = ()) -> SrvAnswer:
    """Ask DNS for SRV records with dnspython (optional: without it the lookup is skipped)."""
    try:
        import dns.exception
        import dns.resolver
    except ImportError:
        return SrvAnswer(detail="dnspython not installed", skipped=True)
    resolver = dns.resolver.Resolver(configure=not nameservers)
    if nameservers:
        resolver.nameservers = [address for address, _ in nameservers]
        resolver.port = nameservers[0][1]
    try:
        answer = resolver.resolve(name, "SRV", lifetime=max(timeout, 0.05), search=False)
    except dns.resolver.NXDOMAIN:
        return SrvAnswer(detail="no such name")
    except dns.resolver.NoAnswer:
        return SrvAnswer(detail="no SRV record")
    except dns.exception.Timeout:
        return SrvAnswer(detail=f"no DNS answer within {timeout:.1f} s")
    except dns.exception.DNSException as exc:
        return SrvAnswer(detail=f"DNS error: {type(exc).__name__}")
    records = [
        SrvRecord(int(r.priority), int(r.weight), int(r.port), str(r.target).rstrip(".").lower())
        for r in answer
        if str(r.target).rstrip(".")
    ]
    records.sort(key=lambda r: (r.priority, -r.weight))
    return SrvAnswer(tuple(records), "" if records else "only empty targets")


@dataclass(frozen=True, slots=True)
class CandidateResult:
    """Attributes: answered: the candidate URL that gave settings (None if none did); outcome: its lookup;
    failures: one line per candidate that did not answer, in order."""

    answered: str | None
    outcome: PoxOutcome | None
    failures: tuple[str, ...]


def _origin(host: str, port: int) -> str:
    return f"https://{host}" if port == 443 else f"https://{host}:{port}"


def _shares(phase_deadline: float, count: int) -> Iterator[float]:
    """Per-candidate deadlines: at most a third of what remains (a half, then all, for the last two)."""
    for left in range(count, 0, -1):
        now = time.monotonic()
        yield now + max(0.0, phase_deadline - now) / min(3, left)


def try_candidates(
    ctx: ProbeContext, rec: Recorder, domain: str, address: str, phase_deadline: float
) -> CandidateResult:
    """Outlook's candidate trace for ``domain``, in order, until one gives settings."""
    port = ctx.target.port
    failures: list[str] = []
    shares = _shares(phase_deadline, 4)
    posts = ((1, f"{_origin(domain, port)}{POX_PATH}"), (2, f"{_origin('autodiscover.' + domain, port)}{POX_PATH}"))
    for number, url in posts:
        with Session(ctx, rec, next(shares)) as session:
            outcome = pox_lookup(session, url, address, label=f"candidate {number}: ")
        if outcome.ok:
            return CandidateResult(url, outcome, tuple(failures))
        failures.append(f"{url}: {outcome.error_class} ({outcome.detail})")
    url = f"http://autodiscover.{domain}{POX_PATH}"
    with Session(ctx, rec, next(shares)) as session:
        outcome = _http_redirect_candidate(session, url, address)
    if outcome.ok:
        return CandidateResult(url, outcome, tuple(failures))
    failures.append(f"{url}: {outcome.error_class} ({outcome.detail})")
    name = f"_autodiscover._tcp.{domain}"
    deadline = next(shares)
    srv = lookup_srv(name, max(0.05, deadline - time.monotonic()))
    if srv.skipped:
        rec.note(f"candidate 4: SRV lookup skipped ({srv.detail})", ok=False, detail=srv.detail)
        failures.append(f"SRV {name}: skipped ({srv.detail})")
        return CandidateResult(None, None, tuple(failures))
    if not srv.records:
        rec.note(f"candidate 4: SRV {name}", ok=False, detail=srv.detail, error_class=ErrorClass.DNS)
        failures.append(f"SRV {name}: {srv.detail}")
        return CandidateResult(None, None, tuple(failures))
    best = srv.records[0]
    url = f"{_origin(best.target, best.port)}{POX_PATH}"
    rec.note(f"candidate 4: SRV {name}", ok=True, detail=f"{best.target}:{best.port} (priority {best.priority})")
    with Session(ctx, rec, deadline) as session:
        outcome = pox_lookup(session, url, address, label="candidate 4: ")
    if outcome.ok:
        return CandidateResult(url, outcome, tuple(failures))
    failures.append(f"{url} (SRV): {outcome.error_class} ({outcome.detail})")
    return CandidateResult(None, None, tuple(failures))


def _http_redirect_candidate(session: Session, url: str, address: str) -> PoxOutcome:
    """[MS-OXDISCO] §3.1.5.3: anonymous GET on http; only a 302 to https is followed (with the POX POST)."""
    step = f"candidate 3: GET {url}"
    rec = session.rec
    try:
        exchange = session.send("GET", url, {}, max_body=64 * 1024, anonymous=True)
    except Exception as exc:  # transport failures are data
        error_class, detail = classify(exc)
        rec.note(step, ok=False, detail=detail, error_class=error_class)
        return PoxOutcome(None, url, address, 0, error_class, detail)
    location = exchange.headers.get("location", "").strip()
    if exchange.status != 302 or not location:
        detail = f"HTTP {exchange.status}, not a 302 redirect"
        if exchange.status in _FOLLOWED:
            detail += " ([MS-OXDISCO] 3.1.5.3 follows only 302)" if location else " without Location"
        rec.exchange(step, exchange, ok=False, detail=detail, error_class=ErrorClass.HTTP_STATUS)
        return PoxOutcome(None, url, address, 0, ErrorClass.HTTP_STATUS, detail, exchange)
    target = urljoin(url, location)
    refused = _redirect_step(rec, step, exchange, target, 0, "HTTP 302")
    if refused:
        return PoxOutcome(None, url, address, 0, ErrorClass.PROTOCOL, refused, exchange)
    return pox_lookup(session, target, address, label="candidate 3: ", hops=1)
