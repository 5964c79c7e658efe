"""Placeholder: the lab's ews routes are being written."""

from __future__ import annotations

from starlette.routing import BaseRoute

from casprobe.lab.world import LabWorld

__all__ = ["routes"]


def routes(world: LabWorld, server: str) -> list[BaseRoute]:
    return []
