"""MAPI/HTTP session contexts of the lab, shared by every server of one :class:`LabWorld`.

Follows [MS-OXCMAPIHTTP] v20181211 3.2.5.1 (the server stores the authenticated identity with the Session
Context; one request at a time except NotificationWait; sequence cookie), 3.2.5.6 (reconnect destroys the old
context; expired, unknown or "not valid for the server in which the mailbox currently resides" → Context Not
Found) and 3.2.5.5 / 3.2.6 (idle timer advertised in X-ExpirationInfo).

Front ends are stateless: a context lives "with the active copy" of the mailbox's database, so every server of
the world sees the same :class:`SessionStore` (:func:`store_for`), and a context dies when the database's mount
generation changes (:meth:`LabWorld.session_valid`).

Lab choices where the spec leaves the server free:

- Cookie names ``MapiContext`` and ``MapiSequence`` (the spec's examples; names are implementation-specific).
- The context cookie is ``base64url(id ‖ HMAC-SHA256(store key, id)[:16])``: a value that fails the MAC is
  *garbage* (X-ResponseCode 6, Invalid Context Cookie), a well-formed one whose context is gone (Disconnect,
  expiry, database move, eviction) is *not found* (10) — without keeping tombstones.
- A missing MapiContext cookie, or a missing MapiSequence cookie where the sequence is checked, is 13.
- The sequence is checked on every request but NotificationWait (which may overlap an Execute that rotates it).
- A second NotificationWait on a context replaces the one in flight (that one ends at once, EventPending 0).
- At most :data:`MAX_SESSIONS` contexts per world; creating one more evicts the least recently used idle one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from casprobe.lab.org import User
from casprobe.lab.world import Backend, LabWorld
from casprobe.protocols.mapihttp import ResponseCode

__all__ = [
    "CONTEXT_COOKIE",
    "MAX_SESSIONS",
    "SEQUENCE_COOKIE",
    "Claim",
    "Endpoint",
    "Refusal",
    "Session",
    "SessionStore",
    "store_for",
]

CONTEXT_COOKIE = "MapiContext"
SEQUENCE_COOKIE = "MapiSequence"
MAX_SESSIONS = 4096
_ID_BYTES = 16
_MAC_BYTES = 16
_MAX_COOKIE_LEN = 128


class Endpoint(StrEnum):
    """The two MAPI/HTTP endpoints; the value is the path segment under ``/mapi/``."""

    EMSMDB = "emsmdb"
    NSPI = "nspi"

    @property
    def cookie_path(self) -> str:
        return f"/mapi/{self.value}"


@dataclass(frozen=True, slots=True)
class Session:
    """What a context was opened with (immutable); its changing state stays inside the store.

    Attributes:
        context_id: the store's key (hex).
        endpoint: EMSMDB (Connect) or NSPI (Bind).
        user: the mailbox the context serves (= the authenticated user in this lab).
        principal: the authenticated principal that opened it (case-insensitive comparison).
        database, generation: the mailbox's database and its mount generation at Connect.
        backend: the server that held the active copy at Connect.
    """

    context_id: str
    endpoint: Endpoint
    user: User
    principal: str
    database: str
    generation: int
    backend: str


@dataclass(frozen=True, slots=True)
class Claim:
    """A request admitted on a context; give it back with :meth:`SessionStore.release`."""

    session: Session
    backend: Backend
    exclusive: bool


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request may not use the context its cookies name: an X-ResponseCode, or an HTTP 503."""

    response_code: int
    reason: str
    http_status: int = 200


class _State:
    __slots__ = ("busy", "last_used", "next_handle", "seen_changes", "sequence", "session", "wake")

    def __init__(self, session: Session, sequence: str, now: float, seen_changes: int) -> None:
        self.session = session
        self.sequence = sequence
        self.last_used = now
        self.busy = False
        self.next_handle = 1
        self.seen_changes = seen_changes
        self.wake: asyncio.Event | None = None


