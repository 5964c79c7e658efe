"""HAProxy configuration and runtime-API text for the lab's load-balanced Exchange namespace.

Pure text in and out (no sockets, no processes; :mod:`casprobe.lab.haproxy_runtime` does the I/O). Renders a
``haproxy.cfg`` for Debian's HAProxy 2.6 in one of two shapes of the Exchange load-balancing guidance
(protocols.md §4.4, docs ``load-balancing.md``), and parses the runtime API's ``show stat`` answer.

* ``l7`` (scenario B): TLS terminated on the namespace address, one backend per virtual directory routed on
  ``path_beg -i /<vdir>/``, each backend probing ``/<vdir>/healthcheck.htm`` (protocols.md §4.1) and
  re-encrypting to the servers (SSL bridging: OAuth audiences break if the LB offloads to plain HTTP).
* ``l4`` (scenario A): ``mode tcp`` passthrough, one backend; the single health probe is
  ``/<l4_check_vdir>/healthcheck.htm`` over ``check-ssl`` (``/mapi/`` by default: MAPI/HTTP is what Outlook
  needs, so a server whose MapiProxy is down leaves the pool as a whole).

HAProxy facts relied on (Debian 2.6 ``/usr/share/doc/haproxy/configuration.txt``): ``http-reuse`` (``safe`` is
the default; NTLM/Negotiate server connections are marked private and never shared), ``option
http-keep-alive`` (needed when the server authenticates the connection, i.e. NTLM; ``http-server-close`` would
close the authenticated server connection after each response), ``retries`` (the turn-around delay only
applies to a retry on the *same* server), ``option redispatch <interval>``, ``timeout client`` (applies while
the client is expected to send or acknowledge data, not while a request waits for its response).
"""

from __future__ import annotations

import csv
import ipaddress
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "DEFAULT_VDIRS",
    "HAPROXY_BIN",
    "L4_BACKEND",
    "LONG_POLL_VDIRS",
    "UNKNOWN",
    "HaproxyConfigError",
    "HaproxyError",
    "HaproxyStartError",
    "LbBackendServer",
    "LbSettings",
    "RuntimeApiError",
    "ServerState",
    "backend_name",
    "backend_names",
    "check_config",
    "parse_show_stat",
    "render_config",
    "write_config",
]

HAPROXY_BIN = Path("/usr/sbin/haproxy")

DEFAULT_VDIRS: tuple[str, ...] = (
    "autodiscover",
    "ews",
    "mapi",
    "owa",
    "oab",
    "rpc",
    "Microsoft-Server-ActiveSync",
)

#: Virtual directories that hold requests open: MAPI/HTTP NotificationWait returns after up to 5 minutes
#: without events (protocols.md §2.9, OXCMAPIHTTP §3.2.5.5); RPC over HTTP keeps RPC_IN/OUT_DATA channels open.
LONG_POLL_VDIRS = frozenset({"mapi", "rpc"})

#: The single backend of the ``l4`` shape.
L4_BACKEND = "be_exchange"

#: ``old`` of the first state reported for each server, and the state of an unrecognised status.
UNKNOWN = "UNKNOWN"

_FRONTEND = "fe_exchange"
_DEFAULT_L7_VDIR = "owa"  # IIS answers "/" with a redirect to /owa/; unknown paths go to the OWA pool
_HTTP_REQUEST_TIMEOUT_MS = 30_000  # time to receive a complete request head (slowloris guard)
_HTTP_KEEP_ALIVE_TIMEOUT_MS = 120_000  # idle client connection between requests (IIS connectionTimeout 120 s)

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_VDIR_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,62}")
_HOST_RE = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_TIMEOUT_FIELDS = ("timeout_connect_ms", "timeout_client_ms", "timeout_server_ms", "timeout_long_poll_ms")
_UNSAFE_PATH_CHARS = re.compile(r"[\s#\"'\\]")


class HaproxyError(Exception):
    """Base class of every error raised by the lab's HAProxy driver."""


class HaproxyConfigError(HaproxyError, ValueError):
    """The settings cannot make a valid configuration, or ``haproxy -c`` rejected it."""


class HaproxyStartError(HaproxyError):
    """HAProxy did not come up (exited at once, bind failure, or the stats socket never answered)."""


class RuntimeApiError(HaproxyError):
    """The stats socket could not be reached, or HAProxy rejected or garbled a runtime command."""


