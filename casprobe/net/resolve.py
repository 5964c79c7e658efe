"""Name resolution, timed, with curl-style pinning (``--resolve NAME:ADDR[:PORT]``).

casprobe resolves names itself (as blackbox_exporter does) so that the resolve phase is timed and reported,
and so that "the namespace as served by mb1" can be probed: a pinned name connects to the given address while
URLs, Host and SNI keep the name. System resolution runs in a worker thread under a timeout, because
``getaddrinfo`` itself has none.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from casprobe.errors import ConfigError

__all__ = ["DnsFailure", "Pin", "Resolved", "Resolver", "parse_pin"]

_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="casprobe-dns")


class DnsFailure(OSError):
    """A name did not resolve (or not in time)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name} does not resolve: {reason}")
        self.name = name
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Pin:
    """``NAME:ADDR[:PORT]``: connect to ADDR (and PORT, when given) whenever NAME is asked for."""

    name: str
    address: str
    port: int | None = None


@dataclass(frozen=True, slots=True)
class Resolved:
    """The address a name resolved to, how long it took, and whether it was pinned."""

    address: str
    duration: float
    pinned: bool


def parse_pin(text: str) -> Pin:
    """Parse ``NAME:ADDR[:PORT]``; IPv6 addresses go in brackets (``mb1.contoso.com:[2001:db8::1]:443``)."""
    name, sep, rest = text.partition(":")
    if not sep or not name or not rest:
        raise ConfigError(f"--resolve {text!r}: expected NAME:ADDRESS[:PORT]")
    port: int | None = None
    if rest.startswith("["):
        address, bracket, tail = rest[1:].partition("]")
        if not bracket:
            raise ConfigError(f"--resolve {text!r}: unclosed '[' around an IPv6 address")
        if tail:
            if not tail.startswith(":"):
                raise ConfigError(f"--resolve {text!r}: expected ':PORT' after the IPv6 address")
            port = _port(text, tail[1:])
    else:
        address, sep, port_text = rest.partition(":")
        if sep:
            port = _port(text, port_text)
    try:
        ipaddress.ip_address(address)
    except ValueError as exc:
        raise ConfigError(f"--resolve {text!r}: {address!r} is not an IP address") from exc
    return Pin(name.lower().rstrip("."), address, port)


def _port(text: str, value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ConfigError(f"--resolve {text!r}: {value!r} is not a port")
    return int(value)


class Resolver:
    """Resolves names for probes: pins first, then the system resolver."""

    def __init__(self, pins: Iterable[Pin] | Mapping[str, str] = ()) -> None:
        if isinstance(pins, Mapping):
            pins = [Pin(name, address) for name, address in pins.items()]
        self._pins = {pin.name.lower().rstrip("."): pin for pin in pins}

    def pin_for(self, name: str) -> Pin | None:
        return self._pins.get(name.lower().rstrip("."))

    def resolve(self, name: str, port: int, timeout: float) -> Resolved:
        started = time.perf_counter()
        pin = self.pin_for(name)
        if pin is not None:
            return Resolved(pin.address, time.perf_counter() - started, True)
        try:
            ipaddress.ip_address(name)
            return Resolved(name, 0.0, False)
        except ValueError:
            pass
        future = _POOL.submit(socket.getaddrinfo, name, port, type=socket.SOCK_STREAM)
        try:
            infos = future.result(timeout=max(timeout, 0.001))
        except concurrent.futures.TimeoutError as exc:
            raise DnsFailure(name, f"no answer within {timeout:.1f} s") from exc
        except socket.gaierror as exc:
            raise DnsFailure(name, exc.strerror or str(exc)) from exc
        except OSError as exc:
            raise DnsFailure(name, str(exc)) from exc
        if not infos:
            raise DnsFailure(name, "no address")
        # prefer IPv4 as Outlook on most networks ends up doing; keep the resolver's order otherwise
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        return Resolved(str(infos[0][4][0]), time.perf_counter() - started, False)