class SessionStore:
    """Every MAPI/HTTP context of one lab world (EMSMDB and NSPI)."""

    def __init__(
        self,
        world: LabWorld,
        *,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._world = world
        self._key = secrets.token_bytes(32)
        self._max = max_sessions
        self._clock = clock
        self._states: OrderedDict[str, _State] = OrderedDict()

    @property
    def expiration_s(self) -> float:
        return self._world.config.expiration_ms / 1000.0

    def __len__(self) -> int:
        return len(self._states)

    # -- cookies ---------------------------------------------------------------------------------------------
    def _mac(self, raw_id: bytes) -> bytes:
        return hmac.new(self._key, raw_id, hashlib.sha256).digest()[:_MAC_BYTES]

    def context_cookie(self, session: Session) -> str:
        """The MapiContext cookie value of ``session``."""
        raw_id = bytes.fromhex(session.context_id)
        return base64.urlsafe_b64encode(raw_id + self._mac(raw_id)).decode("ascii").rstrip("=")

    def context_id_of(self, cookie: str) -> str | None:
        """The context id a MapiContext value names, or None when the value is not one of ours (garbage)."""
        if not 0 < len(cookie) <= _MAX_COOKIE_LEN or not cookie.isascii():
            return None
        try:
            raw = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) != _ID_BYTES + _MAC_BYTES:
            return None
        raw_id, mac = raw[:_ID_BYTES], raw[_ID_BYTES:]
        return raw_id.hex() if hmac.compare_digest(mac, self._mac(raw_id)) else None

    # -- life cycle ------------------------------------------------------------------------------------------
    def create(self, endpoint: Endpoint, user: User, principal: str, backend: Backend) -> tuple[Session, str]:
        """Open a context; returns it and its first sequence cookie value."""
        now = self._clock()
        self._sweep(now)
        session = Session(
            secrets.token_bytes(_ID_BYTES).hex(),
            endpoint,
            user,
            principal,
            backend.database,
            backend.generation,
            backend.server,
        )
        sequence = secrets.token_urlsafe(18)
        self._states[session.context_id] = _State(session, sequence, now, self._world.change_counter(user))
        return session, sequence

    def destroy(self, context_id: str) -> bool:
        """Forget a context (Disconnect, Unbind, reconnect); a NotificationWait on it ends promptly."""
        state = self._states.pop(context_id, None)
        if state is None:
            return False
        if state.wake is not None:
            state.wake.set()
        return True

    def _expired(self, state: _State, now: float) -> bool:
        idle = not state.busy and state.wake is None
        return idle and now - state.last_used > self.expiration_s

    def _sweep(self, now: float) -> None:
        for cid in [cid for cid, st in self._states.items() if self._expired(st, now)]:
            self.destroy(cid)
        while len(self._states) >= self._max:
            victim = next((cid for cid, st in self._states.items() if not st.busy and st.wake is None), None)
            if victim is None:
                victim = next(iter(self._states))
            self.destroy(victim)

    # -- admission -------------------------------------------------------------------------------------------
    def claim(
        self,
        endpoint: Endpoint,
        cookies: Mapping[str, str],
        principal: str,
        mailbox: User,
        *,
        exclusive: bool,
        check_sequence: bool,
    ) -> Claim | Refusal:
        """Admit a request on the context named by ``cookies`` (see the module docstring for the codes)."""
        raw_context = cookies.get(CONTEXT_COOKIE)
        raw_sequence = cookies.get(SEQUENCE_COOKIE)
        if raw_context is None:
            what = "no session cookies" if raw_sequence is None else f"no {CONTEXT_COOKIE} cookie"
            return Refusal(ResponseCode.MISSING_COOKIE, what)
        context_id = self.context_id_of(raw_context)
        if context_id is None:
            return Refusal(ResponseCode.INVALID_CONTEXT_COOKIE, f"{CONTEXT_COOKIE} is not a session context cookie")
        state = self._states.get(context_id)
        now = self._clock()
        if state is None:
            return Refusal(ResponseCode.CONTEXT_NOT_FOUND, "session context not found (disconnected or expired)")
        session = state.session
        if self._expired(state, now):
            self.destroy(context_id)
            return Refusal(ResponseCode.CONTEXT_NOT_FOUND, "session context expired")
        if session.endpoint is not endpoint or session.user != mailbox:
            return Refusal(ResponseCode.CONTEXT_NOT_FOUND, "session context belongs to another endpoint or mailbox")
        if session.principal.casefold() != principal.casefold():
            return Refusal(ResponseCode.CONTEXT_NOT_FOUND, "session context belongs to another identity")
        backend = self._world.backend_for(session.user)
        if backend is None:
            if self._world.dag.generation(session.database) == session.generation:
                return Refusal(0, f"the mailbox server {session.backend} cannot be reached", http_status=503)
            self.destroy(context_id)
            return Refusal(ResponseCode.CONTEXT_NOT_FOUND, "the mailbox database is moving")
        if backend.generation != session.generation:
            self.destroy(context_id)
            return Refusal(ResponseCode.CONTEXT_NOT_FOUND, "the mailbox database moved to another server")
        if check_sequence:
            if raw_sequence is None:
                return Refusal(ResponseCode.MISSING_COOKIE, f"no {SEQUENCE_COOKIE} cookie")
            if not hmac.compare_digest(raw_sequence.encode(), state.sequence.encode()):
                return Refusal(ResponseCode.INVALID_SEQUENCE, "out-of-sequence request")
        if exclusive:
            if state.busy:
                return Refusal(ResponseCode.INVALID_SEQUENCE, "another request is in progress on this context")
            state.busy = True
        state.last_used = now
        self._states.move_to_end(context_id)
        return Claim(session, backend, exclusive)

    def release(self, claim: Claim) -> None:
        """End a request admitted by :meth:`claim` (refreshes the idle timer)."""
        state = self._states.get(claim.session.context_id)
        if state is None:
            return
        if claim.exclusive:
            state.busy = False
        state.last_used = self._clock()

    def rotate_sequence(self, session: Session) -> str:
        """A new sequence cookie value (Connect/Execute); the old one is refused from now on."""
        state = self._states.get(session.context_id)
        sequence = secrets.token_urlsafe(18)
        if state is not None:
            state.sequence = sequence
        return sequence

    def alive(self, session: Session) -> bool:
        """The context still exists and its database has not moved."""
        return session.context_id in self._states and self._world.dag.generation(session.database) == (
            session.generation
        )

    def allocate_handle(self, session: Session) -> int:
        """A new Server object handle for this context (RopLogon)."""
        state = self._states.get(session.context_id)
        if state is None:
            return 0xFFFFFFFF
        handle = state.next_handle
        state.next_handle = (handle + 1) % 0xFFFFFFFF or 1
        return handle

    # -- notifications ---------------------------------------------------------------------------------------
    def seen_changes(self, session: Session) -> int:
        """The mailbox change counter the client has collected up to (its last Execute)."""
        state = self._states.get(session.context_id)
        return state.seen_changes if state is not None else self._world.change_counter(session.user)

    def mark_seen(self, session: Session) -> None:
        """An Execute collects pending events: NotificationWait waits for changes after this point."""
        state = self._states.get(session.context_id)
        if state is not None:
            state.seen_changes = self._world.change_counter(session.user)

    def begin_wait(self, session: Session) -> asyncio.Event:
        """Register a NotificationWait; a previous one on the context is told to end."""
        wake = asyncio.Event()
        state = self._states.get(session.context_id)
        if state is None:
            wake.set()
            return wake
        if state.wake is not None:
            state.wake.set()
        state.wake = wake
        return wake

    def end_wait(self, session: Session, wake: asyncio.Event) -> None:
        state = self._states.get(session.context_id)
        if state is not None and state.wake is wake:
            state.wake = None
            state.last_used = self._clock()


_STORES: weakref.WeakKeyDictionary[LabWorld, SessionStore] = weakref.WeakKeyDictionary()


def store_for(world: LabWorld) -> SessionStore:
    """The session store of ``world``, created on first use and shared by all of its servers."""
    store = _STORES.get(world)
    if store is None:
        store = _STORES[world] = SessionStore(world)
    return store
