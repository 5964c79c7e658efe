"""Authentication for the probes: the ``httpx.Auth`` flow that :class:`ProbeSettings` ask for, and its report.

The flows themselves (NTLM / Negotiate with channel binding, Basic, Bearer, and ``auto``, which picks among the
schemes a 401 offers as Outlook does) are :mod:`casprobe.net.auth`; each leaves an
:class:`~casprobe.net.authreport.AuthReport` in ``auth.last_report`` after every request. Probes pass the flow per
request (``ProbeClient.request(..., auth=flow)``), read the report right after, and copy it into the result:
offered schemes, the method used, and the duration of each leg as the ``auth`` phase.

A flow authenticates a TCP connection (NTLM, Negotiate) or every request (Basic, Bearer): later requests on an
authenticated connection carry no Authorization header and their report has no method, so the result keeps the
first report that had one.
"""

from __future__ import annotations

import dataclasses

import httpx

from casprobe.errors import ConfigError
from casprobe.net.authreport import AuthReport
from casprobe.net.transport import Exchange
from casprobe.probes.base import ProbeSettings, Recorder

__all__ = ["auth_failure_detail", "auth_for", "last_report", "note_auth"]


def auth_for(settings: ProbeSettings) -> httpx.Auth | None:
    """A fresh flow for ``settings`` (one per client: a flow keeps its last report), or None without credentials."""
    from casprobe.net.auth import AutoAuth, BasicAuth, BearerAuth, SpnegoAuth

    credentials, bearer = settings.credentials, settings.bearer
    if settings.auth == "bearer":
        if bearer is None:
            raise ConfigError("auth 'bearer' needs a bearer token")
        return BearerAuth(bearer)
    if settings.auth == "auto":
        if credentials is None and bearer is None:
            return None  # anonymous: the server's 401 becomes an ``auth`` failure that says so
        return AutoAuth(credentials, bearer, channel_binding=settings.channel_binding)
    if credentials is None:
        raise ConfigError(f"auth {settings.auth!r} needs a user name and password")
    if settings.auth == "basic":
        return BasicAuth(credentials)
    return SpnegoAuth(credentials, settings.auth, channel_binding=settings.channel_binding)


def last_report(auth: httpx.Auth | None) -> AuthReport | None:
    """The report the flow left after its last request, if it is one of casprobe's flows."""
    report = getattr(auth, "last_report", None)
    return report if isinstance(report, AuthReport) else None


def note_auth(rec: Recorder, report: AuthReport | None, exchange: Exchange | None = None) -> Exchange | None:
    """Copy what ``report`` shows into ``rec`` (first method wins) and return ``exchange`` with its auth legs.

    The legs' durations replace the exchange's own ``auth`` phase when the flow authenticated on this request.
    """
    if report is None:
        return exchange
    if report.offered and not rec.auth_offered:
        rec.auth_offered = report.offered
    if report.method and rec.auth_used is None:
        rec.auth_used = report.method
    if exchange is None or not report.method:
        return exchange
    legs = tuple(leg.duration_s for leg in report.legs)
    return dataclasses.replace(exchange, timings=dataclasses.replace(exchange.timings, auth=legs))


def auth_failure_detail(report: AuthReport | None, auth: httpx.Auth | None) -> str:
    """Why a request ended in 401, in one line."""
    if auth is None:
        return "HTTP 401: authentication required and no credentials were given"
    if report is None:
        return "HTTP 401: the server refused the credentials"
    offered = ", ".join(report.offered) or "nothing"
    why = f"{report.failure.value}: {report.detail}" if report.failure is not None else "refused"
    method = report.method or "no method"
    return f"HTTP 401 ({method}; offered {offered}): {why}"
