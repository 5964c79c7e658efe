"""Operations on a running lab: DAG maintenance, power, switchover, status.

Maintenance follows the documented order for Exchange 2016/2019 DAG members (docs manage-dags.md, "Performing
maintenance on DAG members"; protocols.md 4.3):

enter: HubTransport Draining → activation blocked and active copies moved to other members
(StartDagServerMaintenance.ps1) → ServerWideOffline Inactive (health checks turn 503, the load balancer drains it);
leave, in reverse: ServerWideOffline Active → activation unblocked (StopDagServerMaintenance.ps1) → HubTransport
Active. Databases stay where they were moved, as in Exchange until a rebalance (``lab switchover`` moves them back).

Power off leaves the server's active copies stranded until the DAG notices (``failover_delay_s``) and fails them
over to the next copy; power on does not move anything back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from casprobe.errors import LabError
from casprobe.lab.haproxy_runtime import HaproxyProcess
from casprobe.lab.host import ServerHost
from casprobe.lab.world import LabWorld

__all__ = ["LabOperations"]

log = logging.getLogger(__name__)


class LabOperations:
    """What ``casprobe lab maintenance|power|switchover`` do, run inside the lab process."""

    def __init__(self, world: LabWorld, hosts: dict[str, ServerHost], lb: HaproxyProcess | None = None) -> None:
        self.world = world
        self.hosts = hosts
        self.lb = lb
        self._busy: set[str] = set()
        self._failovers: dict[str, asyncio.Task[None]] = {}

    def _server(self, name: str) -> str:
        return self.world.org.server(name).name

    def _claim(self, server: str) -> None:
        if server in self._busy:
            raise LabError(f"an operation on {server} is already under way")
        self._busy.add(server)

    def _step(self, server: str, step: str, **data: Any) -> None:
        self.world.events.record("maintenance.step", server=server, step=step, **data)

    async def maintenance_start(self, name: str) -> dict[str, Any]:
        server = self._server(name)
        if server in self.world.maintenance:
            raise LabError(f"{server} is already in maintenance")
        if not self.world.is_up(server):
            raise LabError(f"{server} is powered off")
        self._claim(server)
        try:
            events, states = self.world.events, self.world.components[server]
            events.record("maintenance.start", server=server)
            self.world.maintenance.add(server)
            states.set("HubTransport", "Draining")
            events.record("component.state", server=server, component="HubTransport", state="Draining")
            self._step(server, "StartDagServerMaintenance")
            self.world.dag.set_activation_blocked(server, True)
            stranded = await self.world.dag.move_all_off(server, "maintenance")
            if stranded:
                self._step(server, "databases-not-moved", databases=stranded)
            states.set("ServerWideOffline", "Inactive")
            events.record("component.state", server=server, component="ServerWideOffline", state="Inactive")
            events.record("maintenance.active", server=server, stranded=stranded)
            return {"server": server, "stranded": stranded}
        finally:
            self._busy.discard(server)

    async def maintenance_stop(self, name: str) -> dict[str, Any]:
        server = self._server(name)
        if server not in self.world.maintenance:
            raise LabError(f"{server} is not in maintenance")
        self._claim(server)
        try:
            events, states = self.world.events, self.world.components[server]
            states.set("ServerWideOffline", "Active")
            events.record("component.state", server=server, component="ServerWideOffline", state="Active")
            self._step(server, "StopDagServerMaintenance")
            self.world.dag.set_activation_blocked(server, False)
            states.set("HubTransport", "Active")
            events.record("component.state", server=server, component="HubTransport", state="Active")
            self.world.maintenance.discard(server)
            events.record("maintenance.end", server=server)
            return {"server": server}
        finally:
            self._busy.discard(server)

    async def power_off(self, name: str, mode: str) -> dict[str, Any]:
        server = self._server(name)
        if mode not in ("refuse", "blackhole"):
            raise LabError(f"unknown power-off mode {mode!r}: use refuse or blackhole")
        self._claim(server)
        try:
            at = time.time()  # the moment the sockets go; HAProxy may notice before power_off returns
            await self.hosts[server].power_off(mode)
            self.world.power[server] = "refuse" if mode == "refuse" else "blackhole"
            self.world.events.record("power.off", at=at, server=server, mode=mode)
            stranded = self.world.dag.databases_active_on(server)
            if stranded:
                self._failovers[server] = asyncio.create_task(self._failover(server))
            return {"server": server, "mode": mode, "databases_to_fail_over": stranded}
        finally:
            self._busy.discard(server)

    async def _failover(self, server: str) -> None:
        await asyncio.sleep(self.world.config.failover_delay_s)
        if self.world.is_up(server):
            return
        for db in self.world.dag.databases_active_on(server):
            target = self.world.dag.pick_target(db, exclude={server})
            if target is None:
                self.world.events.record("copy.failover.failed", db=db, server=server, reason="no healthy copy")
                continue
            try:
                await self.world.dag.move(db, target, "failover")
            except LabError as exc:
                self.world.events.record("copy.failover.failed", db=db, server=server, reason=str(exc))

    async def power_on(self, name: str) -> dict[str, Any]:
        server = self._server(name)
        self._claim(server)
        try:
            await self.hosts[server].power_on()
            self.world.power[server] = "on"
            self.world.events.record("power.on", server=server)
            return {"server": server}
        finally:
            self._busy.discard(server)

    async def switchover(self, db: str, target: str) -> dict[str, Any]:
        database = self.world.org.database(db)
        to = self._server(target)
        if self.world.dag.activation_blocked(to):
            raise LabError(f"activation of copies on {to} is blocked (it is in maintenance)")
        await self.world.dag.move(database.name, to, "switchover")
        return {"db": database.name, "active": to}

    async def restart_lb(self) -> dict[str, Any]:
        """Restart HAProxy (stop, start with the same configuration): every connection through the namespace is
        cut, and for a moment nothing listens on the namespace address."""
        if self.lb is None:
            raise LabError("this lab has no load balancer to restart")
        if "haproxy" in self._busy:
            raise LabError("HAProxy is already restarting")
        self._busy.add("haproxy")
        try:
            at = time.time()
            old = self.lb.pid
            await self.lb.restart()
            self.world.events.record("haproxy.restart", at=at, pid=self.lb.pid, previous_pid=old)
            return {"pid": self.lb.pid, "previous_pid": old}
        finally:
            self._busy.discard("haproxy")

    async def shutdown(self) -> None:
        for task in self._failovers.values():
            task.cancel()

    def status(self) -> dict[str, Any]:
        world = self.world
        return {
            "servers": {
                s.name: {
                    "fqdn": s.fqdn,
                    "address": s.address,
                    "port": s.port,
                    "power": world.power[s.name],
                    "maintenance": s.name in world.maintenance,
                    "activation_blocked": world.dag.activation_blocked(s.name),
                    "url_mode": world.org.url_mode(s.name),
                    "components": {
                        c: v
                        for c, v in world.components[s.name].snapshot().items()
                        if c in ("ServerWideOffline", "HubTransport", "MapiProxy", "EwsProxy", "AutoDiscoverProxy")
                    },
                }
                for s in world.org.servers
            },
            "databases": world.dag.snapshot(),
            "users": [{"smtp": u.smtp, "database": u.database} for u in world.org.users],
        }