@dataclass(frozen=True, slots=True)
class LbBackendServer:
    """One simulated Exchange server behind the load balancer."""

    name: str  # "mb1": the HAProxy server name and the runtime-API key
    fqdn: str  # "mb1.lab.test": SNI and certificate name checked when re-encrypting
    address: str  # loopback address, e.g. "127.0.0.11"
    port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LbSettings:
    """How the namespace is load balanced (all durations in milliseconds)."""

    mode: Literal["l7", "l4"]
    bind_address: str
    port: int
    ca_file: Path  # CA that signed the servers' certificates (HAProxy verifies them)
    lb_pem: Path  # key + certificate chain presented on the namespace in ``l7``
    run_dir: Path  # haproxy.cfg, haproxy.sock and haproxy.log go here
    namespace_host: str = "outlook.lab.test"
    vdirs: tuple[str, ...] = DEFAULT_VDIRS
    l4_check_vdir: str = "mapi"  # the one probe of the ``l4`` shape (scenario A)
    inter_ms: int = 1000
    fall: int = 2
    rise: int = 2
    timeout_connect_ms: int = 2_000
    timeout_client_ms: int = 360_000
    timeout_server_ms: int = 120_000  # ordinary vdirs (EWS, OWA, Autodiscover, OAB, ActiveSync)
    timeout_long_poll_ms: int = 360_000  # LONG_POLL_VDIRS, and both sides in ``l4`` (6 min > 5 min hold)
    retries: int = 3


@dataclass(frozen=True, slots=True)
class ServerState:
    """One server of one backend as ``show stat`` reports it."""

    backend: str
    server: str
    state: str  # UP, DOWN, MAINT or DRAIN (see :func:`parse_show_stat`)
    status: str  # raw status column, e.g. "UP", "DOWN 1/2", "MAINT (via be_x/mb1)"
    check_status: str  # e.g. "L7OK", "L7STS", "L4CON", "" when not checked yet
    check_code: int | None  # HTTP status of the last check, if any
    check_info: str  # e.g. "Layer7 wrong status", "Connection refused"
    last_change_s: int  # seconds since the last transition


def backend_name(vdir: str) -> str:
    """Return the ``l7`` backend serving ``/<vdir>/``: ``be_mapi``, ``be_microsoft_server_activesync``."""
    return "be_" + re.sub(r"[^a-z0-9]+", "_", vdir.lower())


def backend_names(settings: LbSettings) -> tuple[str, ...]:
    """Return every backend the rendered configuration defines, in configuration order."""
    if settings.mode == "l4":
        return (L4_BACKEND,)
    return tuple(backend_name(v) for v in settings.vdirs)


def _fail(message: str) -> HaproxyConfigError:
    return HaproxyConfigError(message)


def _check_path(label: str, path: Path) -> None:
    if _UNSAFE_PATH_CHARS.search(str(path)):
        raise _fail(f"{label} path must not contain whitespace, quotes, '#' or backslashes: {str(path)!r}")


def _check_loopback(label: str, address: str) -> None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise _fail(f"{label} must be an IP address, got {address!r}") from None
    if not ip.is_loopback:
        raise _fail(f"{label} must be a loopback address (the lab never leaves 127.0.0.0/8), got {address}")


def _validate(settings: LbSettings, servers: Sequence[LbBackendServer]) -> None:
    if settings.mode not in ("l7", "l4"):
        raise _fail(f"mode must be 'l7' or 'l4', got {settings.mode!r}")
    _check_loopback("bind_address", settings.bind_address)
    if not _HOST_RE.fullmatch(settings.namespace_host):
        raise _fail(f"namespace_host is not a host name: {settings.namespace_host!r}")
    for label, path in (("ca_file", settings.ca_file), ("lb_pem", settings.lb_pem), ("run_dir", settings.run_dir)):
        _check_path(label, path)
    if not settings.vdirs:
        raise _fail("vdirs must not be empty")
    for vdir in (*settings.vdirs, settings.l4_check_vdir):
        if not _VDIR_RE.fullmatch(vdir):
            raise _fail(f"a vdir is a bare name like 'mapi' (no slashes), got {vdir!r}")
    if len({backend_name(v) for v in settings.vdirs}) != len(settings.vdirs):
        raise _fail(f"vdirs collide once lower-cased: {settings.vdirs!r}")
    numbers = {"port": settings.port, "inter_ms": settings.inter_ms, "fall": settings.fall, "rise": settings.rise}
    numbers.update({k: getattr(settings, k) for k in _TIMEOUT_FIELDS})
    for label, value in numbers.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _fail(f"{label} must be a positive integer, got {value!r}")
    if settings.port > 65535 or isinstance(settings.retries, bool) or not 0 <= settings.retries <= 100:
        raise _fail(f"port ({settings.port}) or retries ({settings.retries!r}) out of range")
    if not servers:
        raise _fail("at least one backend server is needed")
    seen: set[str] = set()
    for srv in servers:
        if not _NAME_RE.fullmatch(srv.name):
            raise _fail(f"server name must match {_NAME_RE.pattern}, got {srv.name!r}")
        if srv.name in seen:
            raise _fail(f"duplicate server name {srv.name!r}")
        seen.add(srv.name)
        if not _HOST_RE.fullmatch(srv.fqdn):
            raise _fail(f"server {srv.name}: fqdn is not a host name: {srv.fqdn!r}")
        _check_loopback(f"server {srv.name} address", srv.address)
        if isinstance(srv.port, bool) or not 1 <= srv.port <= 65535:
            raise _fail(f"server {srv.name}: port out of range: {srv.port!r}")


