"""Profiles: TOML files (``tomllib``) that say what to probe and how, validated completely at load time.

Like blackbox_exporter's ``config/config.go`` (each sub-config validated as it is read), a profile is rejected
at once with a message naming the file, the key and what is wrong (:class:`~casprobe.errors.ConfigError`),
never later as a probe failure. Every key is optional; command-line options override the profile. ::

    namespace = "outlook.contoso.com"          # the load-balanced name
    autodiscover = "autodiscover.contoso.com"  # informational (the Autodiscover probe starts from the domain)
    servers = ["mb1.contoso.com", "mb2.contoso.com"]
    port = 443
    ca_file = "ca.pem"                         # relative paths are relative to the profile's folder
    insecure = false                           # true: no certificate verification (shown in every output)
    auth = "auto"                              # auto | ntlm | negotiate | basic | bearer
    channel_binding = true
    timeout = 20                               # seconds, each probe's whole deadline
    probes = ["health", "autodiscover", "mapi", "ews"]
    cert_warn_days = 30
    mapi_notification_wait = 0                 # seconds; 0 skips NotificationWait and PING

    [resolve]                                  # name -> address, like --resolve (pins; no DNS asked)
    "outlook.contoso.com" = "10.0.0.10"

    [mailbox]                                  # or: mailbox = "alice@contoso.com" and the keys below at top level
    smtp = "alice@contoso.com"
    user = "CONTOSO\\alice"
    password_file = "alice.pw"                 # or password_env = "VAR"; never password = "..."
    # bearer_file / bearer_env: an OAuth access token

The lab (``casprobe lab up``) writes exactly this format as ``<lab folder>/profile.toml`` (see
``casprobe/lab/profile.py``), with ``lb`` and ``lab_dir`` as extra informational keys; ``--lab [DIR]`` loads it.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast, get_args

from casprobe.errors import ConfigError
from casprobe.net.resolve import Pin
from casprobe.probes import PROBE_NAMES
from casprobe.probes.base import AuthChoice, ProbeSettings

__all__ = [
    "AUTH_CHOICES",
    "DEFAULT_TIMEOUT_S",
    "MAX_TIMEOUT_S",
    "Profile",
    "default_lab_dir",
    "lab_profile_path",
    "load_profile",
]

AUTH_CHOICES: tuple[str, ...] = get_args(AuthChoice)
#: Each probe's deadline when neither profile nor options say (ProbeSettings' default).
DEFAULT_TIMEOUT_S = ProbeSettings().timeout_s
#: Longest deadline accepted for one probe, in seconds.
MAX_TIMEOUT_S = 600.0

_HOST_RE = re.compile(r"(?=.{1,253}\Z)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*\.?", re.IGNORECASE)
_ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SMTP_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_CREDENTIAL_KEYS = ("user", "password_file", "password_env", "bearer_file", "bearer_env")
_TOP_KEYS = (
    "namespace",
    "autodiscover",
    "servers",
    "port",
    "resolve",
    "ca_file",
    "insecure",
    "mailbox",
    *_CREDENTIAL_KEYS,
    "auth",
    "channel_binding",
    "timeout",
    "probes",
    "cert_warn_days",
    "mapi_notification_wait",
    "lb",
    "lab_dir",
)
_MAILBOX_KEYS = ("smtp", *_CREDENTIAL_KEYS)
_INLINE_SECRETS = ("password", "bearer", "token")


def default_lab_dir() -> Path:
    """The lab folder when ``--lab`` names none: $CASPROBE_LAB_DIR, else $XDG_STATE_HOME (or ~/.local/state)
    + ``casprobe/lab``. Must stay in step with ``casprobe.lab.cli.default_lab_dir`` (the product may not import
    the lab)."""
    env = os.environ.get("CASPROBE_LAB_DIR")
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "casprobe" / "lab"


def lab_profile_path(lab_dir: Path | None = None) -> Path:
    """``<lab folder>/profile.toml``; ConfigError when there is none (no lab was ever started there)."""
    folder = lab_dir if lab_dir is not None else default_lab_dir()
    path = folder / "profile.toml"
    if not path.is_file():
        raise ConfigError(f"no lab profile at {path} (start a lab with 'casprobe lab up --dir {folder}')")
    return path


@dataclass(frozen=True, slots=True)
class Profile:
    """A validated profile; None (or empty) means the profile does not say.

    Attributes:
        path: the file it was read from.
        namespace, autodiscover: DNS names. servers: server DNS names, in order, no duplicates.
        port: HTTPS port. resolve: pins (name → address). ca_file: trust anchors (absolute path).
        insecure: do not verify certificates. mailbox: the SMTP address to probe as.
        user: the logon name. password_file / password_env, bearer_file / bearer_env: where the secrets are.
        auth, channel_binding, timeout, probes, cert_warn_days, mapi_notification_wait: as the CLI options.
        lb, lab_dir: informational keys the lab writes.
    """

    path: Path
    namespace: str | None = None
    autodiscover: str | None = None
    servers: tuple[str, ...] = ()
    port: int | None = None
    resolve: tuple[Pin, ...] = ()
    ca_file: Path | None = None
    insecure: bool | None = None
    mailbox: str | None = None
    user: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    bearer_file: Path | None = None
    bearer_env: str | None = None
    auth: AuthChoice | None = None
    channel_binding: bool | None = None
    timeout: float | None = None
    probes: tuple[str, ...] | None = None
    cert_warn_days: int | None = None
    mapi_notification_wait: float | None = None
    lb: str | None = None
    lab_dir: Path | None = None


def _kind(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}
    if isinstance(value, dict):
        return "a table"
    return names.get(type(value), type(value).__name__)


class TomlReader:
    """Typed access to one TOML table, every failure a ConfigError naming file and key."""

    def __init__(self, path: Path, data: dict[str, Any], prefix: str = "") -> None:
        self.path, self.data, self.prefix = path, data, prefix

    def fail(self, key: str, what: str) -> ConfigError:
        return ConfigError(f"{self.path}: {self.prefix}{key}: {what}")

    def _get(self, key: str, kind: type | tuple[type, ...], expected: str) -> Any:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise self.fail(key, f"expected {expected}, got a boolean")
        if not isinstance(value, kind):
            raise self.fail(key, f"expected {expected}, got {_kind(value)}")
        return value

    def string(self, key: str) -> str | None:
        value: str | None = self._get(key, str, "a string")
        if value is not None and not value.strip():
            raise self.fail(key, "must not be empty")
        return value

    def boolean(self, key: str) -> bool | None:
        value: bool | None = self._get(key, bool, "true or false")
        return value

    def host(self, key: str) -> str | None:
        value = self.string(key)
        if value is not None and not _HOST_RE.fullmatch(value):
            raise self.fail(key, f"{value!r} is not a DNS name")
        return value.lower().rstrip(".") if value is not None else None

    def number(self, key: str, low: float, high: float, *, low_inclusive: bool = True) -> float | None:
        value = self._get(key, (int, float), "a number")
        if value is None:
            return None
        if value > high or value < low or (value == low and not low_inclusive):
            bound = "≥" if low_inclusive else ">"
            raise self.fail(key, f"{value} is out of range (expected {bound} {low:g} and ≤ {high:g})")
        return float(value)

    def integer(self, key: str, low: int, high: int) -> int | None:
        value: int | None = self._get(key, int, "an integer")
        if value is not None and not low <= value <= high:
            raise self.fail(key, f"{value} is out of range (expected {low}..{high})")
        return value

    def path_value(self, key: str, *, must_exist: bool) -> Path | None:
        value = self.string(key)
        if value is None:
            return None
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = self.path.parent / path
        if must_exist and not path.is_file():
            raise self.fail(key, f"{path} does not exist or is not a file")
        return path

    def env_name(self, key: str) -> str | None:
        value = self.string(key)
        if value is not None and not _ENV_RE.fullmatch(value):
            raise self.fail(key, f"{value!r} is not an environment variable name")
        return value

    def check_keys(self, known: tuple[str, ...]) -> None:
        for key in self.data:
            if key in _INLINE_SECRETS:
                source = "password_file or password_env" if key == "password" else "bearer_file or bearer_env"
                raise self.fail(
                    key,
                    f"an inline secret is refused (a profile is copied and read by many, and would put it in "
                    f"clear on disk); use {source}",
                )
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
                raise self.fail(key, f"unknown key ({hint})")


def _servers(reader: TomlReader) -> tuple[str, ...]:
    value = reader._get("servers", list, "an array of server names")
    if value is None:
        return ()
    names: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not _HOST_RE.fullmatch(item):
            raise reader.fail(f"servers[{index}]", f"{item!r} is not a DNS name")
        name = item.lower().rstrip(".")
        if name in names:
            raise reader.fail(f"servers[{index}]", f"{item!r} is listed twice")
        names.append(name)
    return tuple(names)


def read_pins(reader: TomlReader) -> tuple[Pin, ...]:
    table = reader._get("resolve", dict, "a table of name = address")
    if table is None:
        return ()
    pins: list[Pin] = []
    for name, address in table.items():
        key = f"resolve.{name}"
        if not _HOST_RE.fullmatch(name):
            raise reader.fail(key, f"{name!r} is not a DNS name")
        if not isinstance(address, str):
            raise reader.fail(key, f"expected an IP address as a string, got {_kind(address)}")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise reader.fail(key, f"{address!r} is not an IP address") from None
        pins.append(Pin(name.lower().rstrip("."), address))
    return tuple(pins)


def read_probes(reader: TomlReader) -> tuple[str, ...] | None:
    value = reader._get("probes", list, "an array of probe names")
    if value is None:
        return None
    if not value:
        raise reader.fail("probes", "must name at least one probe")
    for index, item in enumerate(value):
        if item not in PROBE_NAMES:
            raise reader.fail(f"probes[{index}]", f"{item!r} is not a probe (probes: {', '.join(PROBE_NAMES)})")
    return tuple(name for name in PROBE_NAMES if name in value)


def read_auth_choice(reader: TomlReader) -> AuthChoice | None:
    value = reader.string("auth")
    if value is None:
        return None
    for choice in AUTH_CHOICES:
        if value == choice:
            return cast(AuthChoice, choice)
    raise reader.fail("auth", f"{value!r} is not one of {', '.join(AUTH_CHOICES)}")


def read_credentials(top: TomlReader, box: TomlReader | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _CREDENTIAL_KEYS:
        if box is not None and key in box.data and key in top.data:
            raise top.fail(key, "set both at the top level and in [mailbox]; keep one")
        reader = box if box is not None and key in box.data else top
        if key == "user":
            out[key] = reader.string(key)
        elif key.endswith("_file"):
            out[key] = reader.path_value(key, must_exist=False)
        else:
            out[key] = reader.env_name(key)
    for secret in ("password", "bearer"):
        if out[f"{secret}_file"] is not None and out[f"{secret}_env"] is not None:
            raise top.fail(f"{secret}_env", f"set only one of {secret}_file and {secret}_env")
    return out


def _mailbox(top: TomlReader) -> tuple[str | None, TomlReader | None]:
    value = top.data.get("mailbox")
    box: TomlReader | None = None
    if isinstance(value, dict):
        box = TomlReader(top.path, value, "mailbox.")
        box.check_keys(_MAILBOX_KEYS)
        smtp = box.string("smtp")
        key = "mailbox.smtp"
    else:
        smtp = top._get("mailbox", str, "an SMTP address or a [mailbox] table")
        key = "mailbox"
    if smtp is not None and not _SMTP_RE.fullmatch(smtp):
        raise ConfigError(f"{top.path}: {key}: {smtp!r} is not an SMTP address")
    return smtp, box


def load_profile(path: Path) -> Profile:
    """Read and validate a profile; ConfigError (naming file, key and problem) for anything wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such profile") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the profile ({type(exc).__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    top = TomlReader(path, data)
    top.check_keys(_TOP_KEYS)
    mailbox, box = _mailbox(top)
    credentials = read_credentials(top, box)
    auth = read_auth_choice(top)
    ca_file = top.path_value("ca_file", must_exist=True)
    insecure = top.boolean("insecure")
    if insecure and ca_file is not None:
        raise top.fail("insecure", "true contradicts ca_file (verification off, yet a CA to verify with)")
    timeout = top.number("timeout", 0.0, MAX_TIMEOUT_S, low_inclusive=False)
    wait = top.number("mapi_notification_wait", 0.0, MAX_TIMEOUT_S)
    limit = timeout or DEFAULT_TIMEOUT_S
    if wait and wait >= limit:
        raise top.fail("mapi_notification_wait", f"{wait:g} s must be shorter than the timeout ({limit:g} s)")
    port = top.integer("port", 1, 65535)
    lab_dir = top.string("lab_dir")
    return Profile(
        path=path,
        namespace=top.host("namespace"),
        autodiscover=top.host("autodiscover"),
        servers=_servers(top),
        port=port,
        resolve=read_pins(top),
        ca_file=ca_file,
        insecure=insecure,
        mailbox=mailbox,
        auth=auth,
        channel_binding=top.boolean("channel_binding"),
        timeout=timeout,
        probes=read_probes(top),
        cert_warn_days=top.integer("cert_warn_days", 0, 3650),
        mapi_notification_wait=wait,
        lb=top.string("lb"),
        lab_dir=Path(lab_dir) if lab_dir is not None else None,
        **credentials,
    )
