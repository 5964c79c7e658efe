"""Probes: one module per protocol, one signature (``probe(ctx) -> ProbeResult``), one registry."""

from __future__ import annotations

import importlib

from casprobe.probes.base import ProbeContext, ProbeFn, ProbeSettings, Recorder

__all__ = ["PROBE_NAMES", "ProbeContext", "ProbeFn", "ProbeSettings", "Recorder", "get_probe"]

# protocol name -> module; the order is the order of reports
PROBE_NAMES = ("health", "autodiscover", "mapi", "ews")


def get_probe(name: str) -> ProbeFn:
    """The ``probe`` function of ``casprobe.probes.<name>``."""
    if name not in PROBE_NAMES:
        raise KeyError(name)
    module = importlib.import_module(f"casprobe.probes.{name}")
    fn: ProbeFn = module.probe
    return fn
