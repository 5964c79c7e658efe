"""The options every probing command shares (``check``, ``watch``): what to probe, as whom, trusting what.

:func:`target_options` adds the NAMESPACE argument and the target, authentication, TLS and timing options to a
click command; :func:`check_options` turns their values into :class:`casprobe.targets.CheckOptions` (which
:func:`casprobe.targets.build_plan` merges with a profile). Each command adds its own ``--probe`` (the choices
differ) and its output options.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from casprobe.targets import CheckOptions

__all__ = ["check_options", "target_options"]

F = TypeVar("F", bound=Callable[..., Any])

_AUTH = click.Choice(["auto", "ntlm", "negotiate", "basic", "bearer"])
_FILE = click.Path(dir_okay=False, path_type=Path)

_DECORATORS = (
    click.argument("namespace", required=False),
    click.option("--server", "servers", multiple=True, metavar="NAME", help="A server name to probe too (repeatable)."),
    click.option(
        "--lab",
        "lab_dir",
        is_flag=False,
        flag_value="",
        default=None,
        metavar="[DIR]",
        help="Use the lab's profile (DIR/profile.toml; default: the default lab folder).",
    ),
    click.option("--profile", type=_FILE, help="A profile file (TOML)."),
    click.option("--discover-servers", is_flag=True, help="Learn server names through the namespace's health pages."),
    click.option("--resolve", multiple=True, metavar="NAME:ADDR[:PORT]", help="Connect to ADDR for NAME (repeatable)."),
    click.option("--port", type=click.IntRange(1, 65535), help="HTTPS port of every name (default 443)."),
    click.option("--mailbox", metavar="SMTP", help="The mailbox to probe as (Autodiscover, MAPI, EWS)."),
    click.option("--user", help="Logon name: DOMAIN\\user, user@domain or user."),
    click.option("--password-env", metavar="VAR", help="Read the password from this environment variable."),
    click.option("--password-file", type=_FILE, help="Read the password from the first line of this file."),
    click.option("--bearer-env", metavar="VAR", help="Read an OAuth access token from this environment variable."),
    click.option("--bearer-file", type=_FILE, help="Read an OAuth access token from this file."),
    click.option("--auth", type=_AUTH, help="Authentication method (default auto: as the server offers)."),
    click.option("--no-channel-binding", is_flag=True, help="Send NTLM/Negotiate without the TLS channel binding."),
    click.option("--ca-file", type=_FILE, help="Trust the CAs in this PEM file instead of the system's."),
    click.option("--insecure", is_flag=True, help="Do not verify certificates (every output says so)."),
    click.option("--timeout", type=click.FloatRange(0, 600, min_open=True), help="Each probe's deadline in s (20)."),
    click.option("--notification-wait", type=click.FloatRange(0, 600), help="Hold a MAPI NotificationWait S s."),
    click.option("--cert-warn-days", type=click.IntRange(0, 3650), help="Warn when a certificate expires sooner (30)."),
)

#: the keyword names the shared options give a command (popped by :func:`check_options`)
_KEYS = (
    "profile",
    "discover_servers",
    "port",
    "mailbox",
    "user",
    "password_env",
    "password_file",
    "bearer_env",
    "bearer_file",
    "auth",
    "ca_file",
    "insecure",
    "timeout",
    "notification_wait",
    "cert_warn_days",
)


def target_options(command: F) -> F:
    """Decorate ``command`` with the NAMESPACE argument and the shared options (in ``--help`` order)."""
    for decorator in reversed(_DECORATORS):
        command = decorator(command)
    return command


def check_options(namespace: str | None, opts: dict[str, Any], probes: tuple[str, ...] = ()) -> CheckOptions:
    """The shared options' values (popped from ``opts``, leaving the command's own) as CheckOptions."""
    lab_dir = opts.pop("lab_dir")
    no_cb = opts.pop("no_channel_binding")
    return CheckOptions(
        namespace=namespace,
        lab=lab_dir is not None,
        lab_dir=Path(lab_dir) if lab_dir else None,
        channel_binding=False if no_cb else None,
        servers=tuple(opts.pop("servers")),
        resolve=tuple(opts.pop("resolve")),
        probes=probes,
        **{key: opts.pop(key) for key in _KEYS},
    )
