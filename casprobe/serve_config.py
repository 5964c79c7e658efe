"""``casprobe serve``'s configuration file: modules, the names they may probe, and the limits of the server.

Like blackbox_exporter's ``config/config.go`` (each module validated as it is read, the whole file refused if one
key is wrong), the file is checked completely at load time, and every error names the file, the line and the key:
``casprobe.toml:14: modules.mapi.timeout: 0 is out of range``. ``tomllib`` gives no line numbers, so
:func:`key_line` finds a key's line in the text itself (table headers, bare / quoted / dotted keys). The typed
reading reuses :mod:`casprobe.config`'s reader, so a module says ``user``, ``password_file`` and the rest exactly
as a profile does. ::

    max_concurrency = 16                # probes at once, all scrapes together (default: 8 × CPU cores)
    timeout_offset = 0.5                # seconds taken off X-Prometheus-Scrape-Timeout-Seconds (blackbox's default)
    port = 443                          # HTTPS port of every target (a module may say otherwise)
    namespace = "outlook.contoso.com"   # which allowed name is the load-balanced one (the rest are servers)
    targets = ["outlook.contoso.com", "mb1.contoso.com", "mb2.contoso.com"]   # names any module may probe
    backends = ["mb1", "mb2"]           # X-FEServer names reported as themselves (default: each target's first label)

    [resolve]                           # name -> address pins, as in a profile (no DNS asked for these names)
    "outlook.contoso.com" = "10.0.0.10"

    [modules.outlook]                   # GET /probe?module=outlook&target=mb1.contoso.com
    probes = ["health", "autodiscover", "mapi", "ews"]
    mailbox = "alice@contoso.com"
    user = "CONTOSO\\\\alice"
    password_file = "alice.pw"          # or password_env = "VAR" (bearer_file / bearer_env for a token);
                                        # an inline password = "..." is refused
    auth = "ntlm"                       # auto | ntlm | negotiate | basic | bearer
    channel_binding = true
    ca_file = "ca.pem"                  # or insecure = true (recorded in every scrape)
    timeout = 15                        # the module's cap on a probe's deadline, seconds (default 20)
    cert_warn_days = 30
    targets = ["mb1.contoso.com"]       # only these for this module (instead of the top-level list)

An open prober holding NTLM credentials must not probe whatever name a query brings: a module probes only the
names its ``targets`` (or the top-level ``targets``) list, and a module with neither is an error. Password files
and variables are read at load (and reload) time, so a missing secret is a load error, never a failed probe.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from casprobe.config import (
    DEFAULT_TIMEOUT_S,
    MAX_TIMEOUT_S,
    TomlReader,
    read_auth_choice,
    read_credentials,
    read_pins,
    read_probes,
)
from casprobe.errors import ConfigError, CredentialError
from casprobe.model import Target, TargetKind
from casprobe.net.credentials import BearerToken, Credentials
from casprobe.net.resolve import Pin, Resolver
from casprobe.net.tls import TlsOptions
from casprobe.net.transport import TransportOptions
from casprobe.probes import ProbeSettings
from casprobe.targets import NEEDS_MAILBOX, server_label

__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_TIMEOUT_OFFSET_S",
    "ServeConfig",
    "ServeModule",
    "key_line",
    "load_serve_config",
]

#: Probes at once when the file does not say: probes mostly wait on the network, so several per core.
DEFAULT_MAX_CONCURRENCY = min(256, 8 * (os.cpu_count() or 1))
#: blackbox_exporter's ``--timeout-offset`` default.
DEFAULT_TIMEOUT_OFFSET_S = 0.5

_TOP_KEYS = ("max_concurrency", "timeout_offset", "port", "namespace", "targets", "backends", "resolve", "modules")
_MODULE_KEYS = (
    "probes",
    "mailbox",
    "user",
    "password_file",
    "password_env",
    "bearer_file",
    "bearer_env",
    "auth",
    "channel_binding",
    "ca_file",
    "insecure",
    "timeout",
    "cert_warn_days",
    "port",
    "targets",
)
_MODULE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
_SMTP = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_SHORT = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

# -- where a key is in the text -----------------------------------------------------------------------------------

_PART = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_PART}(?:\s*\.\s*{_PART})*"
_HEADER_RE = re.compile(rf"^\s*\[\[?\s*({_DOTTED})\s*\]\]?")
_KEY_RE = re.compile(rf"^\s*({_DOTTED})\s*=")
_PART_RE = re.compile(_PART)


def _parts(dotted: str) -> tuple[str, ...]:
    out = []
    for token in _PART_RE.findall(dotted):
        if token.startswith('"'):
            try:
                token = json.loads(token)
            except ValueError:
                token = token[1:-1]
        elif token.startswith("'"):
            token = token[1:-1]
        out.append(token)
    return tuple(out)


def _key_parts(key: str) -> tuple[str, ...]:
    """``modules.mapi.targets[2]`` → (modules, mapi, targets); ``resolve.mb1.lab.test`` keeps the name whole
    after ``resolve`` (a pinned name is one quoted key)."""
    key = re.sub(r"\[\d+\]$", "", key)
    head, _, rest = key.partition(".")
    if head == "resolve" and rest:
        return (head, rest)
    if head == "modules" and rest:
        name, _, sub = rest.partition(".")
        return ("modules", name, *((sub,) if sub else ()))
    return (head,) if not rest else (head, *rest.split("."))


def key_line(text: str, key: str) -> int | None:
    """The 1-based line where ``key`` (as error messages spell it) is set in the TOML ``text``, else where its
    nearest enclosing table is; None when neither is found (best effort: the text is scanned, not parsed)."""
    wanted = _key_parts(key)
    found: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER_RE.match(line)
        if header:
            table = _parts(header.group(1))
            found.setdefault(table, number)
            continue
        match = _KEY_RE.match(line)
        if match:
            parts = _parts(match.group(1))
            for size in range(1, len(parts) + 1):  # a dotted key also sets the tables it names
                found.setdefault((*table, *parts[:size]), number)
    for size in range(len(wanted), 0, -1):
        if wanted[:size] in found:
            return found[wanted[:size]]
    return None


class _LineReader(TomlReader):
    """:mod:`casprobe.config`'s typed reader, with errors that say ``file:line: key: problem``."""

    def __init__(self, path: Path, text: str, data: dict[str, Any], prefix: str = "") -> None:
        super().__init__(path, data, prefix)
        self.text = text

    def fail(self, key: str, what: str) -> ConfigError:
        return _error(self.path, self.text, self.prefix + key, what)

    def table(self, key: str) -> _LineReader:
        value = self._get(key, dict, "a table")
        return _LineReader(self.path, self.text, value or {}, f"{self.prefix}{key}.")

    def names(self, key: str) -> tuple[str, ...] | None:
        """An array of DNS names, lower-cased, without duplicates; None when absent."""
        value = self._get(key, list, "an array of DNS names")
        if value is None:
            return None
        out: list[str] = []
        for index, item in enumerate(value):
            sub = _LineReader(self.path, self.text, {f"{key}[{index}]": item}, self.prefix)
            name = sub.host(f"{key}[{index}]")
            if name is None:
                raise self.fail(f"{key}[{index}]", "expected a DNS name, got nothing")
            if name in out:
                raise self.fail(f"{key}[{index}]", f"{item!r} is listed twice")
            out.append(name)
        return tuple(out)


