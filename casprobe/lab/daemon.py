"""The lab process: every simulated server, HAProxy as a child, and the control API, in one event loop.

Started by ``casprobe lab up`` as ``python -m casprobe.lab.daemon --dir LABDIR`` (detached, output to
``LABDIR/lab.log``); stopped by ``casprobe lab down`` (control API), SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import uvicorn

from casprobe.errors import CasprobeError
from casprobe.lab.control import build_control_app
from casprobe.lab.events import EventLog
from casprobe.lab.haproxy import LbBackendServer, LbSettings
from casprobe.lab.haproxy_runtime import HaproxyProcess, StateChange, StateWatcher
from casprobe.lab.host import ServerHost
from casprobe.lab.ntlm import AuthConfig, AuthMiddleware
from casprobe.lab.ops import LabOperations
from casprobe.lab.org import Org
from casprobe.lab.pki import cert_der_from_pem, load_lab_pki
from casprobe.lab.secrets import PasswordBook
from casprobe.lab.servers import Gate, RouteFactory, build_server_app, is_anonymous_path
from casprobe.lab.world import LabWorld

__all__ = ["main", "run_lab"]

log = logging.getLogger("casprobe.lab")


def _route_factories() -> list[RouteFactory]:
    from casprobe.lab.routes import autodiscover, ews, mapi

    return [autodiscover.routes, mapi.routes, ews.routes]


async def run_lab(folder: Path) -> None:
    """Run the lab described by ``folder/org.json`` until asked to stop."""
    org = Org.load(folder / "org.json")
    pki = load_lab_pki(org, folder / "tls")
    book = PasswordBook(org, folder)
    os.environ["NTLM_USER_FILE"] = str(book.ntlm_user_file)
    events = EventLog(folder / "events.jsonl")
    world = LabWorld(org, events)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    hosts: dict[str, ServerHost] = {}
    factories = _route_factories()
    for server in org.servers:
        cert, key = pki.server_cert[server.name]
        gate = Gate()
        auth_config = AuthConfig(
            offered=org.config.auth_offered,
            extended_protection=org.config.extended_protection,
            realm=server.fqdn,
            connection_ttl_s=130.0,  # a little above the keep-alive timeout (IIS: 120 s)
        )
        cert_der = cert_der_from_pem(cert)
        auth_layers: list[AuthMiddleware] = []

        def wrap(
            app: Any,
            auth_config: AuthConfig = auth_config,
            cert_der: bytes = cert_der,
            layers: list[AuthMiddleware] = auth_layers,
        ) -> Any:
            layer = AuthMiddleware(
                app,
                auth_config,
                server_cert_der=cert_der,
                verify_basic=book.verify_basic,
                is_anonymous=is_anonymous_path,
            )
            layers.append(layer)
            return layer

        def forget(key: Hashable, layers: list[AuthMiddleware] = auth_layers) -> None:
            for layer in layers:
                layer.forget_connection(key)

        app = build_server_app(world, server.name, gate=gate, route_factories=factories, auth=wrap)
        hosts[server.name] = ServerHost(
            server.name, server.address, server.port, app, cert, key, gate, on_connection=forget
        )

    (folder / "haproxy").mkdir(exist_ok=True)
    lb = HaproxyProcess(
        LbSettings(
            mode=org.config.lb,
            bind_address=org.lb_address,
            port=org.config.port,
            namespace_host=org.namespace,
            inter_ms=org.config.check_inter_ms,
            fall=org.config.check_fall,
            rise=org.config.check_rise,
            ca_file=pki.ca_file,
            lb_pem=pki.lb_pem,
            run_dir=folder / "haproxy",
        ),
        [LbBackendServer(s.name, s.fqdn, s.address, s.port) for s in org.servers],
    )
    ops = LabOperations(world, hosts, lb)
    lb_view: dict[str, str] = {}

    def on_lb_change(change: StateChange) -> None:
        lb_view[f"{change.backend}/{change.server}"] = change.new
        events.record(
            "haproxy.server",
            at=change.at,
            backend=change.backend,
            server=change.server,
            state=change.new,
            previous=change.old,
            detail=change.detail,
            source=change.source,
        )

    def ready() -> bool:
        return bool(lb_view) and all(state == "UP" for key, state in lb_view.items())

    control = uvicorn.Server(
        uvicorn.Config(
            build_control_app(ops, lb_status=lambda: dict(lb_view), ready=ready, shutdown=stop),
            uds=str(folder / "control.sock"),
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
    )
    control.config.load()
    control.lifespan = control.config.lifespan_class(control.config)
    poller: asyncio.Task[None] | None = None
    pid_writer: asyncio.Task[None] | None = None
    started: list[ServerHost] = []
    try:
        for host in hosts.values():
            await host.start()
            started.append(host)
        await lb.start(15.0)
        events.record("haproxy.start", pid=lb.pid, mode=org.config.lb)
        pid_writer = asyncio.create_task(_keep_pid_file(lb, folder / "haproxy" / "haproxy.pid"))
        poller = asyncio.create_task(StateWatcher(lb, on_lb_change, interval_s=0.05).run())
        (folder / "control.sock").unlink(missing_ok=True)
        await control.startup()
        control_loop = asyncio.create_task(control.main_loop())
        events.record("lab.up", servers=list(org.server_names), pid=os.getpid())
        log.warning("lab up: %d servers, HAProxy pid %s", len(hosts), lb.pid)
        await stop.wait()
        control.should_exit = True
        await control_loop
        await control.shutdown()
    finally:
        await ops.shutdown()
        if pid_writer is not None:
            pid_writer.cancel()
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        await lb.stop()
        lb.kill()
        events.record("haproxy.stop")
        for host in started:
            await host.stop()
        events.record("lab.down")
        events.close()
        for name in ("lab.pid", "control.sock"):
            (folder / name).unlink(missing_ok=True)


async def _keep_pid_file(lb: HaproxyProcess, path: Path) -> None:
    """HAProxy's pid in a file, kept current across restarts, so that `lab down` can kill a leftover."""
    written = None
    while True:
        if lb.pid is not None and lb.pid != written:
            path.write_text(f"{lb.pid}\n")
            written = lb.pid
        await asyncio.sleep(0.2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m casprobe.lab.daemon")
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--detach", action="store_true", help="fork into the background and return at once")
    args = parser.parse_args(argv)
    if args.detach and os.fork() > 0:
        os._exit(0)  # the parent returns at once; the lab is reparented to init (no zombie, no waiting parent)
    if args.detach:
        os.setsid()
    (args.dir / "lab.pid").write_text(f"{os.getpid()}\n")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run_lab(args.dir))
    except CasprobeError as exc:
        print(f"lab failed: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
