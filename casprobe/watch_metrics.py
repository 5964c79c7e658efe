"""``casprobe watch --metrics HOST:PORT``: the watch's current state in the Prometheus text format (0.0.4).

Served by :class:`http.server.ThreadingHTTPServer` in a daemon thread on ``GET /metrics`` (and ``/``). Names follow
blackbox_exporter where they fit (``probe_success``, ``probe_duration_seconds``); per row (labels ``target`` = the
DNS name and ``probe``, both bounded by the configuration)::

    probe_success                    1 or 0 (last result)
    probe_duration_seconds           the last result's duration
    probe_phase_duration_seconds     {phase="resolve|connect|tls|processing|auth"} of its main request
    casprobe_probe_error             {class="…"} 1 for the last result's error class, 0 for the others (a state set
                                     over the closed ErrorClass enum, never message text)
    casprobe_outages_total           outages opened since the watch started (counter)
    casprobe_outage_open             1 while an outage is open
    casprobe_slots_skipped_total     slots skipped because the previous run was still going (counter)

and ``casprobe_tls_verification_enabled``. Rows without a result yet export only the counters. The address is
the administrator's choice (any interface may be wanted); the tests use 127.0.0.1.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from casprobe.errors import ConfigError
from casprobe.exporters.prometheus import PHASES
from casprobe.model import ErrorClass
from casprobe.watch_view import Board, RowView

__all__ = ["CONTENT_TYPE", "MetricsServer", "parse_address", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_FAMILIES = (
    ("probe_success", "gauge", "Whether the last probe succeeded (1) or not (0)."),
    ("probe_duration_seconds", "gauge", "How long the last probe took, in seconds."),
    ("probe_phase_duration_seconds", "gauge", "Duration of each phase of the last probe's main request, seconds."),
    ("casprobe_probe_error", "gauge", "Why the last probe failed: 1 for its error class, 0 for the others."),
    ("casprobe_outages_total", "counter", "Outages (first failure to first success) opened since the start."),
    ("casprobe_outage_open", "gauge", "Whether an outage is open now (1) or not (0)."),
    ("casprobe_slots_skipped_total", "counter", "Slots skipped because the previous run was still going."),
    ("casprobe_tls_verification_enabled", "gauge", "Whether server certificates are verified (0 with --insecure)."),
)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) → (host, port); ConfigError when it is not one."""
    host, sep, port = text.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--metrics wants HOST:PORT (e.g. 127.0.0.1:9464), not {text!r}")
    return host, int(port)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def _number(value: float) -> str:
    number = round(float(value), 6)
    return str(int(number)) if number.is_integer() else repr(number)


def _samples(name: str, row: RowView) -> list[str]:
    base = {"target": row.target.name, "probe": row.probe}
    last = row.last
    if name == "casprobe_outages_total":
        return [f"{name}{_labels(**base)} {row.outages}"]
    if name == "casprobe_outage_open":
        return [f"{name}{_labels(**base)} {int(row.open_since is not None)}"]
    if name == "casprobe_slots_skipped_total":
        return [f"{name}{_labels(**base)} {row.skipped}"]
    if last is None:
        return []
    if name == "probe_success":
        return [f"{name}{_labels(**base)} {int(last.success)}"]
    if name == "probe_duration_seconds":
        return [f"{name}{_labels(**base)} {_number(last.duration)}"]
    if name == "probe_phase_duration_seconds":
        lines = []
        for phase, attribute in PHASES:
            value = getattr(last.phases, attribute)
            if value is not None:
                lines.append(f"{name}{_labels(**base, phase=phase)} {_number(value)}")
        if last.phases.auth:
            lines.append(f"{name}{_labels(**base, phase='auth')} {_number(sum(last.phases.auth))}")
        return lines
    if name == "casprobe_probe_error":
        return [
            f"{name}{_labels(**base, **{'class': error_class.value})} {int(last.error_class is error_class)}"
            for error_class in ErrorClass
        ]
    return []


def render(rows: list[RowView], *, tls_verification: bool) -> str:
    """The exposition text for ``rows``."""
    lines: list[str] = []
    for name, kind, text in _FAMILIES:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        if name == "casprobe_tls_verification_enabled":
            lines.append(f"{name} {int(tls_verification)}")
            continue
        for row in rows:
            lines.extend(_samples(name, row))
    return "\n".join(lines) + "\n"


class MetricsServer:
    """``/metrics`` of a board, on ``address``, until :meth:`stop`."""

    def __init__(self, board: Board, address: tuple[str, int], *, tls_verification: bool) -> None:
        self.board, self.tls_verification = board, tls_verification
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = render(outer.board.snapshot(), tls_verification=outer.tls_verification).encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Scrapes are not logged."""

        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        server_class = type("MetricsHTTPServer", (ThreadingHTTPServer,), {"address_family": family})
        try:
            self._server: ThreadingHTTPServer = server_class(address, Handler)
        except OSError as exc:
            raise ConfigError(
                f"--metrics: cannot listen on {address[0]}:{address[1]} ({exc.strerror or exc})"
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="casprobe-metrics", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
