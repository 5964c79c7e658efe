"""Autodiscover v2 codec: the anonymous JSON endpoint ``/autodiscover/autodiscover.json`` (no I/O).

Follows protocols.md §1.6: a success is ``{"Protocol": "...", "Url": "https://..."}``; an error is
``{"ErrorCode": "ProtocolNotSupported" | "MissingProtocol" | "MandatoryParameterMissing",
"ErrorMessage": "..."}`` (HTTP 400 + ``jsonerror: true`` on Exchange Online, 200 on gromox). Protocol
names are those Exchange Online lists in its ProtocolNotSupported message (mirrored by gromox
``exch/oxdisco.cpp`` ``protocol_list``), matched case-insensitively.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from casprobe.protocols.autodiscover import AutodiscoverError

__all__ = [
    "V2_PROTOCOLS",
    "AutodV2Error",
    "AutodV2Result",
    "build_v2_error",
    "build_v2_response",
    "canonical_v2_protocol",
    "parse_v2_response",
]

V2_PROTOCOLS = (
    "ActiveSync", "AutodiscoverV1", "Ews", "Rest", "Substrate", "SubstrateSearchService",
    "SubstrateNotificationService", "OutlookMeetingScheduler", "OutlookPay", "Actions", "Connectors",
    "ConnectorsProcessors", "ConnectorsWebhook", "NotesClient", "OwaPoweredExperience", "ToDo", "Weve",
    "OutlookLocationsService", "OutlookCloudSettingsService", "OutlookTailoredExperiences",
    "OwaPoweredExperienceV2", "Speedway", "SpeechAndLanguagePersonalization", "SubstrateSignalService",
    "CompliancePolicyService",
)  # fmt: skip
_MAX_JSON = 64 * 1024


class AutodV2Error(AutodiscoverError):
    """An Autodiscover v2 server answered with an ``ErrorCode`` document."""

    def __init__(self, error_code: str, error_message: str | None) -> None:
        super().__init__(f"Autodiscover v2 error {error_code}: {error_message or ''}".rstrip(": "))
        self.error_code = error_code
        self.error_message = error_message


@dataclass(frozen=True, slots=True)
class AutodV2Result:
    """A successful Autodiscover v2 answer.

    Attributes:
        protocol: the ``Protocol`` echoed by the server; url: the endpoint ``Url``.
    """

    protocol: str
    url: str


def canonical_v2_protocol(name: str) -> str | None:
    """Return the canonical spelling of a v2 protocol name (case-insensitive), or None if unknown."""
    wanted = name.strip().lower()
    return next((p for p in V2_PROTOCOLS if p.lower() == wanted), None)


def build_v2_response(protocol: str, url: str) -> bytes:
    """``{"Protocol": ..., "Url": ...}`` as served by autodiscover.json."""
    return json.dumps({"Protocol": protocol, "Url": url}).encode("utf-8")


def build_v2_error(code: str, message: str) -> bytes:
    """``{"ErrorCode": ..., "ErrorMessage": ...}`` (e.g. ProtocolNotSupported, MissingProtocol)."""
    return json.dumps({"ErrorCode": code, "ErrorMessage": message}).encode("utf-8")


def parse_v2_response(data: bytes | str) -> AutodV2Result:
    """Parse an autodiscover.json answer; an ErrorCode document raises AutodV2Error."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(raw) > _MAX_JSON:
        raise AutodiscoverError(f"Autodiscover v2 answer larger than {_MAX_JSON} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise AutodiscoverError(f"Autodiscover v2 answer is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise AutodiscoverError("Autodiscover v2 answer is not a JSON object")
    code = doc.get("ErrorCode")
    if code is not None:
        message = doc.get("ErrorMessage")
        raise AutodV2Error(str(code)[:256], None if message is None else str(message)[:4096])
    protocol, url = doc.get("Protocol"), doc.get("Url")
    if not isinstance(protocol, str) or not isinstance(url, str) or not url:
        raise AutodiscoverError("Autodiscover v2 answer lacks string Protocol and Url")
    return AutodV2Result(protocol=protocol, url=url)
