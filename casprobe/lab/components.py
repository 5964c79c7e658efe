"""Server component states, as ``Set-ServerComponentState`` keeps them.

Several requesters (Maintenance, HealthApi, Functional, …) hold independent states; a component is Active only
when no requester holds it Inactive or Draining. ``ServerWideOffline`` Inactive overrides every component except
Monitoring and RecoveryActionsEnabled (docs manage-dags.md; protocols.md 4.2).
"""

from __future__ import annotations

from typing import Literal

__all__ = ["COMPONENTS", "VDIR_COMPONENT", "ComponentState", "ComponentStates", "vdir_component"]

ComponentState = Literal["Active", "Inactive", "Draining"]

COMPONENTS = (
    "ServerWideOffline",
    "HubTransport",
    "FrontendTransport",
    "Monitoring",
    "RecoveryActionsEnabled",
    "AutoDiscoverProxy",
    "ActiveSyncProxy",
    "EcpProxy",
    "EwsProxy",
    "OabProxy",
    "OwaProxy",
    "RpcProxy",
    "MapiProxy",
    "HighAvailability",
)

# virtual directory (lower case) -> the proxy component that serves it
VDIR_COMPONENT = {
    "autodiscover": "AutoDiscoverProxy",
    "ews": "EwsProxy",
    "mapi": "MapiProxy",
    "owa": "OwaProxy",
    "ecp": "EcpProxy",
    "oab": "OabProxy",
    "rpc": "RpcProxy",
    "microsoft-server-activesync": "ActiveSyncProxy",
}

_NOT_OVERRIDDEN = frozenset({"Monitoring", "RecoveryActionsEnabled", "ServerWideOffline"})


def vdir_component(vdir: str) -> str | None:
    """The component behind a virtual directory, or None for an unknown one."""
    return VDIR_COMPONENT.get(vdir.strip("/").lower())


class ComponentStates:
    """The component states of one server."""

    def __init__(self) -> None:
        self._held: dict[str, dict[str, ComponentState]] = {}

    def set(self, component: str, state: ComponentState, requester: str = "Maintenance") -> None:
        if component not in COMPONENTS:
            raise ValueError(f"unknown component {component!r}")
        self._held.setdefault(component, {})[requester] = state

    def own(self, component: str) -> ComponentState:
        """The component's own state: the most restrictive state any requester holds."""
        states = self._held.get(component, {}).values()
        if "Inactive" in states:
            return "Inactive"
        if "Draining" in states:
            return "Draining"
        return "Active"

    def effective(self, component: str) -> ComponentState:
        """The state that governs behaviour, ServerWideOffline taken into account."""
        if component not in _NOT_OVERRIDDEN and self.own("ServerWideOffline") == "Inactive":
            return "Inactive"
        return self.own(component)

    def vdir_active(self, vdir: str) -> bool:
        """Whether requests to ``/<vdir>/`` are served (an unknown vdir follows ServerWideOffline)."""
        component = vdir_component(vdir)
        if component is None:
            return self.own("ServerWideOffline") == "Active"
        return self.effective(component) == "Active"

    def snapshot(self) -> dict[str, ComponentState]:
        return {c: self.effective(c) for c in COMPONENTS}
