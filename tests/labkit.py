"""Starting labs for tests, and reaching them by name with their own CA, the way clients would.

Every lab gets its own loopback /24 (127.0.N.10 for HAProxy, .11… for servers) so that labs of several tests, or
a lab a developer left running on 127.0.0.10, never collide.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from casprobe.lab.cli import lab_down, lab_up
from casprobe.lab.control import LabClient
from casprobe.lab.events import LabEvent, read_events
from casprobe.lab.org import LabConfig, Org
from casprobe.lab.secrets import PasswordBook

# 127.0.101.x … 127.0.250.x, starting at a point that depends on the pid (two test runs at once rarely meet), and
# wrapping around: a lab is down long before its /24 comes round again
_subnets = (101 + (n % 150) for n in itertools.count((os.getpid() % 50) * 3))

TEST_CONFIG = LabConfig(
    check_inter_ms=300,
    check_fall=2,
    check_rise=2,
    switchover_s=0.5,
    failover_delay_s=1.0,
    notification_wait_s=5.0,
    pending_period_ms=1000,
)


@dataclass
class LabHandle:
    """A running lab, as a test sees it."""

    folder: Path
    org: Org

    @property
    def ca_file(self) -> Path:
        return self.folder / "tls" / "ca.pem"

    @property
    def port(self) -> int:
        return self.org.config.port

    def control(self) -> LabClient:
        return LabClient(self.folder)

    def password(self, alias: str) -> str:
        return PasswordBook(self.org, self.folder).password(alias)

    def events(self) -> list[LabEvent]:
        return list(read_events(self.folder / "events.jsonl"))

    def url(self, host: str, path: str) -> str:
        port = "" if self.port == 443 else f":{self.port}"
        return f"https://{host}{port}{path}"

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def httpx_client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client that resolves lab names to lab addresses (SNI and Host keep the name)."""
        names = self.org.names()

        transport = httpx.HTTPTransport(verify=self.ssl_context())
        pool = transport._pool
        original = pool._network_backend

        class _Pinned:
            def connect_tcp(self, host: str, port: int, timeout: float | None = None, **kw: Any) -> Any:
                return original.connect_tcp(names.get(host, host), port, timeout=timeout, **kw)

            def __getattr__(self, name: str) -> Any:
                return getattr(original, name)

        pool._network_backend = _Pinned()
        return httpx.Client(transport=transport, trust_env=False, **kwargs)

    @contextlib.contextmanager
    def resolving(self) -> Iterator[None]:
        """Resolve the lab's names process-wide (requests, exchangelib…) while the block runs."""
        names = self.org.names()
        original = socket.getaddrinfo

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(host, str):
                host = names.get(host.lower(), host)
            return original(host, *args, **kwargs)

        socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
        try:
            yield
        finally:
            socket.getaddrinfo = original  # type: ignore[assignment]

    def wait_lb(self, server: str, *, up: bool, timeout: float = 15.0) -> None:
        """Wait until HAProxy sees ``server`` UP (or out of rotation) in every backend."""
        deadline = time.monotonic() + timeout
        with self.control() as control:
            while True:
                states = [s for key, s in control.status()["haproxy"].items() if key.endswith(f"/{server}")]
                if states and all((s == "UP") == up for s in states):
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"HAProxy's view of {server} is still {states} after {timeout} s")
                time.sleep(0.1)

    def down(self) -> None:
        lab_down(self.folder)


def next_subnet() -> int:
    """The third octet of a loopback /24 no other lab of this test run is using (for labs started elsewhere)."""
    return next(_subnets)


def start_lab(folder: Path, **overrides: Any) -> LabHandle:
    """Start a lab on a fresh loopback /24 with fast test timings (override any LabConfig field)."""
    port = 443 if os.geteuid() == 0 else 8443
    config = replace(TEST_CONFIG, base_address=f"127.0.{next(_subnets)}.10", port=port, **overrides)
    org = lab_up(folder, config)
    return LabHandle(folder, org)
