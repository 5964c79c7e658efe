"""What the report shows besides the analysis: certificates, authentication methods, the run's settings.

- **Certificates** (per name, from the :class:`~casprobe.model.TlsFacts` each result carries): the last
  certificate seen, how many results showed one, and whether more than one distinct certificate (subject, issuer,
  expiry) was seen during the run. *Chain valid* is None ("not checked") when TLS verification was switched off.
- **Authentication** (per name × probe): the schemes the server offered, in the order first seen, and the scheme
  used with how many results used it (model.ProbeResult ``auth_offered`` / ``auth_used``).
- **Settings**: the run's settings JSON (``RunInfo.settings``) flattened to ``key: value`` lines for display.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from casprobe.model import ProbeResult, TlsFacts

__all__ = ["AuthSeen", "Certificate", "auth_seen", "certificates", "settings_pairs"]

_MAX_VALUE = 300
_MAX_SETTINGS = 60


@dataclass(frozen=True, slots=True)
class Certificate:
    """The certificate one name presented.

    Attributes:
        target: display name. name: DNS name. subject, issuer, not_after (ISO 8601), days_left, version (TLS):
        of the last certificate seen. chain_valid: verified against the trust store (None: verification off).
        name_match: the certificate names the host. seen: results that carried certificate facts.
        distinct: distinct certificates seen during the run (more than 1: it changed).
    """

    target: str
    name: str
    subject: str
    issuer: str
    not_after: str | None
    days_left: int | None
    version: str | None
    chain_valid: bool | None
    name_match: bool | None
    seen: int
    distinct: int


@dataclass(frozen=True, slots=True)
class AuthSeen:
    """Authentication seen on one name × probe.

    Attributes:
        target, probe: the row. offered: schemes offered, first seen first. used: (scheme, results) pairs,
        most used first.
    """

    target: str
    probe: str
    offered: tuple[str, ...]
    used: tuple[tuple[str, int], ...]


def _has_certificate(tls: TlsFacts | None) -> bool:
    return tls is not None and bool(tls.subject or tls.issuer or tls.not_after)


def certificates(results: Iterable[ProbeResult]) -> tuple[Certificate, ...]:
    """One entry per name that showed a certificate, in the order the names were first seen."""
    last: dict[str, tuple[str, TlsFacts]] = {}
    seen: Counter[str] = Counter()
    distinct: dict[str, set[tuple[str, str, str | None]]] = {}
    for result in results:
        tls = result.tls
        if tls is None or not _has_certificate(tls):
            continue
        key = result.target.display
        last[key] = (result.target.name, tls)
        seen[key] += 1
        distinct.setdefault(key, set()).add((tls.subject, tls.issuer, tls.not_after))
    out = []
    for key, (name, tls) in last.items():
        out.append(
            Certificate(
                key,
                name,
                tls.subject,
                tls.issuer,
                tls.not_after,
                tls.days_left,
                tls.version,
                None if tls.verification_disabled else tls.verified,
                tls.name_match,
                seen[key],
                len(distinct[key]),
            )
        )
    return tuple(out)


def auth_seen(results: Iterable[ProbeResult]) -> tuple[AuthSeen, ...]:
    """Per name × probe that saw any authentication: what was offered and what was used."""
    offered: dict[tuple[str, str], dict[str, None]] = {}
    used: dict[tuple[str, str], Counter[str]] = {}
    for result in results:
        if not result.auth_offered and not result.auth_used:
            continue
        key = (result.target.display, result.probe)
        offered.setdefault(key, {}).update(dict.fromkeys(result.auth_offered))
        counter = used.setdefault(key, Counter())
        if result.auth_used:
            counter[result.auth_used] += 1
    return tuple(
        AuthSeen(target, probe, tuple(offered[(target, probe)]), tuple(used[(target, probe)].most_common()))
        for target, probe in offered
    )


def _short(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 1] + "…"


def settings_pairs(settings: str) -> tuple[tuple[str, str], ...]:
    """The run's settings JSON as (key, value) lines (nested values as compact JSON; the raw text if not JSON)."""
    try:
        parsed = json.loads(settings) if len(settings) < 1_000_000 else None
    except (ValueError, RecursionError):
        parsed = None
    if not isinstance(parsed, dict):
        return (("settings", _short(settings)),) if settings.strip() not in ("", "{}") else ()
    pairs = [(str(k), _short(v)) for k, v in sorted(parsed.items()) if v not in (None, [], {}, "")]
    if len(pairs) > _MAX_SETTINGS:
        pairs = [*pairs[:_MAX_SETTINGS], ("…", f"{len(pairs) - _MAX_SETTINGS} more")]
    return tuple(pairs)