def _error(path: Path, text: str, key: str, what: str) -> ConfigError:
    line = key_line(text, key)
    where = f"{path}:{line}" if line is not None else str(path)
    return ConfigError(f"{where}: {key}: {what}")


# -- the validated configuration ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServeModule:
    """One ``[modules.NAME]``: what a scrape with ``module=NAME`` runs.

    Attributes:
        name: the module's name. probes: probe names, in report order. settings: the probes' settings (the
        deadline in it is the module's cap, ``timeout``; each scrape replaces it with its own). targets: the names
        it may probe. port: HTTPS port of those names. password_source: ``env VAR`` / ``file PATH`` / None
        (described, never resolved). bearer_source: the same for a token.
    """

    name: str
    probes: tuple[str, ...]
    settings: ProbeSettings
    targets: tuple[str, ...]
    port: int = 443
    password_source: str | None = None
    bearer_source: str | None = None

    def summary(self) -> dict[str, object]:
        """The module's settings as plain data for the debug output and the status page (no secret)."""
        s = self.settings
        return {
            "probes": list(self.probes),
            "targets": list(self.targets),
            "port": self.port,
            "mailbox": s.mailbox,
            "user": s.credentials.username if s.credentials else None,
            "password": self.password_source,
            "bearer_token": self.bearer_source,
            "auth": s.auth,
            "channel_binding": s.channel_binding,
            "timeout_s": s.timeout_s,
            "cert_warn_days": s.cert_warn_days,
            "tls_verification": not s.transport.tls.insecure,
            "ca_file": str(s.transport.tls.ca_file) if s.transport.tls.ca_file else None,
        }


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """A validated configuration file.

    Attributes:
        path: the file read. modules: by name. pins: ``[resolve]``. namespace: the load-balanced name, if said.
        backends: the X-FEServer names (lower-case short names) metrics show as themselves; others are ``other``.
        max_concurrency: probes at once. timeout_offset: seconds taken off Prometheus's scrape timeout.
    """

    path: Path
    modules: Mapping[str, ServeModule]
    pins: tuple[Pin, ...] = ()
    namespace: str | None = None
    backends: tuple[str, ...] = ()
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    timeout_offset: float = DEFAULT_TIMEOUT_OFFSET_S

    def resolver(self) -> Resolver:
        return Resolver(self.pins)

    def target(self, module: ServeModule, name: str) -> Target | None:
        """The :class:`Target` for ``name`` when ``module`` may probe it (case and a final dot ignored), else None."""
        name = name.strip().lower().rstrip(".")
        if name not in module.targets:
            return None
        address = next((pin.address for pin in self.pins if pin.name == name), None)
        if name == self.namespace:
            return Target(name, TargetKind.NAMESPACE, module.port, address, "namespace")
        return Target(name, TargetKind.SERVER, module.port, address, server_label(name, module.targets))


