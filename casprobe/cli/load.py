"""``casprobe load``: Outlook-shaped load with Locust (headless), and its disconnect records into a run store.

``casprobe load run`` starts Locust with casprobe's locustfiles against the lab or a profile (one process, or a
master and ``--workers N`` on this machine), waits for the run time, prints the per-cohort disconnect figures and
where Locust's CSV and HTML went, and with ``--store`` adds the run to a run store (created if missing) for
``casprobe report``. ``casprobe load import`` adds the records of a run made with plain Locust command lines.

Exit codes: 0 the load ran; 2 the load ran but Locust reported failures (its own exit code 1); 3 it could not run.
"""

from __future__ import annotations

import json
import platform
import time
import uuid
from pathlib import Path

import click

from casprobe import __version__
from casprobe.analysis_load import cohort_figures
from casprobe.cli.watch import parse_seconds
from casprobe.config import default_lab_dir, lab_profile_path, load_profile
from casprobe.errors import ConfigError
from casprobe.load.accounts import read_accounts
from casprobe.load.records import LoadRecords
from casprobe.loadrun import LoadPlan, add_to_store, describe_commands, run_load
from casprobe.model import RunInfo

__all__ = ["load"]

_DIR = click.Path(file_okay=False, path_type=Path)
_FILE = click.Path(dir_okay=False, path_type=Path)


@click.group("load")
def load() -> None:
    """Outlook-shaped load with Locust: namespace vs server-name cohorts, disconnect time per cohort."""


def summary_lines(found: LoadRecords) -> list[str]:
    """The per-cohort figures in plain words."""
    lines = []
    for f in cohort_figures(found.run, found.disconnects):
        requests, failed = found.requests.get(f.cohort, 0), found.failures.get(f.cohort, 0)
        rate = f", {failed / requests:.1%} of {requests} requests failed" if requests else ""
        if not f.disconnects:
            lines.append(f"{f.cohort}: {f.users} clients, never cut off{rate}")
            continue
        still = f", {f.still_open} still cut off at the end" if f.still_open else ""
        lines.append(
            f"{f.cohort}: {f.users} clients, {f.users_cut_off} cut off, {f.disconnects} disconnects, "
            f"longest {f.longest_s:.1f} s, {f.mean_per_user_s:.1f} s per client on average{still}{rate}"
        )
    return lines


def _ensure_store(path: Path, found: LoadRecords) -> None:
    """A run store for a load-only run, when ``path`` does not exist yet."""
    from casprobe.store import RunStore

    if path.exists():
        return
    settings = json.loads(found.run.settings or "{}")
    targets = tuple(str(t) for t in [settings.get("namespace"), *settings.get("servers", [])] if t)
    info = RunInfo(
        run_id=str(uuid.uuid4()),
        started_at=found.run.started_at,
        casprobe_version=__version__,
        interval_s=1.0,
        targets=targets,
        probes=(),
        tls_verification=bool(settings.get("tls_verification", True)),
        settings=json.dumps({"load_only": True}),
        host=platform.node(),
        ended_at=found.run.ended_at,
    )
    RunStore.create(path, info).close()


