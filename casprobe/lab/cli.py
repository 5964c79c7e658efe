"""``casprobe lab``: start, inspect, operate and stop the simulated Exchange organisation."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from casprobe.errors import LabError, LabNotRunning
from casprobe.lab.control import LabClient
from casprobe.lab.org import LabConfig, Org, UrlMode, build_org
from casprobe.lab.pki import issue_lab_pki
from casprobe.lab.profile import write_profile
from casprobe.lab.secrets import PasswordBook, generate_passwords

__all__ = ["default_lab_dir", "lab", "lab_down", "lab_up"]


def default_lab_dir() -> Path:
    env = os.environ.get("CASPROBE_LAB_DIR")
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "casprobe" / "lab"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child (tests start the lab from their own process) is not alive
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True


def _running_pid(folder: Path) -> int | None:
    try:
        pid = int((folder / "lab.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _pid_alive(pid) else None


def _log_tail(folder: Path, lines: int = 15) -> str:
    try:
        text = (folder / "lab.log").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def lab_up(folder: Path, config: LabConfig, wait_s: float = 45.0) -> Org:
    """Create the organisation in ``folder``, start the lab process and return once everything answers."""
    pid = _running_pid(folder)
    if pid is not None:
        raise LabError(f"a lab is already running in {folder} (pid {pid}); stop it first with 'casprobe lab down'")
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        raise LabError("HAProxy is not installed: the lab needs it as its load balancer (apt-get install -y haproxy)")
    org = build_org(config)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("events.jsonl", "control.sock", "lab.pid", "lab.log"):
        (folder / stale).unlink(missing_ok=True)
    org.save(folder / "org.json")
    issue_lab_pki(org, folder / "tls")
    book = generate_passwords(org, folder)
    with (folder / "lab.log").open("ab") as log:
        launcher = subprocess.run(
            [sys.executable, "-m", "casprobe.lab.daemon", "--dir", str(folder), "--detach"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            close_fds=True,
            timeout=30,
            check=False,
        )
    if launcher.returncode != 0:
        raise LabError(f"the lab process could not start (exit {launcher.returncode}):\n{_log_tail(folder)}")
    deadline = time.monotonic() + wait_s
    seen: int | None = None  # the lab removes lab.pid when it exits, so remember the pid once seen
    with LabClient(folder, timeout=5.0) as client:
        while True:
            pid = _running_pid(folder)
            seen = seen or pid
            if seen is not None and not _pid_alive(seen):
                raise LabError(f"the lab process exited while starting:\n{_log_tail(folder)}")
            try:
                if client.status().get("ready"):
                    break
            except LabNotRunning:
                pass
            if time.monotonic() > deadline:
                if seen is not None:
                    _stop_process(folder, seen)
                raise LabError(f"the lab did not become ready within {wait_s:.0f} s:\n{_log_tail(folder)}")
            time.sleep(0.1)
    write_profile(org, folder, book)
    return org


def _stop_process(folder: Path, pid: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _pid_alive(pid):
            break
        deadline = time.monotonic() + 5
    _kill_leftover_haproxy(folder)


def _kill_leftover_haproxy(folder: Path) -> None:
    """HAProxy is the lab's child; if the lab was killed hard, it may have outlived it."""
    try:
        pid = int((folder / "haproxy" / "haproxy.pid").read_text().strip())
    except (OSError, ValueError):
        return
    if _pid_alive(pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if b"haproxy" in cmdline:
            os.kill(pid, signal.SIGKILL)


def lab_down(folder: Path, timeout: float = 20.0) -> bool:
    """Stop the lab in ``folder``; returns False when none was running. Leaves no process behind."""
    pid = _running_pid(folder)
    if pid is None:
        _kill_leftover_haproxy(folder)
        (folder / "control.sock").unlink(missing_ok=True)
        return False
    try:
        with LabClient(folder, timeout=5.0) as client:
            client.shutdown()
    except LabError:
        pass
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(pid):
        _stop_process(folder, pid)
    _kill_leftover_haproxy(folder)
    return True


# -- click commands -------------------------------------------------------------------------------------------

pass_folder = click.make_pass_decorator(Path)


@click.group()
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The lab folder (default: $CASPROBE_LAB_DIR or ~/.local/state/casprobe/lab).",
)
@click.pass_context
def lab(ctx: click.Context, folder: Path | None) -> None:
    """A simulated Exchange organisation on loopback: mailbox servers in a DAG behind a real HAProxy."""
    ctx.obj = (folder or default_lab_dir()).absolute()


