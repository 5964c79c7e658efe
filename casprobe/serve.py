"""``casprobe serve``: a blackbox_exporter-style prober that Prometheus scrapes (issue 7).

Routes (blackbox_exporter's ``main.go`` and ``prober/handler.go``)::

    GET  /probe?module=M&target=NAME[&debug=true]   run module M's probes against NAME, answer metrics
                                                     (casprobe.serve_metrics) or, with debug=true, the trace
    GET  /metrics                                    the process itself
    GET  /                                           status page: recent scrapes and their traces
    GET  /-/healthy                                  200 while serving
    POST /-/reload                                   reload the configuration (as SIGHUP does)

**Deadline.** As blackbox's ``getTimeout``: ``X-Prometheus-Scrape-Timeout-Seconds`` minus ``timeout_offset``,
capped by the module's ``timeout``; 120 s before the cap when the header is absent. One difference: when the
offset would leave nothing (header ≤ offset), the header itself is the budget, where blackbox falls back to the
module's timeout and so answers after Prometheus gave up. The probes run under :func:`casprobe.runner.run_round`,
whose deadline machinery turns a probe still running at the deadline into a ``timeout`` result; part of the
budget (≤ 1 s, at most a fifth) is kept as the runner's grace so that the answer leaves before Prometheus stops
waiting.

**Bounded work.** At most ``max_concurrency`` probes run at once, all scrapes together (a scrape of a module with
k probes takes k slots). A scrape waits for slots at most half its budget (so a probe that starts still has at
least half), and at most ``4 × max_concurrency`` scrapes wait at once; otherwise it is answered at once with
every probe failed as ``timeout`` and counted in ``casprobe_serve_rejected_scrapes_total``. The HTTP server reads
each request with a 30 s socket timeout.

**Reload.** SIGHUP or ``POST /-/reload`` reads the file again; a configuration that does not load is refused
(logged, counted, ``casprobe_serve_config_last_reload_successful`` 0) and the running one stays.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from casprobe import __version__
from casprobe.errors import CasprobeError, ConfigError
from casprobe.model import ErrorClass
from casprobe.probes import ProbeSettings
from casprobe.runner import GRACE_S, failed_result, run_round
from casprobe.serve_config import ServeConfig, ServeModule, load_serve_config
from casprobe.serve_metrics import CONTENT_TYPE, Scrape, ServeCounters, render_process, render_scrape
from casprobe.serve_status import debug_text, status_page

__all__ = ["DEFAULT_LISTEN", "HISTORY", "BadRequest", "ProbeServer", "Slots", "scrape_timeout", "serve"]

_log = logging.getLogger(__name__)

DEFAULT_LISTEN = ("127.0.0.1", 9815)
#: Scrapes kept for the status page (blackbox_exporter's ``--history.limit`` default is 100).
HISTORY = 100
#: Scrape timeout assumed when Prometheus sends no header (blackbox_exporter's).
DEFAULT_SCRAPE_TIMEOUT_S = 120.0
_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"


class BadRequest(ValueError):
    """A /probe query the server refuses with HTTP 400; ``reason`` is one of BAD_REQUEST_REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def scrape_timeout(header: str | None, module_timeout: float, offset: float) -> float:
    """The budget of one scrape, in seconds (see the module docstring); BadRequest for a header that is no number."""
    budget = DEFAULT_SCRAPE_TIMEOUT_S
    if header is not None and header.strip():
        try:
            budget = float(header)
        except ValueError:
            raise BadRequest("bad_timeout_header", f"{_HEADER}: {header[:40]!r} is not a number") from None
        if not math.isfinite(budget) or budget <= 0:
            raise BadRequest("bad_timeout_header", f"{_HEADER}: {header[:40]!r} is not a positive number")
    if budget > offset:
        budget -= offset
    return min(budget, module_timeout)


def with_timeout(settings: ProbeSettings, timeout_s: float) -> ProbeSettings:
    """``settings`` with a scrape's own deadline (and each network operation capped by it)."""
    transport = replace(settings.transport, timeout_s=max(0.05, min(settings.transport.timeout_s, timeout_s)))
    return replace(settings, timeout_s=timeout_s, transport=transport)