def _secrets(reader: _LineReader) -> tuple[Credentials | None, BearerToken | None, str | None, str | None]:
    """Read the password / token the references point at now (a missing one is a load error, at its line)."""
    refs = read_credentials(reader, None)
    user: str | None = refs["user"]
    password_key = next((k for k in ("password_env", "password_file") if refs[k] is not None), None)
    bearer_key = next((k for k in ("bearer_env", "bearer_file") if refs[k] is not None), None)
    if password_key is not None and user is None:
        raise reader.fail(password_key, "a password source without user")
    if password_key is None and user is not None:
        raise reader.fail("user", "needs password_env or password_file (an inline password is refused)")
    credentials = bearer = None
    password_source = bearer_source = None
    key = password_key
    try:
        if password_key is not None and user is not None:
            ref = refs[password_key]
            if password_key == "password_env":
                credentials = Credentials.from_env(user, ref)
            else:
                credentials = Credentials.from_file(user, ref)
            password_source = f"{password_key.removeprefix('password_')} {ref}"
        key = bearer_key
        if bearer_key is not None:
            ref = refs[bearer_key]
            bearer = BearerToken.from_env(ref) if bearer_key == "bearer_env" else BearerToken.from_file(ref)
            bearer_source = f"{bearer_key.removeprefix('bearer_')} {ref}"
    except CredentialError as exc:
        raise reader.fail(key or "user", str(exc)) from None
    return credentials, bearer, password_source, bearer_source