@lab.command("up")
@click.option("--servers", default=3, show_default=True, help="Number of mailbox servers (mb1, mb2, …).")
@click.option("--databases", default=0, help="Number of databases (default: one per server).")
@click.option("--lb", type=click.Choice(["l7", "l4"]), default="l7", show_default=True, help="HAProxy layout.")
@click.option("--port", type=int, default=None, help="HTTPS port (default 443 as root, else 8443).")
@click.option("--base-address", default="127.0.0.10", show_default=True, help="HAProxy's address; servers follow.")
@click.option(
    "--server-urls",
    multiple=True,
    metavar="SERVER|all",
    help="Servers whose Autodiscover hands out their own name instead of the namespace (repeatable).",
)
@click.option("--extended-protection", is_flag=True, help="Refuse NTLM without a matching channel binding.")
@click.option("--check-inter-ms", default=1000, show_default=True, help="HAProxy health-check interval.")
@click.option("--check-fall", default=2, show_default=True)
@click.option("--check-rise", default=2, show_default=True)
@click.option("--switchover-s", default=2.0, show_default=True, help="How long a database copy takes to move.")
@click.option("--failover-delay-s", default=3.0, show_default=True, help="How long the DAG takes to fail over.")
@click.option("--notification-wait-s", default=300.0, show_default=True, help="Longest NotificationWait hold.")
@click.option("--pending-period-ms", default=30000, show_default=True, help="X-PendingPeriod (MAPI keep-alives).")
@click.option("--delay-ms", default=0, show_default=True, help="Added before every answer (WAN latency stand-in).")
@pass_folder
def up_command(folder: Path, /, **opts: Any) -> None:
    """Start the lab and return once every server and HAProxy answer."""
    port = opts["port"] or (443 if os.geteuid() == 0 else 8443)
    servers = opts["servers"]
    names = [f"mb{i}" for i in range(1, servers + 1)]
    url_mode: dict[str, UrlMode] = {}
    for item in opts["server_urls"]:
        chosen = names if item == "all" else [item.lower().split(".")[0]]
        for name in chosen:
            if name not in names:
                known = ", ".join(names)
                raise click.BadParameter(f"no server {item!r} (servers: {known})", param_hint="--server-urls")
            url_mode[name] = "server"
    config = LabConfig(
        servers=servers,
        databases=opts["databases"],
        base_address=opts["base_address"],
        port=port,
        lb=opts["lb"],
        url_mode=url_mode,
        check_inter_ms=opts["check_inter_ms"],
        check_fall=opts["check_fall"],
        check_rise=opts["check_rise"],
        switchover_s=opts["switchover_s"],
        failover_delay_s=opts["failover_delay_s"],
        notification_wait_s=opts["notification_wait_s"],
        pending_period_ms=opts["pending_period_ms"],
        extended_protection=opts["extended_protection"],
        response_delay_ms=opts["delay_ms"],
    )
    started = time.monotonic()
    org = lab_up(folder, config)
    console = Console()
    console.print(
        f"[green]lab up[/] in {time.monotonic() - started:.1f} s: {len(org.servers)} servers, "
        f"{len(org.databases)} databases, {len(org.users)} users, HAProxy {config.lb} on "
        f"{org.lb_address}:{port} ({org.namespace}, {org.autodiscover})"
    )
    console.print(f"profile: {folder / 'profile.toml'}  (use it with --lab)")
    console.print(f"CA: {folder / 'tls' / 'ca.pem'}")
    console.print(f"mailboxes: {', '.join(u.smtp for u in org.users)}")
    console.print("next: casprobe lab status   (servers, copies, HAProxy's view; --show-passwords for passwords)")


def _client(folder: Path) -> LabClient:
    if _running_pid(folder) is None:
        raise LabNotRunning(f"no lab is running in {folder} (start one with 'casprobe lab up')")
    return LabClient(folder)


def _state(text: str) -> str:
    good = text in ("UP", "Active", "on", "no")  # everything else is worth a red
    return f"[green]{text}[/]" if good else f"[red]{text}[/]"