class Slots:
    """A counting limit on probes at once, whose size can change (reload) while slots are held."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self.waiting = 0
        self._cond = threading.Condition()

    def resize(self, size: int) -> None:
        with self._cond:
            self.size = size
            self._cond.notify_all()

    def acquire(self, count: int, timeout: float, *, max_waiting: int) -> bool:
        """Take ``count`` slots within ``timeout`` seconds; False when they did not come free (or too many wait)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if self.used + count <= self.size:
                self.used += count
                return True
            if self.waiting >= max_waiting:
                return False
            self.waiting += 1
            try:
                while self.used + count > self.size:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                self.used += count
                return True
            finally:
                self.waiting -= 1

    def release(self, count: int) -> None:
        with self._cond:
            self.used -= count
            self._cond.notify_all()


class ProbeServer:
    """The prober: its configuration (reloadable), its limits, its figures and its recent scrapes."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.config: ServeConfig = load_serve_config(config_path)  # a bad file at start is the caller's error
        self.slots = Slots(self.config.max_concurrency)
        self.history: collections.deque[Scrape] = collections.deque(maxlen=HISTORY)
        self._lock = threading.Lock()
        self._scrapes: collections.Counter[tuple[str, str]] = collections.Counter()
        self._bad: collections.Counter[str] = collections.Counter()
        self._reloads: collections.Counter[str] = collections.Counter()
        self._rejected = 0
        self._reload_ok = True
        self._reload_success_at = time.time()
        self.started_at = time.time()

    # -- configuration ---------------------------------------------------------------------------------------

    def reload(self) -> str | None:
        """Load the file again; None when the new configuration is in force, else why it was refused."""
        try:
            config = load_serve_config(self.config_path)
        except CasprobeError as exc:
            _log.error("configuration reload refused, the running one stays: %s", exc)
            with self._lock:
                self._reloads["failure"] += 1
                self._reload_ok = False
            return str(exc)
        with self._lock:
            self.config = config
            self._reloads["success"] += 1
            self._reload_ok = True
            self._reload_success_at = time.time()
        self.slots.resize(config.max_concurrency)
        _log.info("configuration reloaded from %s: %d module(s)", self.config_path, len(config.modules))
        return None

    # -- probing ---------------------------------------------------------------------------------------------

    def resolve_query(self, query: str) -> tuple[ServeConfig, ServeModule, str, bool]:
        """(config, module, target name, debug) of a /probe query; BadRequest when it cannot be served."""
        params = parse_qs(query, keep_blank_values=True, max_num_fields=20)
        config = self.config

        def one(name: str) -> str | None:
            values = params.get(name, [])
            if len(values) > 1:
                raise BadRequest("bad_parameter", f"parameter {name!r} given {len(values)} times")
            return values[0] if values else None

        module_name, target, debug = one("module"), one("target"), one("debug")
        if not module_name:
            raise BadRequest("unknown_module", "missing parameter 'module'")
        module = config.modules.get(module_name)
        if module is None:
            known = ", ".join(sorted(config.modules))
            raise BadRequest("unknown_module", f"unknown module {module_name[:80]!r} (modules: {known})")
        if not target:
            raise BadRequest("missing_target", "missing parameter 'target'")
        if config.target(module, target) is None:
            raise BadRequest(
                "target_not_allowed",
                f"target {target[:80]!r} is not allowed for module {module_name!r} (the configuration lists "
                f"{', '.join(module.targets)})",
            )
        if debug not in (None, "true", "false"):
            raise BadRequest("bad_parameter", "debug must be true or false")
        return config, module, target, debug == "true"

    def probe(self, config: ServeConfig, module: ServeModule, name: str, header: str | None) -> Scrape:
        """Run ``module`` against ``name`` within the scrape's budget (see the module docstring)."""
        budget = scrape_timeout(header, module.settings.timeout_s, config.timeout_offset)
        target = config.target(module, name)
        assert target is not None  # resolve_query checked it
        started_at, t0 = time.time(), time.monotonic()
        count = len(module.probes)
        rejected = not self.slots.acquire(count, budget / 2, max_waiting=4 * config.max_concurrency)
        if rejected:
            detail = f"no probe slot came free within {budget / 2:.3g} s ({config.max_concurrency} probes at once)"
            results = tuple(failed_result(target, p, t0, ErrorClass.TIMEOUT, detail) for p in module.probes)
            deadline = budget
        else:
            try:
                remaining = budget - (time.monotonic() - t0)
                grace = min(GRACE_S, remaining / 5)
                deadline = remaining - grace
                settings = with_timeout(module.settings, deadline)
                results = tuple(run_round([target], module.probes, settings, config.resolver(), grace_s=grace))
            finally:
                self.slots.release(count)
        scrape = Scrape(
            module=module.name,
            target=target.name,
            started_at=started_at,
            duration=time.monotonic() - t0,
            timeout_s=deadline,
            results=results,
            rejected=rejected,
            backends=config.backends,
            tls_verification=not module.settings.transport.tls.insecure,
        )
        with self._lock:
            self._scrapes[(module.name, scrape.outcome)] += 1
            self._rejected += scrape.rejected
            self.history.append(scrape)
        return scrape

    def count_bad_request(self, reason: str) -> None:
        with self._lock:
            self._bad[reason] += 1

    def counters(self) -> ServeCounters:
        with self._lock:
            return ServeCounters(
                scrapes=tuple(self._scrapes.items()),
                rejected=self._rejected,
                bad_requests=tuple(self._bad.items()),
                in_flight=self.slots.used,
                waiting=self.slots.waiting,
                max_concurrency=self.slots.size,
                reload_ok=self._reload_ok,
                reload_success_at=self._reload_success_at,
                reloads=tuple(self._reloads.items()),
                modules=tuple(self.config.modules),
            )

    def status(self) -> str:
        with self._lock:
            scrapes, config, reload_ok = list(self.history), self.config, self._reload_ok
        facts = {
            "configuration": str(config.path),
            "last reload": "ok" if reload_ok else "REFUSED (the previous configuration is in force)",
            "max concurrency": str(config.max_concurrency),
            "timeout offset": f"{config.timeout_offset:g} s",
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started_at)),
        }
        return status_page(scrapes, {name: m.summary() for name, m in config.modules.items()}, facts)


