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

from casprobe.cli.options import check_options, target_options
from casprobe.exporters import FORMATS, CheckReport, render, write_atomic
from casprobe.probes import PROBE_NAMES
from casprobe.runner import available_probes, run_round
from casprobe.targets import build_plan, discover_servers

__all__ = ["check"]

_log = logging.getLogger(__name__)

_FILE = click.Path(dir_okay=False, path_type=Path)


@click.command("check")
@target_options
@click.option(
    "--probe",
    "probes",
    multiple=True,
    type=click.Choice(PROBE_NAMES),
    help="Run this probe (repeatable; default: all that can run).",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--output", type=_FILE, help="Write the report to this file (atomically) instead of stdout.")
def check(namespace: str | None, **opts: Any) -> None:
    """Probe NAMESPACE (and each --server) like Outlook does; exit 0 OK, 1 warning, 2 critical, 3 unknown."""
    fmt, output = opts.pop("fmt"), opts.pop("output")
    options = check_options(namespace, opts, tuple(opts.pop("probes")))
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
