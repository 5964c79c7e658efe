"""``ews``: Exchange Web Services as Outlook for Mac and exchangelib use it, through the target's name.

``POST /EWS/Exchange.asmx`` (``text/xml; charset=utf-8``, ``X-AnchorMailbox: <mailbox>``, RequestServerVersion
Exchange2016; protocols.md §3.1), authenticated, two operations on one connection:

1. **GetFolder** of the distinguished folder ``inbox`` ([MS-OXWSFOLD] §3.1.4.6; IdOnly + TotalCount, UnreadCount):
   the probe's main request (resolve, connect, TLS and the authentication legs are its phases);
2. **FindItem** on the inbox ([MS-OXWSSRCH] §3.1.4.2; Traversal Shallow, IndexedPageItemView of 1 item).

The ``ServerVersionInfo`` SOAP header ([MS-OXWSCDATA]) is reported as facts (``ews.server_version`` = the build
number, ``ews.version`` = its Version string); TotalCount / UnreadCount and FindItem's TotalItemsInView too.

How an answer fails (protocols.md §3.3, §6; the choice where they are silent is ours and listed here):

- 401 → ``auth``; any other status than 200 and 500 (503 from a draining server or a proxy, 302, 404 with
  ``X-CasErrorCode``) → ``http_status``; a 500 that is not a SOAP envelope → ``http_status``;
- a 200 that is not an EWS SOAP envelope (HTML, garbage, hostile XML refused by the hardened parser) → ``protocol``;
- a SOAP fault → ``protocol`` (``ErrorServerBusy`` with ``BackOffMilliseconds``: the detail says how long to back
  off), unless its code is one of the two below;
- a response message of class Error → ``protocol`` (``ErrorMailboxStoreUnavailable`` and
  ``ErrorMailboxMoveInProgress`` during a database move or failover are service events), except
  ``ErrorNonExistentMailbox`` → ``content`` (the mailbox asked for does not exist: a configuration or directory
  matter, not an outage) and ``ErrorAccessDenied`` → ``auth`` (the identity was authenticated but may not open
  this mailbox: a credentials/mailbox mismatch, grouped with the other identity failures). Warning is a success.
"""

from __future__ import annotations

import httpx

from casprobe.errors import ConfigError
from casprobe.model import ErrorClass, ProbeResult
from casprobe.net.transport import Exchange, ProbeClient
from casprobe.probes.authflow import auth_failure_detail, auth_for, last_report, note_auth
from casprobe.probes.base import ProbeContext, Recorder
from casprobe.protocols.ews import EwsCodecError, EwsResponse, ResponseMessage, ServerVersionInfo, parse_ews_response
from casprobe.protocols.ews_requests import build_find_item_request, build_get_folder_request

__all__ = ["EWS_PATH", "MAX_BODY", "classify_code", "probe"]

EWS_PATH = "/EWS/Exchange.asmx"
MAX_BODY = 1024 * 1024  # one folder and one item: a few KiB
_CONTENT_CODES = frozenset({"ErrorNonExistentMailbox"})
_AUTH_CODES = frozenset({"ErrorAccessDenied"})


class _Failure(Exception):
    def __init__(self, error_class: ErrorClass, detail: str) -> None:
        super().__init__(detail)
        self.error_class, self.detail = error_class, detail


def classify_code(code: str | None) -> ErrorClass:
    """The error class of an EWS ResponseCode (of a response message or a fault), as the module docstring says."""
    if code in _CONTENT_CODES:
        return ErrorClass.CONTENT
    if code in _AUTH_CODES:
        return ErrorClass.AUTH
    return ErrorClass.PROTOCOL


def probe(ctx: ProbeContext) -> ProbeResult:
    mailbox = ctx.mailbox("ews")
    rec = Recorder(ctx, "ews")
    caller = _Caller(rec, mailbox, auth_for(ctx.settings))
    try:
        with ctx.client() as client:
            caller.client = client
            return _run(caller)
    except ConfigError:
        raise
    except Exception as exc:  # transport failures (classified) and bugs (internal): never raised into the run
        return rec.from_exception(exc, caller.step)


