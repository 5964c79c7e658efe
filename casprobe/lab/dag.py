"""The database availability group: which member holds the active copy of each database, and moving it.

A move (switchover, maintenance, failover) takes ``switchover_s``: from its start the database has no mounted
copy (clients see the store as unavailable), and its *mount generation* is bumped, so that every MAPI session
context opened against the old copy is dead (X-ResponseCode 10 on its next request, [MS-OXCMAPIHTTP] 3.2.5.6).
At the end the target copy is mounted and the database serves again through any front end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from casprobe.errors import LabError
from casprobe.lab.events import EventLog
from casprobe.lab.org import Org

__all__ = ["Dag"]


class Dag:
    """Active and passive copies of every database, and the activation policy of every member."""

    def __init__(
        self,
        org: Org,
        events: EventLog,
        *,
        is_up: Callable[[str], bool],
        on_change: Callable[[str], None],
    ) -> None:
        self._org = org
        self._events = events
        self._is_up = is_up
        self._on_change = on_change
        self._active: dict[str, str | None] = {db.name: db.copies[0] for db in org.databases}
        self._generation: dict[str, int] = {db.name: 1 for db in org.databases}
        self._blocked: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    def active_server(self, db: str) -> str | None:
        """The member whose copy is mounted, or None while the database is moving or not mounted."""
        return self._active[db]

    def generation(self, db: str) -> int:
        """Bumped at every move: session contexts of an older generation are dead."""
        return self._generation[db]

    def activation_blocked(self, server: str) -> bool:
        return server in self._blocked

    def set_activation_blocked(self, server: str, blocked: bool) -> None:
        if blocked:
            self._blocked.add(server)
        else:
            self._blocked.discard(server)
        self._events.record("copy.activation", server=server, blocked=blocked)

    def databases_active_on(self, server: str) -> list[str]:
        return [db for db, active in self._active.items() if active == server]

    def pick_target(self, db: str, exclude: set[str]) -> str | None:
        """The first copy in activation preference order that is up, not excluded and not blocked."""
        for server in self._org.database(db).copies:
            if server in exclude or server in self._blocked or not self._is_up(server):
                continue
            return server
        return None

    def _lock(self, db: str) -> asyncio.Lock:
        return self._locks.setdefault(db, asyncio.Lock())

    async def move(self, db: str, target: str, reason: str, *, duration_s: float | None = None) -> None:
        """Move the active copy of ``db`` to ``target``; returns once it is mounted there."""
        database = self._org.database(db)
        if target not in database.copies:
            raise LabError(f"{database.name} has no copy on {target} (copies: {', '.join(database.copies)})")
        if not self._is_up(target):
            raise LabError(f"cannot activate {database.name} on {target}: the server is powered off")
        async with self._lock(database.name):
            source = self._active[database.name]
            if source == target:
                return
            self._events.record("copy.move.start", db=database.name, source=source, target=target, reason=reason)
            self._active[database.name] = None
            self._generation[database.name] += 1
            self._on_change(database.name)
            await asyncio.sleep(self._org.config.switchover_s if duration_s is None else duration_s)
            self._active[database.name] = target
            self._events.record("copy.move.end", db=database.name, source=source, target=target, reason=reason)
            self._on_change(database.name)

    async def move_all_off(self, server: str, reason: str) -> list[str]:
        """Move every database active on ``server`` to its next copy; returns the databases left without one."""
        stranded = []
        for db in self.databases_active_on(server):
            target = self.pick_target(db, exclude={server})
            if target is None:
                stranded.append(db)
                continue
            await self.move(db, target, reason)
        return stranded

    def snapshot(self) -> dict[str, dict[str, object]]:
        return {
            db.name: {
                "active": self._active[db.name],
                "copies": list(db.copies),
                "generation": self._generation[db.name],
            }
            for db in self._org.databases
        }