def _httpchk(vdir: str, host: str) -> list[str]:
    return [
        "    option httpchk",
        f"    http-check send meth GET uri /{vdir}/healthcheck.htm ver HTTP/1.1 hdr Host {host}",
        "    http-check expect status 200",
    ]


def _global(settings: LbSettings) -> list[str]:
    return [
        "global",
        # "iso" = the raw message prefixed with HAProxy's own ISO-8601 timestamp (microseconds): the state
        # watcher dates server transitions with it instead of with its polling tick.
        "    log stdout format iso local0 info",
        f"    stats socket {settings.run_dir / 'haproxy.sock'} mode 600 level admin",
        # One thread: ~10k TLS-bridged req/s measured on this class of machine, far above the lab's needs, and
        # it leaves the second core to the Python lab; checks and log lines stay strictly ordered.
        "    nbthread 1",
        # A second HAProxy (or a stale one) on the same address must fail to bind, not silently share the port.
        "    noreuseport",
        "    ssl-default-bind-options ssl-min-ver TLSv1.2",
        "    ssl-default-server-options ssl-min-ver TLSv1.2",
        "",
    ]


def _defaults(settings: LbSettings) -> list[str]:
    s = settings
    l7 = s.mode == "l7"
    # In tcp mode there is no request to wait for: both inactivity timeouts must outlast a held MAPI request.
    client_ms = s.timeout_client_ms if l7 else max(s.timeout_client_ms, s.timeout_long_poll_ms)
    lines = [
        "defaults",
        f"    mode {'http' if l7 else 'tcp'}",
        "    log global",
        f"    option {'httplog' if l7 else 'tcplog'}",
        "    option dontlog-normal",  # per-request lines only for errors, retries and redispatches
        f"    timeout connect {s.timeout_connect_ms}ms",
        f"    timeout client {client_ms}ms",
        f"    timeout server {s.timeout_server_ms}ms",
        f"    retries {s.retries}",
        "    option redispatch 1",  # every retry goes to another server, without the 1 s same-server pause
    ]
    if l7:
        lines += [
            f"    timeout http-request {_HTTP_REQUEST_TIMEOUT_MS}ms",
            f"    timeout http-keep-alive {_HTTP_KEEP_ALIVE_TIMEOUT_MS}ms",
            # NTLM/Negotiate authenticate the TCP connection: keep-alive on both sides, and never share a
            # server connection between clients ("safe" is the default; NTLM-challenged ones become private).
            "    option http-keep-alive",
            "    http-reuse safe",
        ]
    return [*lines, ""]


def _server_line(settings: LbSettings, srv: LbBackendServer) -> str:
    s = settings
    timing = f"check inter {s.inter_ms}ms fall {s.fall} rise {s.rise}"
    if s.mode == "l7":
        tls = f"ssl verify required ca-file {s.ca_file} sni str({srv.fqdn}) check-sni {srv.fqdn}"
    else:
        tls = f"check-ssl verify required ca-file {s.ca_file} check-sni {srv.fqdn}"
    return f"    server {srv.name} {srv.address}:{srv.port} {tls} {timing}"


def _l7(settings: LbSettings, servers: Sequence[LbBackendServer]) -> list[str]:
    s = settings
    default_vdir = next((v for v in s.vdirs if v.lower() == _DEFAULT_L7_VDIR), s.vdirs[0])
    lines = [
        f"frontend {_FRONTEND}",
        f"    bind {s.bind_address}:{s.port} ssl crt {s.lb_pem} alpn http/1.1",
    ]
    for vdir in s.vdirs:
        acl = "p_" + backend_name(vdir)[3:]
        lines += [
            f"    acl {acl} path_beg -i /{vdir.lower()}/",
            f"    acl {acl} path -i /{vdir.lower()}",
            f"    use_backend {backend_name(vdir)} if {acl}",
        ]
    lines += [f"    default_backend {backend_name(default_vdir)}", ""]
    for vdir in s.vdirs:
        long_poll = vdir.lower() in LONG_POLL_VDIRS
        server_ms = max(s.timeout_server_ms, s.timeout_long_poll_ms) if long_poll else s.timeout_server_ms
        lines += [f"backend {backend_name(vdir)}", "    balance roundrobin", *_httpchk(vdir, s.namespace_host)]
        lines += [f"    timeout server {server_ms}ms", *(_server_line(s, srv) for srv in servers), ""]
    return lines