def _print_status(console: Console, status: dict[str, Any], org: Org, *, show_passwords: bool, folder: Path) -> None:
    servers = Table(title="Servers", title_justify="left")
    for column in ("server", "address", "power", "maintenance", "components", "URLs handed out"):
        servers.add_column(column)
    for name, info in status["servers"].items():
        comps = info["components"]
        offline = comps.get("ServerWideOffline", "?")
        servers.add_row(
            name,
            f"{info['address']}:{info['port']}",
            _state("on" if info["power"] == "on" else f"off ({info['power']})"),
            _state("yes" if info["maintenance"] else "no"),
            _state("Active") if offline == "Active" else _state("Offline"),
            "own name" if info["url_mode"] == "server" else "namespace",
        )
    console.print(servers)
    dbs = Table(title="Databases", title_justify="left")
    for column in ("database", "active on", "copies (preference order)", "mailboxes"):
        dbs.add_column(column)
    for name, info in status["databases"].items():
        users = ", ".join(u.alias for u in org.users if u.database == name)
        active = info["active"] or "[yellow](moving)[/]"
        dbs.add_row(name, active, ", ".join(info["copies"]), users)
    console.print(dbs)
    view: dict[str, dict[str, str]] = {}
    for key, state in status.get("haproxy", {}).items():
        backend, _, server = key.partition("/")
        view.setdefault(server, {})[backend.removeprefix("be_").replace("microsoft_server_activesync", "eas")] = state
    backends = sorted({b for states in view.values() for b in states})
    lb = Table(title=f"HAProxy's view ({org.config.lb})", title_justify="left")
    lb.add_column("server")
    for backend in backends:
        lb.add_column(backend)
    for server in sorted(view):
        lb.add_row(server, *(_state(view[server].get(b, "-")) for b in backends))
    console.print(lb)
    if show_passwords:
        book = PasswordBook(org, folder)
        pw = Table(title="Users", title_justify="left")
        for column in ("user", "smtp", "password"):
            pw.add_column(column)
        for user in org.users:
            pw.add_row(f"{org.netbios}\\{user.alias}", user.smtp, book.password(user.alias))
        console.print(pw)
    else:
        console.print(f"users: {', '.join(u.smtp for u in org.users)}")
        console.print("passwords: casprobe lab status --show-passwords")


@lab.command("status")
@click.option("--show-passwords", is_flag=True, help="Also print every user's password.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_folder
def status_command(folder: Path, show_passwords: bool, as_json: bool) -> None:
    """Servers, database copies, HAProxy's view and users."""
    with _client(folder) as client:
        status = client.status()
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    _print_status(Console(), status, Org.load(folder / "org.json"), show_passwords=show_passwords, folder=folder)


@lab.command("maintenance")
@click.argument("action", type=click.Choice(["start", "stop"]))
@click.argument("server")
@pass_folder
def maintenance_command(folder: Path, action: str, server: str) -> None:
    """Put SERVER into DAG maintenance (drain, move its databases, ServerWideOffline) or take it out."""
    with _client(folder) as client:
        result = client.maintenance(server, action)
    if action == "start":
        stranded = result.get("stranded") or []
        note = f"; databases left without another copy: {', '.join(stranded)}" if stranded else ""
        click.echo(f"{result['server']} is in maintenance{note}")
    else:
        click.echo(f"{result['server']} is out of maintenance (its databases stay where they are)")


@lab.command("power")
@click.argument("action", type=click.Choice(["off", "on"]))
@click.argument("server")
@click.option(
    "--mode",
    type=click.Choice(["refuse", "blackhole"]),
    default="refuse",
    show_default=True,
    help="refuse: connections are refused at once; blackhole: nothing answers (clients time out).",
)
@pass_folder
def power_command(folder: Path, action: str, server: str, mode: str) -> None:
    """Power SERVER off abruptly, or on again."""
    with _client(folder) as client:
        result = client.power(server, action, mode)
    if action == "off":
        dbs = result.get("databases_to_fail_over") or []
        extra = f"; the DAG will fail over {', '.join(dbs)}" if dbs else ""
        click.echo(f"{result['server']} is powered off ({mode}){extra}")
    else:
        click.echo(f"{result['server']} is powered on")


@lab.command("switchover")
@click.argument("database")
@click.option("--to", "target", required=True, help="The server to activate the database on.")
@pass_folder
def switchover_command(folder: Path, database: str, target: str) -> None:
    """Move the active copy of DATABASE to another server."""
    with _client(folder) as client:
        result = client.switchover(database, target)
    click.echo(f"{result['db']} is active on {result['active']}")


@lab.command("restart-lb")
@pass_folder
def restart_lb_command(folder: Path) -> None:
    """Restart HAProxy: every connection through the namespace is cut for a moment."""
    with _client(folder) as client:
        result = client.restart_lb()
    click.echo(f"HAProxy restarted (pid {result['previous_pid']} -> {result['pid']})")


@lab.command("events")
@click.option("--since", default=0, help="Only events after this sequence number.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_folder
def events_command(folder: Path, since: int, as_json: bool) -> None:
    """The lab's event log (the ground truth of what happened when)."""
    from casprobe.lab.events import read_events

    for event in read_events(folder / "events.jsonl"):
        if event.seq <= since:
            continue
        if as_json:
            click.echo(json.dumps(event.to_json()))
            continue
        stamp = time.strftime("%H:%M:%S", time.localtime(event.wall)) + f".{int(event.wall % 1 * 1000):03d}"
        fields = " ".join(f"{k}={v}" for k, v in event.data.items())
        click.echo(f"{event.seq:5d} {stamp} {event.kind:<18} {fields}")


@lab.command("down")
@pass_folder
def down_command(folder: Path) -> None:
    """Stop the lab (servers, HAProxy, control API)."""
    if lab_down(folder):
        click.echo(f"lab in {folder} stopped")
    else:
        click.echo(f"no lab was running in {folder}")
