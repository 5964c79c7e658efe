"""``casprobe check``: one round of probes through the namespace and every server name, then one report.

Thin by design (style.md rule 13): parse the options, let :func:`casprobe.targets.build_plan` merge them with a
profile, :func:`casprobe.runner.run_round` probe, an exporter render, and exit with the Nagios code of the run.
Bad options, profiles or credential sources raise ConfigError / CredentialError, which ``casprobe.cli.main``
turns into one line and exit code 3.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import click

from casprobe.exporters import FORMATS, CheckReport, render, write_atomic
from casprobe.probes import PROBE_NAMES
from casprobe.runner import available_probes, run_round
from casprobe.targets import CheckOptions, build_plan, discover_servers

__all__ = ["check"]

_log = logging.getLogger(__name__)

_AUTH = click.Choice(["auto", "ntlm", "negotiate", "basic", "bearer"])
_FILE = click.Path(dir_okay=False, path_type=Path)


@click.command("check")
@click.argument("namespace", required=False)
@click.option("--server", "servers", multiple=True, metavar="NAME", help="A server name to probe too (repeatable).")
@click.option(
    "--lab",
    "lab_dir",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[DIR]",
    help="Use the lab's profile (DIR/profile.toml; default: the default lab folder).",
)
@click.option("--profile", type=_FILE, help="A profile file (TOML).")
@click.option("--discover-servers", is_flag=True, help="Learn server names through the namespace's health pages.")
@click.option("--resolve", multiple=True, metavar="NAME:ADDR[:PORT]", help="Connect to ADDR for NAME (repeatable).")
@click.option("--port", type=click.IntRange(1, 65535), help="HTTPS port of every name (default 443).")
@click.option("--mailbox", metavar="SMTP", help="The mailbox to probe as (Autodiscover, MAPI, EWS).")
@click.option("--user", help="Logon name: DOMAIN\\user, user@domain or user.")
@click.option("--password-env", metavar="VAR", help="Read the password from this environment variable.")
@click.option("--password-file", type=_FILE, help="Read the password from the first line of this file.")
@click.option("--bearer-env", metavar="VAR", help="Read an OAuth access token from this environment variable.")
@click.option("--bearer-file", type=_FILE, help="Read an OAuth access token from this file.")
@click.option("--auth", type=_AUTH, help="Authentication method (default auto: as the server offers).")
@click.option("--no-channel-binding", is_flag=True, help="Send NTLM/Negotiate without the TLS channel binding.")
@click.option("--ca-file", type=_FILE, help="Trust the CAs in this PEM file instead of the system's.")
@click.option("--insecure", is_flag=True, help="Do not verify certificates (every output says so).")
@click.option("--timeout", type=click.FloatRange(0, 600, min_open=True), help="Each probe's deadline in s (20).")
@click.option(
    "--probe",
    "probes",
    multiple=True,
    type=click.Choice(PROBE_NAMES),
    help="Run this probe (repeatable; default: all that can run).",
)
@click.option("--notification-wait", type=click.FloatRange(0, 600), help="Hold a MAPI NotificationWait S s.")
@click.option("--cert-warn-days", type=click.IntRange(0, 3650), help="Warn when a certificate expires sooner (30).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--output", type=_FILE, help="Write the report to this file (atomically) instead of stdout.")
def check(namespace: str | None, **opts: Any) -> None:
    """Probe NAMESPACE (and each --server) like Outlook does; exit 0 OK, 1 warning, 2 critical, 3 unknown."""
    lab_dir = opts.pop("lab_dir")
    fmt, output = opts.pop("fmt"), opts.pop("output")
    no_cb = opts.pop("no_channel_binding")
    options = CheckOptions(
        namespace=namespace,
        lab=lab_dir is not None,
        lab_dir=Path(lab_dir) if lab_dir else None,
        channel_binding=False if no_cb else None,
        servers=tuple(opts.pop("servers")),
        resolve=tuple(opts.pop("resolve")),
        probes=tuple(opts.pop("probes")),
        **opts,
    )
    plan = build_plan(options, available=available_probes(), interactive=sys.stdin is not None and sys.stdin.isatty())
    resolver = plan.resolver()
    notes = [plan.skipped] if plan.skipped else []
    discovered: tuple[str, ...] = ()
    if plan.discover and plan.namespace is not None:
        found = discover_servers(
            plan.namespace,
            port=plan.port,
            resolver=resolver,
            options=plan.settings.transport,
            max_seconds=min(10.0, plan.settings.timeout_s),
        )
        discovered = found.servers
        notes.append(f"server discovery: {found.detail}")
    targets = plan.targets(discovered)
    started = time.time()
    results = run_round(targets, plan.probes, plan.settings_for(discovered), resolver)
    report = CheckReport(
        results=tuple(results),
        started_at=started,
        finished_at=time.time(),
        settings=plan.summary(),
        tls_verification=not plan.settings.transport.tls.insecure,
        notes=tuple(notes),
    )
    if output is not None:
        write_atomic(output, render(fmt, report))
    else:
        click.echo(render(fmt, report, color=sys.stdout.isatty()), nl=False)
    sys.stdout.flush()
    sys.exit(int(report.status))  # click.exceptions.Exit would be swallowed by cli.main(standalone_mode=False)