def _l4(settings: LbSettings, servers: Sequence[LbBackendServer]) -> list[str]:
    s = settings
    return [
        f"frontend {_FRONTEND}",
        f"    bind {s.bind_address}:{s.port}",
        f"    default_backend {L4_BACKEND}",
        "",
        f"backend {L4_BACKEND}",
        "    balance roundrobin",
        *_httpchk(s.l4_check_vdir, s.namespace_host),
        f"    timeout server {max(s.timeout_server_ms, s.timeout_long_poll_ms)}ms",
        *(_server_line(s, srv) for srv in servers),
        "",
    ]


def render_config(settings: LbSettings, servers: Sequence[LbBackendServer]) -> str:
    """Return the haproxy.cfg text for ``settings`` and ``servers``; raise HaproxyConfigError on bad input."""
    _validate(settings, servers)
    body = _l7(settings, servers) if settings.mode == "l7" else _l4(settings, servers)
    header = [f"# casprobe lab load balancer ({settings.mode}); generated, do not edit", ""]
    return "\n".join([*header, *_global(settings), *_defaults(settings), *body])


def write_config(settings: LbSettings, servers: Sequence[LbBackendServer]) -> Path:
    """Render the configuration into ``<run_dir>/haproxy.cfg`` (creating run_dir) and return its path."""
    text = render_config(settings, servers)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    path = settings.run_dir / "haproxy.cfg"
    path.write_text(text, encoding="utf-8")
    return path


def check_config(cfg_path: Path, *, binary: Path = HAPROXY_BIN, timeout_s: float = 20.0) -> None:
    """Validate ``cfg_path`` with ``haproxy -c -f``; raise HaproxyConfigError carrying HAProxy's messages."""
    try:
        done = subprocess.run(
            [str(binary), "-c", "-f", str(cfg_path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HaproxyConfigError(f"cannot run {binary} -c: {exc}") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode("utf-8", "replace").strip()
        raise HaproxyConfigError(f"haproxy rejected {cfg_path} (exit {done.returncode}):\n{output[:4000]}")


def _normal_state(status: str) -> str:
    """Map the ``show stat`` status column onto UP/DOWN/MAINT/DRAIN (MAINT > DOWN > DRAIN > UP, as HAProxy)."""
    head = status.split(" ", 1)[0].upper()
    if head == "MAINT":
        return "MAINT"
    if head.startswith("DOWN"):  # "DOWN", "DOWN 1/2" (going up), "DOWN (agent)"
        return "DOWN"
    if head in ("DRAIN", "NOLB"):  # NOLB: up but takes no new traffic, like drain
        return "DRAIN"
    if head == "UP" or status.lower() == "no check":
        return "UP"
    return UNKNOWN


def parse_show_stat(text: str) -> dict[tuple[str, str], ServerState]:
    """Parse ``show stat`` CSV into server states, skipping FRONTEND/BACKEND rows; raise RuntimeApiError."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise RuntimeApiError(f"unexpected 'show stat' answer: {text[:200]!r}")
    rows = csv.reader(line for line in lines if line.strip())
    header = [h.strip() for h in next(rows)]
    header[0] = header[0].removeprefix("# ")
    try:
        col = {name: header.index(name) for name in ("pxname", "svname", "status", "check_status", "lastchg")}
    except ValueError as exc:
        raise RuntimeApiError(f"'show stat' header lacks a column: {exc}") from None
    optional = {name: header.index(name) if name in header else -1 for name in ("check_code", "last_chk")}
    states: dict[tuple[str, str], ServerState] = {}
    for row in rows:
        if len(row) < len(header) - 1:
            raise RuntimeApiError(f"short 'show stat' row: {row[:3]!r}")
        backend, server = row[col["pxname"]], row[col["svname"]]
        if server in ("FRONTEND", "BACKEND"):
            continue
        status = row[col["status"]]
        code, info = (row[optional[n]] if optional[n] >= 0 else "" for n in ("check_code", "last_chk"))
        states[(backend, server)] = ServerState(
            backend=backend,
            server=server,
            state=_normal_state(status),
            status=status,
            check_status=row[col["check_status"]].lstrip("* "),
            check_code=int(code) if code.isdigit() else None,
            check_info=info,
            last_change_s=int(row[col["lastchg"]]) if row[col["lastchg"]].isdigit() else 0,
        )
    return states
