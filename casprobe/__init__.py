"""casprobe: measure what Outlook sees through an Exchange DAG maintenance.

Probes Autodiscover, MAPI/HTTP, EWS and the per-protocol health checks through a load-balanced namespace and
through every server name, and ships a simulated Exchange organisation (``casprobe lab``) to rehearse against.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