@load.command("run")
@click.option("--lab", "lab_dir", is_flag=False, flag_value="", default=None, metavar="[DIR]", help="Load the lab.")
@click.option("--profile", type=_FILE, help="A casprobe profile (TOML) naming the organisation.")
@click.option("--accounts", type=_FILE, help="Accounts CSV (smtp,user,password_file|password_env).")
@click.option("--users", type=click.IntRange(1, 100_000), default=20, show_default=True)
@click.option("--spawn-rate", type=click.FloatRange(0.1, 10_000), default=10.0, show_default=True)
@click.option("--run-time", default="60s", show_default=True, help="How long: 90s, 10m, 1h.")
@click.option("--cohorts", default="", help="Cohort weights, e.g. namespace=3,mb1=1 (default namespace=2,<mb1>=1).")
@click.option("--mac", is_flag=True, help="Add Outlook for Mac users (EWS through exchangelib).")
@click.option("--stages", default="", help="A stage table for shapes.py instead of --users/--spawn-rate.")
@click.option("--workers", type=click.IntRange(0, 64), default=0, help="Distribute over a master and N workers.")
@click.option("--idle", default="5-10", show_default=True, help="Parked NotificationWait between bursts, s.")
@click.option("--timeout", type=click.FloatRange(0.5, 600), default=10.0, show_default=True, help="Per operation, s.")
@click.option("--out", "out_dir", type=_DIR, help="Folder for Locust's CSV/HTML and the records.")
@click.option("--store", type=_FILE, help="Add the run to this run store (created if missing).")
@click.option("--locustfiles", type=_DIR, help="The folder holding casprobe's locustfiles.")
@click.option("--dry-run", is_flag=True, help="Print the Locust command lines and stop.")
def run(
    lab_dir: str | None,
    profile: Path | None,
    accounts: Path | None,
    users: int,
    spawn_rate: float,
    run_time: str,
    cohorts: str,
    mac: bool,
    stages: str,
    workers: int,
    idle: str,
    timeout: float,
    out_dir: Path | None,
    store: Path | None,
    locustfiles: Path | None,
    dry_run: bool,
) -> None:
    """Run the load headless and report each cohort's disconnect time."""
    if profile is not None and lab_dir is not None:
        raise ConfigError("give --lab or --profile, not both")
    if profile is not None:
        target = ("--casprobe-profile", str(profile.resolve()))
    else:
        target = ("--casprobe-lab", str(Path(lab_dir).resolve() if lab_dir else default_lab_dir()))
    # read the profile (and the accounts) here first: a wrong path is one clear line, not a load of failed users
    profile_path = Path(target[1]) if profile is not None else lab_profile_path(Path(target[1]))
    loaded = load_profile(profile_path)
    if not loaded.namespace:
        raise ConfigError(f"{profile_path}: the profile names no namespace")
    if accounts is not None:
        read_accounts(accounts)
    seconds = parse_seconds(run_time, "--run-time")
    extra: tuple[str, ...] = ("--casprobe-idle", idle, "--casprobe-timeout", f"{timeout:g}")
    if accounts is not None:
        extra += ("--casprobe-accounts", str(accounts.resolve()))
    folder = (out_dir or Path(f"load-{time.strftime('%Y%m%d-%H%M%S')}")).resolve()
    plan = LoadPlan(folder, target, users, spawn_rate, seconds, cohorts, mac, stages, workers, extra, locustfiles)
    if dry_run:
        for line in describe_commands(plan):
            click.echo(line)
        return
    click.echo(f"load: {users} clients for {seconds:g} s ({'1 process' if not workers else f'{workers} workers'})")
    result = run_load(plan)
    found = result.records
    for line in summary_lines(found):
        click.echo(line)
    if found.skipped:
        click.echo(f"note: {found.skipped} unreadable record lines skipped")
    click.echo(f"Locust's statistics: {folder / 'locust_stats.json'}, {folder / 'locust.html'} (and CSV)")
    if store is not None:
        _ensure_store(store, found)
        add_to_store(found, store)
        click.echo(f"added to the run store {store}")
    if result.exit_code not in (0, 1):
        raise click.exceptions.Exit(3)
    if result.exit_code == 1:
        raise click.exceptions.Exit(2)


@load.command("import")
@click.argument("records", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--stats",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Locust's figures: its --json-file output (.json) or <prefix>_stats.csv.",
)
@click.option("--store", type=_FILE, required=True, help="The run store (created if missing).")
def import_(records: Path, stats: Path | None, store: Path) -> None:
    """Add a load run's records (``--casprobe-records`` of a Locust run) to a run store."""
    from casprobe.load.records import read_records
    from casprobe.loadrun import stats_from

    found = read_records(records, stats=stats_from(stats))
    _ensure_store(store, found)
    ident = add_to_store(found, store)
    for line in summary_lines(found):
        click.echo(line)
    click.echo(f"added as load run {ident} to {store}")