def _handler(server: ProbeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 30
        server_version = f"casprobe/{__version__}"

        def _send(self, status: int, body: str, content_type: str = "text/plain; charset=utf-8") -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/probe":
                self._probe(url.query)
            elif url.path == "/metrics":
                self._send(200, render_process(server.counters()), CONTENT_TYPE)
            elif url.path == "/":
                self._send(200, server.status(), "text/html; charset=utf-8")
            elif url.path == "/-/healthy":
                self._send(200, "Healthy\n")
            elif url.path == "/-/reload":
                self._send(405, "use POST /-/reload\n")
            else:
                self._send(404, f"not found: {url.path[:100]} (try /, /metrics, /probe)\n")

        do_HEAD = do_GET

        def do_POST(self) -> None:
            if urlsplit(self.path).path != "/-/reload":
                self._send(404 if urlsplit(self.path).path not in ("/probe", "/metrics", "/") else 405, "not here\n")
                return
            problem = server.reload()
            if problem is None:
                self._send(200, "configuration reloaded\n")
            else:
                self._send(500, f"configuration refused, the previous one stays: {problem}\n")

        def _probe(self, query: str) -> None:
            try:
                config, module, target, debug = server.resolve_query(query)
                scrape = server.probe(config, module, target, self.headers.get(_HEADER))
            except BadRequest as exc:
                server.count_bad_request(exc.reason)
                self._send(400, f"{exc}\n")
                return
            metrics = render_scrape(scrape)
            if debug:
                self._send(200, debug_text(scrape, metrics, module.summary()))
            else:
                self._send(200, metrics, CONTENT_TYPE)

        def log_message(self, format: str, *args: object) -> None:
            _log.debug("%s %s", self.address_string(), format % args)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def serve(
    config_path: Path, address: tuple[str, int], *, on_ready: Callable[[str, int, ProbeServer], None] | None = None
) -> None:
    """Serve until SIGTERM or SIGINT (call from the main thread); SIGHUP reloads. ``on_ready`` gets the address
    actually bound (port 0 picks a free one). ConfigError for a bad configuration file or address."""
    prober = ProbeServer(config_path)
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    server_class = type("ProbeHTTPServer", (_Server,), {"address_family": family})
    try:
        httpd: ThreadingHTTPServer = server_class(address, _handler(prober))
    except OSError as exc:
        raise ConfigError(f"--listen: cannot listen on {address[0]}:{address[1]} ({exc.strerror or exc})") from None
    stop = threading.Event()

    def on_hup(signum: int, frame: object) -> None:
        threading.Thread(target=prober.reload, name="casprobe-reload", daemon=True).start()

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    thread = threading.Thread(target=httpd.serve_forever, name="casprobe-serve", daemon=True)
    thread.start()
    _log.info("listening on %s:%s", *httpd.server_address[:2])
    if on_ready is not None:
        on_ready(str(httpd.server_address[0]), int(httpd.server_address[1]), prober)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        httpd.shutdown()
        httpd.server_close()
        for sig, handler in previous.items():
            with contextlib.suppress(TypeError, ValueError):
                signal.signal(sig, handler)
        _log.info("casprobe serve stopped")