def _module(
    name: str, reader: _LineReader, targets: tuple[str, ...] | None, port: int, namespace: str | None
) -> ServeModule:
    reader.check_keys(_MODULE_KEYS)
    probes = read_probes(reader)
    if probes is None:
        raise reader.fail("probes", "missing: name at least one probe (health, autodiscover, mapi, ews)")
    allowed = reader.names("targets") or targets
    if not allowed:
        raise reader.fail("targets", "no target allowed: list the names this module may probe (here or at the top)")
    mailbox = reader.string("mailbox")
    if mailbox is not None and not _SMTP.fullmatch(mailbox):
        raise reader.fail("mailbox", f"{mailbox!r} is not an SMTP address")
    credentials, bearer, password_source, bearer_source = _secrets(reader)
    needy = [probe for probe in probes if probe in NEEDS_MAILBOX]
    if needy and (mailbox is None or (credentials is None and bearer is None)):
        raise reader.fail("probes", f"probe {needy[0]!r} needs a mailbox and credentials (user + password_*)")
    auth = read_auth_choice(reader) or "auto"
    if auth == "bearer" and bearer is None:
        raise reader.fail("auth", "'bearer' needs bearer_env or bearer_file")
    if auth in ("ntlm", "negotiate", "basic") and credentials is None:
        raise reader.fail("auth", f"{auth!r} needs user and password_env or password_file")
    ca_file = reader.path_value("ca_file", must_exist=True)
    insecure = bool(reader.boolean("insecure"))
    if insecure and ca_file is not None:
        raise reader.fail("insecure", "true contradicts ca_file (verification off, yet a CA to verify with)")
    timeout = reader.number("timeout", 0.0, MAX_TIMEOUT_S, low_inclusive=False) or DEFAULT_TIMEOUT_S
    cert_warn_days = reader.integer("cert_warn_days", 0, 3650)
    settings = ProbeSettings(
        mailbox=mailbox,
        credentials=credentials,
        bearer=bearer,
        auth=auth,
        channel_binding=True if (cb := reader.boolean("channel_binding")) is None else cb,
        transport=TransportOptions(tls=TlsOptions(ca_file=ca_file, insecure=insecure), timeout_s=min(timeout, 10.0)),
        timeout_s=timeout,
        cert_warn_days=30 if cert_warn_days is None else cert_warn_days,
        namespace=namespace,
        server_names=tuple(n for n in allowed if n != namespace),
    )
    module_port = reader.integer("port", 1, 65535) or port
    return ServeModule(name, probes, settings, allowed, module_port, password_source, bearer_source)


def _backends(top: _LineReader, names: tuple[str, ...]) -> tuple[str, ...]:
    value = top._get("backends", list, "an array of server short names (as X-FEServer sends them)")
    if value is None:
        return tuple(dict.fromkeys(name.split(".", 1)[0] for name in names))
    out: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not _SHORT.fullmatch(item.lower()):
            raise top.fail(f"backends[{index}]", f"{item!r} is not a server short name (letters, digits, -)")
        out.append(item.lower())
    return tuple(dict.fromkeys(out))


def load_serve_config(path: Path) -> ServeConfig:
    """Read and validate ``path``; ConfigError naming file, line, key and problem for anything wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration ({type(exc).__name__})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    top = _LineReader(path, text, data)
    top.check_keys(_TOP_KEYS)
    port = top.integer("port", 1, 65535) or 443
    namespace = top.host("namespace")
    targets = top.names("targets")
    pins = read_pins(top)
    modules_table = top.table("modules")
    if not modules_table.data:
        raise top.fail("modules", "no module: add at least one [modules.NAME] table")
    modules: dict[str, ServeModule] = {}
    for name, value in modules_table.data.items():
        if not _MODULE_NAME.fullmatch(name):
            raise top.fail(f"modules.{name}", "a module name is letters, digits, _ and - (at most 64)")
        if not isinstance(value, dict):
            raise top.fail(f"modules.{name}", "expected a table ([modules.NAME])")
        reader = _LineReader(path, text, value, f"modules.{name}.")
        modules[name] = _module(name, reader, targets, port, namespace)
    if namespace is not None and not any(namespace in m.targets for m in modules.values()):
        raise top.fail("namespace", f"{namespace!r} is not a target of any module")
    widest = max(modules.values(), key=lambda m: len(m.probes))
    limit = top.integer("max_concurrency", 1, 4096) or DEFAULT_MAX_CONCURRENCY
    if limit < len(widest.probes):
        raise top.fail(
            "max_concurrency", f"{limit} is fewer than the {len(widest.probes)} probes of module {widest.name!r}"
        )
    offset = top.number("timeout_offset", 0.0, 60.0)
    all_names = tuple(dict.fromkeys(n for m in modules.values() for n in m.targets))
    return ServeConfig(
        path=path,
        modules=modules,
        pins=pins,
        namespace=namespace,
        backends=_backends(top, all_names),
        max_concurrency=limit,
        timeout_offset=DEFAULT_TIMEOUT_OFFSET_S if offset is None else offset,
    )