class _Caller:
    """Sends EWS requests for one probe and records each as a step."""

    def __init__(self, rec: Recorder, mailbox: str, auth: httpx.Auth | None) -> None:
        self.rec, self.mailbox, self.auth = rec, mailbox, auth
        self.client: ProbeClient | None = None
        self.step = "ews"
        self.version: ServerVersionInfo | None = None

    def call(self, operation: str, body: bytes) -> ResponseMessage:
        """POST one operation; return its first response message, or raise _Failure (recorded as a step)."""
        step = self.step = f"POST {EWS_PATH} ({operation})"
        assert self.client is not None
        headers = {
            "Content-Type": "text/xml; charset=utf-8",
            "Accept": "text/xml",
            "X-AnchorMailbox": self.mailbox,
        }
        try:
            exchange = self.client.request(
                "POST", EWS_PATH, headers=headers, content=body, max_body=MAX_BODY, auth=self.auth
            )
        except Exception:
            note_auth(self.rec, last_report(self.auth))
            raise
        exchange = note_auth(self.rec, last_report(self.auth), exchange) or exchange
        try:
            message = self._judge(operation, exchange)
        except _Failure as failure:
            self.rec.exchange(step, exchange, ok=False, detail=failure.detail, error_class=failure.error_class)
            raise
        detail = f"{message.response_class} {message.response_code or ''}".strip()
        self.rec.exchange(step, exchange, ok=True, detail=detail)
        return message

    def _judge(self, operation: str, exchange: Exchange) -> ResponseMessage:
        status = exchange.status
        if status == 401:
            raise _Failure(ErrorClass.AUTH, auth_failure_detail(last_report(self.auth), self.auth))
        if status not in (200, 500):
            cas = exchange.headers.get("x-caserrorcode")
            raise _Failure(ErrorClass.HTTP_STATUS, f"HTTP {status}" + (f" (X-CasErrorCode {cas[:80]})" if cas else ""))
        try:
            answer = parse_ews_response(exchange.body)
        except EwsCodecError as exc:
            if status == 500:
                raise _Failure(ErrorClass.HTTP_STATUS, f"HTTP 500 without a SOAP envelope ({exc})") from None
            raise _Failure(ErrorClass.PROTOCOL, f"not an EWS SOAP answer: {exc}") from None
        self._note_version(answer)
        if answer.fault is not None:
            fault = answer.fault
            code = fault.response_code or fault.code
            detail = f"SOAP fault {code}: {(fault.message or '').strip()[:300]}".rstrip(": ")
            if fault.back_off_ms is not None:
                detail += f"; back off {fault.back_off_ms / 1000:.1f} s"
            raise _Failure(classify_code(code), detail)
        if answer.operation != operation or not answer.messages:
            got = answer.operation or "nothing"
            raise _Failure(ErrorClass.PROTOCOL, f"expected a {operation} response message, got {got} (HTTP {status})")
        message = answer.messages[0]
        if message.response_class not in ("Success", "Warning"):
            code = message.response_code or "no ResponseCode"
            text = (message.message_text or "").strip()[:300]
            raise _Failure(classify_code(message.response_code), f"{code}: {text}".rstrip(": "))
        if status != 200:
            raise _Failure(ErrorClass.HTTP_STATUS, f"HTTP {status} with a {message.response_class} message")
        return message

    def _note_version(self, answer: EwsResponse) -> None:
        if answer.server_version is not None and self.version is None:
            self.version = answer.server_version
            self.rec.fact("ews.server_version", self.version.build)
            if self.version.version:
                self.rec.fact("ews.version", self.version.version)


def _run(caller: _Caller) -> ProbeResult:
    rec, mailbox = caller.rec, caller.mailbox
    main = None
    try:
        folder_message = caller.call("GetFolder", build_get_folder_request(["inbox"], mailbox=mailbox))
        main = rec.main
        if not folder_message.folders:
            raise _Failure(ErrorClass.CONTENT, "GetFolder succeeded without a folder")
        inbox = folder_message.folders[0]
        for name, value in (("total_count", inbox.total_count), ("unread_count", inbox.unread_count)):
            if value is not None:
                rec.fact(f"ews.inbox.{name}", value)
        find_message = caller.call("FindItem", build_find_item_request("inbox", mailbox=mailbox, max_entries=1))
    except _Failure as failure:
        rec.main = main or rec.main
        return rec.failure(failure.error_class, failure.detail)
    rec.main = main
    in_view = find_message.total_items_in_view
    rec.fact("ews.finditem.items", len(find_message.items))
    if in_view is not None:
        rec.fact("ews.finditem.total_items_in_view", in_view)
    exchange = rec.main
    where = ""
    if exchange is not None and exchange.fe_server:
        where = f" via {exchange.fe_server}" + (f", mailbox on {exchange.be_server}" if exchange.be_server else "")
    counts = f"{inbox.total_count if inbox.total_count is not None else '?'} items"
    if inbox.unread_count is not None:
        counts += f", {inbox.unread_count} unread"
    version = f" ({caller.version.build})" if caller.version else ""
    return rec.success(f"inbox has {counts}; FindItem returned {len(find_message.items)}{where}{version}")
