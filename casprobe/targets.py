"""What a check probes and with what: targets, server discovery, and the plan merged from profile and options.

Targets are the load-balanced namespace and each server name. Options override the profile key by key
(:func:`build_plan`); a password comes from ``--password-env``/``--password-file`` (or the profile's
``password_env``/``password_file``), else from a prompt when standard input is a terminal, never from a plain
argument.

Server discovery asks ``/<vdir>/healthcheck.htm`` through the namespace again and again, each time on a new
connection, so that the load balancer spreads the requests: Exchange's page body is ``200 OK<br/><server FQDN>``
(protocols.md §4.1) and every answer carries ``X-FEServer`` (the answering server's short name). Both the
number of requests and the time spent are bounded; a server the balancer never picks (drained, down, unlucky)
is not found, so the result says how many requests were made and which X-FEServer names came without an FQDN.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from casprobe.config import DEFAULT_TIMEOUT_S, Profile, lab_profile_path, load_profile
from casprobe.errors import ConfigError, CredentialError
from casprobe.model import Target, TargetKind
from casprobe.net.credentials import BearerToken, Credentials
from casprobe.net.resolve import Pin, Resolver, parse_pin
from casprobe.net.tls import TlsOptions
from casprobe.net.transport import ProbeClient, TransportOptions, classify
from casprobe.probes import PROBE_NAMES, ProbeSettings
from casprobe.probes.base import AuthChoice

__all__ = [
    "DISCOVERY_VDIRS",
    "NEEDS_MAILBOX",
    "CheckOptions",
    "CheckPlan",
    "Discovery",
    "build_plan",
    "build_targets",
    "discover_servers",
    "server_label",
]

_T = TypeVar("_T")

#: Probes that act as a mailbox user: they need a mailbox address and credentials (or a bearer token).
NEEDS_MAILBOX = frozenset({"autodiscover", "mapi", "ews"})

_log = logging.getLogger(__name__)

#: The health pages asked in turn during discovery (an L7 balancer has one backend, one rotation, per vdir).
DISCOVERY_VDIRS = ("mapi", "ews", "autodiscover", "owa", "oab", "ecp", "rpc", "Microsoft-Server-ActiveSync")
_BODY = re.compile(rb"^\s*200 OK<br\s*/?>\s*([A-Za-z0-9.-]+)", re.IGNORECASE)


def server_label(name: str, names: Iterable[str]) -> str:
    """How reports call a server: its first label (``mb1``) when no other server shares it, else the full name."""
    short = name.split(".", 1)[0]
    clashes = [other for other in names if other != name and other.split(".", 1)[0] == short]
    return name if clashes else short


def build_targets(
    namespace: str | None, servers: Iterable[str], *, port: int = 443, pins: Iterable[Pin] = ()
) -> tuple[Target, ...]:
    """The namespace (labelled ``namespace``) first, then each server once, in the order given."""
    addresses = {pin.name: pin.address for pin in pins}
    unique = list(dict.fromkeys(name.lower().rstrip(".") for name in servers))
    targets: list[Target] = []
    if namespace is not None:
        name = namespace.lower().rstrip(".")
        targets.append(Target(name, TargetKind.NAMESPACE, port, addresses.get(name), "namespace"))
        unique = [server for server in unique if server != name]
    for server in unique:
        targets.append(Target(server, TargetKind.SERVER, port, addresses.get(server), server_label(server, unique)))
    return tuple(targets)


@dataclass(frozen=True, slots=True)
class Discovery:
    """What server discovery found.

    Attributes:
        servers: server FQDNs from the health page bodies, in the order first seen.
        requests: how many requests were sent. failures: how many of them failed or were not a healthy page.
        fe_only: X-FEServer names whose FQDN never appeared in a body (they cannot be probed by name).
        detail: one line for a person.
    """

    servers: tuple[str, ...]
    requests: int
    failures: int
    fe_only: tuple[str, ...]
    detail: str


def discover_servers(
    namespace: str,
    *,
    port: int,
    resolver: Resolver,
    options: TransportOptions,
    max_requests: int = 40,
    max_seconds: float = 10.0,
    settle_after: int = 12,
) -> Discovery:
    """Learn server FQDNs through ``namespace`` (see the module docstring).

    Stops after ``max_requests`` requests, ``max_seconds`` seconds, or ``settle_after`` requests in a row that
    taught nothing new. Each request has a fresh connection. Never raises for what the network does.
    """
    target = Target(namespace, TargetKind.NAMESPACE, port)
    deadline = time.monotonic() + max_seconds
    found: dict[str, None] = {}
    fe_names: dict[str, None] = {}
    requests = failures = quiet = 0
    last_error = ""
    while requests < max_requests and quiet < settle_after and time.monotonic() < deadline:
        vdir = DISCOVERY_VDIRS[requests % len(DISCOVERY_VDIRS)]
        requests += 1
        quiet += 1
        try:
            with ProbeClient(target, resolver=resolver, options=options, deadline=deadline) as client:
                exchange = client.request("GET", f"/{vdir}/healthcheck.htm", max_body=4096)
        except Exception as exc:
            failures += 1
            last_error = classify(exc)[1]
            continue
        match = _BODY.match(exchange.body)
        if exchange.fe_server and exchange.fe_server.lower() not in fe_names:
            fe_names[exchange.fe_server.lower()] = None
        if exchange.status != 200 or match is None:
            failures += 1
            last_error = f"/{vdir}/healthcheck.htm answered HTTP {exchange.status}"
            continue
        fqdn = match.group(1).decode("ascii").lower().rstrip(".")
        if fqdn not in found:
            found[fqdn] = None
            quiet = 0
    shorts = {name.split(".", 1)[0] for name in found}
    fe_only = tuple(name for name in fe_names if name not in shorts and name not in found)
    detail = f"{len(found)} server(s) found in {requests} request(s) through {namespace}"
    if failures:
        detail += f"; {failures} failed (last: {last_error})"
    if fe_only:
        detail += f"; X-FEServer without an FQDN: {', '.join(fe_only)}"
    _log.info("server discovery: %s", detail)
    return Discovery(tuple(found), requests, failures, fe_only, detail)


# -- the plan of a check: profile + command-line options -> targets and settings ---------------------------------


@dataclass(frozen=True, slots=True)
class CheckOptions:
    """What the command line said; None (or empty) means it did not say, and the profile (if any) decides.

    Attributes:
        lab: load ``<lab_dir or the default lab folder>/profile.toml``. profile: load this profile instead.
        resolve: ``NAME:ADDR[:PORT]`` pins as typed. probes: probe names (empty: the profile's or the defaults).
        the others: as the options of ``casprobe check`` of the same name.
    """

    namespace: str | None = None
    servers: tuple[str, ...] = ()
    lab: bool = False
    lab_dir: Path | None = None
    profile: Path | None = None
    discover_servers: bool = False
    resolve: tuple[str, ...] = ()
    port: int | None = None
    mailbox: str | None = None
    user: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    bearer_env: str | None = None
    bearer_file: Path | None = None
    auth: AuthChoice | None = None
    channel_binding: bool | None = None
    ca_file: Path | None = None
    insecure: bool = False
    timeout: float | None = None
    probes: tuple[str, ...] = ()
    notification_wait: float | None = None
    cert_warn_days: int | None = None


@dataclass(frozen=True, slots=True)
class CheckPlan:
    """Everything a check needs, merged and validated (no secret in clear: credentials hold a Secret).

    Attributes:
        namespace, servers, port, pins: what to probe and where the names lead.
        settings: the probes' settings. probes: which probes, in report order. discover: learn more servers.
        profile: the profile file read, if any. password_source: ``env``, ``file``, ``prompt`` or None.
        skipped: probes left out of the defaults, with the reason (shown to the user).
    """

    namespace: str | None
    servers: tuple[str, ...]
    port: int
    pins: tuple[Pin, ...]
    settings: ProbeSettings
    probes: tuple[str, ...]
    discover: bool = False
    profile: Path | None = None
    password_source: str | None = None
    skipped: str = ""

    def resolver(self) -> Resolver:
        return Resolver(self.pins)

    def targets(self, extra_servers: Iterable[str] = ()) -> tuple[Target, ...]:
        return build_targets(self.namespace, [*self.servers, *extra_servers], port=self.port, pins=self.pins)

    def settings_for(self, extra_servers: Iterable[str] = ()) -> ProbeSettings:
        """The probes' settings, told which names are the namespace and which are servers, so that Autodiscover
        can say whether the URLs it hands out name the load-balanced namespace or one server."""
        names = tuple(dict.fromkeys(n.lower().rstrip(".") for n in (*self.servers, *extra_servers)))
        return replace(self.settings, namespace=self.namespace, server_names=names)

    def summary(self) -> dict[str, object]:
        """The settings as plain data for outputs: references to secrets are described, never resolved."""
        s = self.settings
        tls = s.transport.tls
        return {
            "namespace": self.namespace,
            "servers": list(self.servers),
            "port": self.port,
            "resolve": {pin.name: pin.address for pin in self.pins},
            "profile": str(self.profile) if self.profile else None,
            "probes": list(self.probes),
            "mailbox": s.mailbox,
            "user": s.credentials.username if s.credentials else None,
            "password_source": self.password_source,
            "bearer_token": s.bearer is not None,
            "auth": s.auth,
            "channel_binding": s.channel_binding,
            "timeout_s": s.timeout_s,
            "mapi_notification_wait_s": s.mapi_notification_wait_s,
            "cert_warn_days": s.cert_warn_days,
            "tls_verification": not tls.insecure,
            "ca_file": str(tls.ca_file) if tls.ca_file else None,
        }


def _pick(option: _T | None, profiled: _T | None, default: _T) -> _T:
    return option if option is not None else profiled if profiled is not None else default


def _load(options: CheckOptions) -> Profile | None:
    if options.lab and options.profile is not None:
        raise ConfigError("--lab and --profile both name a profile: use one")
    if options.lab:
        try:
            return load_profile(lab_profile_path(options.lab_dir))
        except ConfigError as exc:
            if options.lab_dir is not None and not options.lab_dir.exists() and options.namespace is None:
                raise ConfigError(f"{exc} (--lab takes an optional folder: put NAMESPACE before --lab)") from None
            raise
    return load_profile(options.profile) if options.profile is not None else None


def _password(
    options: CheckOptions, profile: Profile | None, user: str | None, interactive: bool
) -> tuple[Credentials | None, str | None]:
    env, file = options.password_env, options.password_file
    if env is None and file is None and profile is not None:
        env, file = profile.password_env, profile.password_file
    if user is None:
        if options.password_env is not None or options.password_file is not None:
            raise ConfigError("a password source was given without --user")
        return None, None
    if env is not None:
        return Credentials.from_env(user, env), "env"
    if file is not None:
        return Credentials.from_file(user, file), "file"
    if not interactive:
        raise CredentialError(
            f"no password for {user}: use --password-env VAR or --password-file PATH "
            "(standard input is not a terminal, so casprobe cannot ask)"
        )
    return Credentials.from_prompt(user), "prompt"


def _bearer(options: CheckOptions, profile: Profile | None) -> BearerToken | None:
    env, file = options.bearer_env, options.bearer_file
    if env is None and file is None and profile is not None:
        env, file = profile.bearer_env, profile.bearer_file
    if env is not None:
        return BearerToken.from_env(env)
    if file is not None:
        return BearerToken.from_file(file)
    return None


def _probes(
    explicit: tuple[str, ...] | None, available: tuple[str, ...], mailbox: str | None, can_auth: bool
) -> tuple[tuple[str, ...], str]:
    ready = mailbox is not None and can_auth
    if explicit:
        unknown = [name for name in explicit if name not in PROBE_NAMES]
        if unknown:
            raise ConfigError(f"unknown probe {unknown[0]!r} (probes: {', '.join(PROBE_NAMES)})")
        absent = [name for name in explicit if name not in available]
        if absent:
            raise ConfigError(f"probe {absent[0]!r} is not available in this installation")
        needy = [name for name in explicit if name in NEEDS_MAILBOX]
        if needy and not ready:
            raise ConfigError(f"probe {needy[0]!r} needs a mailbox (--mailbox) and credentials (--user or a token)")
        return tuple(name for name in PROBE_NAMES if name in explicit), ""
    chosen = [name for name in available if ready or name not in NEEDS_MAILBOX]
    left = [name for name in available if name not in chosen]
    why = f"{', '.join(left)} skipped: they need --mailbox and credentials" if left else ""
    return tuple(chosen), why


def build_plan(options: CheckOptions, *, available: tuple[str, ...], interactive: bool) -> CheckPlan:
    """Merge the profile (if any) and the options (which win) into a validated plan.

    ``available``: the probes this installation has. ``interactive``: a password may be asked on the terminal.
    Raises ConfigError / CredentialError for anything that cannot work.
    """
    profile = _load(options)
    namespace = options.namespace or (profile.namespace if profile else None)
    servers = options.servers or (profile.servers if profile else ())
    if namespace is None and not servers:
        raise ConfigError("nothing to probe: give a NAMESPACE, --server NAME, --profile FILE or --lab")
    if options.discover_servers and namespace is None:
        raise ConfigError("--discover-servers needs a NAMESPACE to ask through")
    pins = {pin.name: pin for pin in (profile.resolve if profile else ())}
    pins.update({pin.name: pin for pin in map(parse_pin, options.resolve)})
    user = options.user or (profile.user if profile else None)
    credentials, source = _password(options, profile, user, interactive)
    bearer = _bearer(options, profile)
    auth: AuthChoice = options.auth or (profile.auth if profile else None) or "auto"
    if auth == "bearer" and bearer is None:
        raise ConfigError("--auth bearer needs a token: --bearer-env VAR or --bearer-file PATH")
    if auth in ("ntlm", "negotiate", "basic") and credentials is None:
        raise ConfigError(f"--auth {auth} needs --user and a password source")
    timeout = _pick(options.timeout, profile.timeout if profile else None, DEFAULT_TIMEOUT_S)
    wait = _pick(options.notification_wait, profile.mapi_notification_wait if profile else None, 0.0)
    if wait and wait >= timeout:
        raise ConfigError(f"--notification-wait {wait:g} must be shorter than --timeout {timeout:g}")
    insecure = options.insecure or bool(profile and profile.insecure)
    ca_file = options.ca_file or (profile.ca_file if profile else None)
    if insecure and options.ca_file is not None:
        raise ConfigError("--insecure and --ca-file contradict each other: use one")
    mailbox = options.mailbox or (profile.mailbox if profile else None)
    explicit = options.probes or (profile.probes if profile else None)
    probes, skipped = _probes(explicit, available, mailbox, credentials is not None or bearer is not None)
    if not probes:
        raise ConfigError("no probe to run (none of the probes is available in this installation)")
    tls = TlsOptions(ca_file=None if insecure else ca_file, insecure=insecure)
    settings = ProbeSettings(
        mailbox=mailbox,
        credentials=credentials,
        bearer=bearer,
        auth=auth,
        channel_binding=_pick(options.channel_binding, profile.channel_binding if profile else None, True),
        transport=TransportOptions(tls=tls, timeout_s=min(timeout, max(10.0, wait + 5.0))),
        timeout_s=timeout,
        mapi_notification_wait_s=wait,
        cert_warn_days=_pick(options.cert_warn_days, profile.cert_warn_days if profile else None, 30),
    )
    return CheckPlan(
        namespace=namespace,
        servers=servers,
        port=_pick(options.port, profile.port if profile else None, 443),
        pins=tuple(pins.values()),
        settings=settings,
        probes=probes,
        discover=options.discover_servers,
        profile=profile.path if profile else None,
        password_source=source,
        skipped=skipped,
    )
