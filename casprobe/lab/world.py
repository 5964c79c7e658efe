"""The running lab's mutable state, as every route module sees it.

One :class:`LabWorld` per lab process. Front ends are stateless: whichever server a request reaches, it asks the
world where the mailbox's database is active (:meth:`LabWorld.backend_for`) and serves from there; session state
(MAPI contexts) lives with the active copy, keyed by the database's mount generation.

Route modules get ``(world, server_name)`` and use:

- ``world.org`` — users (``world.org.find_user(principal_or_smtp_or_dn)``), servers, databases, names;
- ``world.user_for_request(request)`` — the authenticated user (the auth middleware's principal), or None;
- ``world.backend_for(user)`` — a :class:`Backend` (server, generation) or None when the database has no reachable
  mounted copy (moving, or its server powered off before failover);
- ``world.session_valid(user, generation)`` — whether a context opened at that generation is still alive;
- ``world.base_url(server_name)`` — ``https://host[:port]`` that Autodiscover hands out from that server (the
  namespace or the server's own name, per the lab's URL mode);
- ``world.backend_headers(backend)`` — ``X-CalculatedBETarget`` / ``X-BEServer`` to add to a response;
- ``world.mail.mailbox(smtp)`` — folders and messages; ``world.deliver(...)`` to send mail (wakes waiters);
- ``await world.wait_for_change(user, since, timeout)`` — for NotificationWait: returns when the user's mailbox
  changed after ``since`` (a value of ``world.change_counter(user)``) or the user's database moved, else on timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from casprobe.lab.components import ComponentStates
from casprobe.lab.dag import Dag
from casprobe.lab.events import EventLog
from casprobe.lab.mailstore import MailStore, Message
from casprobe.lab.org import Org, User

__all__ = ["Backend", "LabWorld", "PowerState", "RequestLike"]

PowerState = Literal["on", "refuse", "blackhole"]


class RequestLike(Protocol):
    """What :meth:`LabWorld.user_for_request` needs of a Starlette request."""

    @property
    def scope(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Backend:
    """Where a mailbox is served from right now.

    Attributes:
        server: the member holding the mounted active copy.
        generation: the database's mount generation (session contexts of another generation are dead).
        database: the database name.
    """

    server: str
    generation: int
    database: str


class LabWorld:
    """Everything that changes while the lab runs."""

    def __init__(self, org: Org, events: EventLog) -> None:
        self.org = org
        self.config = org.config
        self.events = events
        self.components: dict[str, ComponentStates] = {s.name: ComponentStates() for s in org.servers}
        self.power: dict[str, PowerState] = {s.name: "on" for s in org.servers}
        self.maintenance: set[str] = set()
        self.mail = MailStore()
        self._changes: dict[str, int] = {}
        self._waiters: set[asyncio.Event] = set()
        self.dag = Dag(org, events, is_up=self.is_up, on_change=self._database_changed)

    # -- servers ---------------------------------------------------------------------------------------------
    def is_up(self, server: str) -> bool:
        return self.power[server] == "on"

    def vdir_active(self, server: str, vdir: str) -> bool:
        """Whether ``server`` serves ``/<vdir>/`` now (components; power is the socket layer's business)."""
        return self.components[server].vdir_active(vdir)

    # -- users and backends ----------------------------------------------------------------------------------
    def user_for_request(self, request: RequestLike) -> User | None:
        state = request.scope.get("state")
        principal = state.get("user") if isinstance(state, dict) else None
        return self.org.find_user(principal) if isinstance(principal, str) else None

    def backend_for(self, user: User) -> Backend | None:
        active = self.dag.active_server(user.database)
        if active is None or not self.is_up(active):
            return None
        return Backend(active, self.dag.generation(user.database), user.database)

    def session_valid(self, user: User, generation: int) -> bool:
        backend = self.backend_for(user)
        return backend is not None and backend.generation == generation

    def backend_headers(self, backend: Backend | None) -> dict[str, str]:
        if backend is None:
            return {}
        server = self.org.server(backend.server)
        return {"X-CalculatedBETarget": server.fqdn, "X-BEServer": server.netbios}

    def base_url(self, server: str) -> str:
        """The https origin Autodiscover hands out when asked through ``server``."""
        host = self.org.namespace if self.org.url_mode(server) == "namespace" else self.org.server(server).fqdn
        port = self.config.port
        return f"https://{host}" if port == 443 else f"https://{host}:{port}"

    # -- mail and change notification -----------------------------------------------------------------------
    def change_counter(self, user: User) -> int:
        return self._changes.get(user.alias, 0)

    def _bump(self, aliases: list[str]) -> None:
        for alias in aliases:
            self._changes[alias] = self._changes.get(alias, 0) + 1
        for waiter in self._waiters:
            waiter.set()

    def _database_changed(self, db: str) -> None:
        self._bump([u.alias for u in self.org.users if u.database == db])

    def deliver(self, sender: User, subject: str, body: str, to: tuple[str, ...], save_copy: bool) -> Message | None:
        """Send a message: a copy in the sender's Sent Items, one in each lab recipient's Inbox."""
        sent = None
        if save_copy:
            sent = self.mail.mailbox(sender.smtp).add("sentitems", subject, body, sender.smtp, to)
        woken = []
        for address in to:
            rcpt = self.org.find_user(address)
            if rcpt is not None:
                self.mail.mailbox(rcpt.smtp).add("inbox", subject, body, sender.smtp, to)
                woken.append(rcpt.alias)
        self._bump(woken)
        return sent

    async def wait_for_change(self, user: User, since: int, timeout: float) -> bool:
        """Wait until ``change_counter(user)`` passes ``since``; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.change_counter(user) <= since:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            waiter = asyncio.Event()
            self._waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter.wait(), remaining)
            except TimeoutError:
                return self.change_counter(user) > since
            finally:
                self._waiters.discard(waiter)
        return True
