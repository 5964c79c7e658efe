"""``health``: the per-protocol ``/<vdir>/healthcheck.htm`` pages that load balancers poll.

Exchange 2013+ generates these pages in its protocol proxies, anonymously: 200 with ``200 OK<br/><server FQDN>``
while the protocol's component is healthy and active, something else (typically 503) otherwise — including in
maintenance, when ServerWideOffline is Inactive (protocols.md 4.1: only "not 200" is documented, so anything but
a 200 with the expected body counts as unhealthy). Through a load balancer the FQDN in the body tells which
backend answered.
"""

from __future__ import annotations

import re

from casprobe.model import ErrorClass, ProbeResult
from casprobe.probes.base import ProbeContext, Recorder

__all__ = ["VDIRS", "probe"]

VDIRS = ("autodiscover", "ews", "mapi", "oab", "owa", "ecp", "rpc", "Microsoft-Server-ActiveSync")
_BODY = re.compile(rb"^\s*200 OK<br\s*/?>\s*([A-Za-z0-9.-]*)", re.IGNORECASE)


def probe(ctx: ProbeContext) -> ProbeResult:
    rec = Recorder(ctx, "health")
    unhealthy: list[str] = []
    error_class: ErrorClass | None = None
    try:
        with ctx.client() as client:
            for vdir in VDIRS:
                exchange = client.request("GET", f"/{vdir}/healthcheck.htm", max_body=64 * 1024)
                match = _BODY.match(exchange.body)
                if exchange.status == 200 and match:
                    server = match.group(1).decode("ascii", "replace")
                    rec.exchange(f"GET /{vdir}/healthcheck.htm", exchange, ok=True, detail=f"200 OK from {server}")
                    rec.fact(f"health.{vdir.lower()}", f"200 {server}")
                    continue
                if exchange.status == 200:
                    detail = "200 but not the '200 OK<br/>server' page"
                    error_class = error_class or ErrorClass.CONTENT
                else:
                    detail = f"HTTP {exchange.status}"
                    error_class = ErrorClass.HTTP_STATUS
                unhealthy.append(f"{vdir} {detail}")
                rec.exchange(f"GET /{vdir}/healthcheck.htm", exchange, ok=False, detail=detail, error_class=error_class)
                rec.fact(f"health.{vdir.lower()}", str(exchange.status))
    except Exception as exc:
        return rec.from_exception(exc, "health check")
    if unhealthy:
        assert error_class is not None
        return rec.failure(error_class, f"{len(unhealthy)} of {len(VDIRS)} unhealthy: " + "; ".join(unhealthy))
    return rec.success(f"all {len(VDIRS)} health checks answer 200 OK")
