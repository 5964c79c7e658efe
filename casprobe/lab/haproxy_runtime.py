"""Run the lab's HAProxy and follow its servers' states (Debian HAProxy 2.6).

* :class:`HaproxyProcess` runs ``haproxy -f <run_dir>/haproxy.cfg -db`` as a foreground child in its own
  process group, output appended to ``<run_dir>/haproxy.log``; start validates with ``haproxy -c`` and fails
  fast (with the log tail) when the process exits, e.g. on a bind error.
* :class:`RuntimeClient` speaks the runtime API over the AF_UNIX stats socket (HAProxy ``management.txt`` §9.3:
  one command per connection, the answer ends at EOF): ``show stat`` for states, ``set server <b>/<s> state
  ready|drain|maint`` for maintenance scripting.
* :class:`StateWatcher` polls ``show stat`` and dates each transition with HAProxy's own log line
  ("Server be_mapi/mb1 is DOWN, reason: ..."), whose ISO-8601 µs timestamp the ``log stdout format iso``
  configuration provides; a change with no matching log line is dated with the poll that saw it.

Configuration, data types, errors and ``show stat`` parsing are in :mod:`casprobe.lab.haproxy` (protocols.md
§4.4, field-notes §5).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from casprobe.lab.haproxy import (
    HAPROXY_BIN,
    UNKNOWN,
    HaproxyStartError,
    LbBackendServer,
    LbSettings,
    RuntimeApiError,
    ServerState,
    check_config,
    parse_show_stat,
    write_config,
)

__all__ = ["AdminState", "HaproxyProcess", "RuntimeClient", "StateChange", "StateWatcher", "watch_states"]

log = logging.getLogger(__name__)

AdminState = Literal["ready", "drain", "maint"]

_MAX_ANSWER = 8 * 1024 * 1024  # bytes read from one runtime-API answer
_MAX_LOG_CHUNK = 4 * 1024 * 1024  # bytes of haproxy.log read per watcher tick
_MAX_PENDING = 10_000  # log events kept while the socket does not answer
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_LOG_LINE = re.compile(
    r"(?P<ts>\d{4}-\d\d-\d\dT[0-9:.]+(?:Z|[+-]\d\d:?\d\d)) Server (?P<be>[^/\s]+)/(?P<srv>\S+) (?P<rest>.*)"
)


@dataclass(frozen=True, slots=True)
class StateChange:
    """A server changed state; ``at`` is epoch seconds (HAProxy's clock when ``source == "log"``)."""

    backend: str
    server: str
    old: str
    new: str
    at: float
    source: Literal["log", "poll"]
    observed_at: float  # epoch seconds of the poll that confirmed the change
    detail: str  # HAProxy's log message, or the check info of the poll


def _check_name(label: str, value: str) -> None:
    if not _SAFE_NAME.fullmatch(value):
        raise RuntimeApiError(f"{label} {value!r} is not a valid HAProxy name")


class RuntimeClient:
    """HAProxy runtime API over its AF_UNIX stats socket, in blocking and asyncio forms."""

    def __init__(self, socket_path: Path, *, timeout_s: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s

    @staticmethod
    def _encode(cmd: str) -> bytes:
        if not cmd or "\n" in cmd or "\r" in cmd:
            raise RuntimeApiError("a runtime command is one non-empty line")
        return cmd.encode("ascii") + b"\n"

    def runtime(self, cmd: str) -> str:
        """Send one command and return HAProxy's whole answer (blocking; for tests and scripts)."""
        data = self._encode(cmd)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout_s)
                sock.connect(str(self.socket_path))
                sock.sendall(data)
                chunks: list[bytes] = []
                size = 0
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > _MAX_ANSWER:
                        raise RuntimeApiError(f"answer to {cmd!r} exceeds {_MAX_ANSWER} bytes")
        except OSError as exc:
            raise RuntimeApiError(f"stats socket {self.socket_path}: {exc}") from exc
        return b"".join(chunks).decode("utf-8", "replace")

    async def aruntime(self, cmd: str) -> str:
        """Send one command and return HAProxy's whole answer (asyncio)."""
        data = self._encode(cmd)
        try:
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await asyncio.open_unix_connection(str(self.socket_path))
                try:
                    writer.write(data)
                    await writer.drain()
                    chunks: list[bytes] = []
                    size = 0
                    while chunk := await reader.read(65536):
                        chunks.append(chunk)
                        size += len(chunk)
                        if size > _MAX_ANSWER:
                            raise RuntimeApiError(f"answer to {cmd!r} exceeds {_MAX_ANSWER} bytes")
                finally:
                    writer.close()
        except (OSError, TimeoutError) as exc:
            raise RuntimeApiError(f"stats socket {self.socket_path}: {exc!r}") from exc
        return b"".join(chunks).decode("utf-8", "replace")

    def server_states(self) -> dict[tuple[str, str], ServerState]:
        """Return every backend server's state, keyed by (backend, server)."""
        return parse_show_stat(self.runtime("show stat"))

    async def aserver_states(self) -> dict[tuple[str, str], ServerState]:
        """Asyncio form of :meth:`server_states`."""
        return parse_show_stat(await self.aruntime("show stat"))

    @staticmethod
    def _state_cmd(backend: str, server: str, state: AdminState) -> str:
        _check_name("backend", backend)
        _check_name("server", server)
        if state not in ("ready", "drain", "maint"):
            raise RuntimeApiError(f"state must be ready, drain or maint, got {state!r}")
        return f"set server {backend}/{server} state {state}"

    @staticmethod
    def _expect_empty(cmd: str, answer: str) -> None:
        if answer.strip():
            raise RuntimeApiError(f"HAProxy refused {cmd!r}: {answer.strip()}")

    def set_server_state(self, backend: str, server: str, state: AdminState) -> None:
        """Put a server in ready, drain or maint (``set server``); effective immediately."""
        cmd = self._state_cmd(backend, server, state)
        self._expect_empty(cmd, self.runtime(cmd))

    async def aset_server_state(self, backend: str, server: str, state: AdminState) -> None:
        """Asyncio form of :meth:`set_server_state`."""
        cmd = self._state_cmd(backend, server, state)
        self._expect_empty(cmd, await self.aruntime(cmd))


class HaproxyProcess:
    """The lab's HAProxy child: ``haproxy -f cfg -db`` in its own process group."""

    def __init__(
        self,
        settings: LbSettings,
        servers: Sequence[LbBackendServer],
        *,
        binary: Path = HAPROXY_BIN,
    ) -> None:
        self.settings = settings
        self.servers = tuple(servers)
        self.binary = binary
        self.cfg_path = settings.run_dir / "haproxy.cfg"
        self.socket_path = settings.run_dir / "haproxy.sock"
        self.log_path = settings.run_dir / "haproxy.log"
        self.api = RuntimeClient(self.socket_path)
        self.first_log_offset: int | None = None  # where this object's first process began writing
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the running HAProxy, or None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def log_tail(self, max_bytes: int = 4000) -> str:
        """Last bytes of haproxy.log (stdout and stderr of every run), for error messages."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - max_bytes))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    async def start(self, timeout_s: float = 10.0) -> None:
        """Write and validate the configuration, spawn HAProxy and wait until its stats socket answers."""
        if self.pid is not None:
            raise HaproxyStartError(f"haproxy already running (pid {self.pid})")
        write_config(self.settings, self.servers)
        await asyncio.to_thread(check_config, self.cfg_path, binary=self.binary)
        with self.log_path.open("ab") as logf:
            offset = logf.tell()
            if self.first_log_offset is None:
                self.first_log_offset = offset
            try:
                self._proc = subprocess.Popen(
                    [str(self.binary), "-f", str(self.cfg_path), "-db"],
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=self.settings.run_dir,
                )
            except OSError as exc:
                raise HaproxyStartError(f"cannot start {self.binary}: {exc}") from exc
        try:
            await self.wait_ready(timeout_s)
        except BaseException:
            self.kill()
            raise

    async def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Wait until this process answers on the stats socket; raise HaproxyStartError if it exits first."""
        proc = self._proc
        if proc is None:
            raise HaproxyStartError("haproxy was not started")
        deadline = time.monotonic() + timeout_s
        while True:
            code = proc.poll()
            if code is not None:
                raise HaproxyStartError(f"haproxy exited with status {code} at start-up:\n{self.log_tail()}")
            try:
                info = await self.api.aruntime("show info")
            except RuntimeApiError:
                info = ""
            if re.search(rf"^Pid: {proc.pid}$", info, re.MULTILINE):
                return
            if time.monotonic() > deadline:
                raise HaproxyStartError(f"haproxy not ready after {timeout_s} s:\n{self.log_tail()}")
            await asyncio.sleep(0.02)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout_s``; returns once the process is reaped."""
        proc = self._proc
        if proc is None:
            return
        self._signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the process group and reap it (blocking, for finalizers and failed starts)."""
        proc = self._proc
        if proc is None:
            return
        self._signal_group(proc, signal.SIGKILL)
        proc.wait()
        self._proc = None

    async def restart(self, timeout_s: float = 10.0) -> None:
        """Stop then start again (same configuration, log appended); the PID changes."""
        await self.stop()
        await self.start(timeout_s)

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        # The group id is the child's pid (start_new_session). Signal it only while the child is not reaped:
        # until then the kernel cannot hand that id to another process.
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


class StateWatcher:
    """Poll server states and report every change, dated from HAProxy's own log when possible."""

    def __init__(
        self,
        proc: HaproxyProcess,
        on_change: Callable[[StateChange], None],
        *,
        interval_s: float = 0.1,
    ) -> None:
        self.proc = proc
        self.on_change = on_change
        self.interval_s = interval_s
        self.states: dict[tuple[str, str], ServerState] = {}
        self._offset: int | None = None
        self._partial = b""
        self._pending: dict[tuple[str, str], list[tuple[float, str, str]]] = {}
        self._pending_count = 0

    async def run(self) -> None:
        """Poll every ``interval_s`` until cancelled; a silent socket (HAProxy restarting) skips the tick."""
        while True:
            await self.poll_once()
            await asyncio.sleep(self.interval_s)

    async def poll_once(self) -> list[StateChange]:
        """One tick: read ``show stat``, then the log written so far; report and return the changes."""
        try:
            polled = await self.proc.api.aserver_states()
        except RuntimeApiError as exc:
            log.debug("state poll failed: %s", exc)
            polled = None
        now = time.time()
        # HAProxy writes a transition's log line before its CLI can answer with the new state, so reading
        # the log *after* the poll finds the line of every change the poll saw.
        self._read_log()
        if polled is None:
            return []
        changes: list[StateChange] = []
        for key, st in polled.items():
            old = self.states.get(key)
            if old is not None and old.state == st.state:
                continue
            at, detail = now, st.check_info or st.status
            source: Literal["log", "poll"] = "poll"
            for ts, hint, message in reversed(self._pending.get(key, [])):
                if hint == st.state or (hint == "UP" and st.state == "DRAIN"):
                    at, source, detail = ts, "log", message
                    break
            changes.append(
                StateChange(
                    backend=key[0],
                    server=key[1],
                    old=old.state if old is not None else UNKNOWN,
                    new=st.state,
                    at=at,
                    source=source,
                    observed_at=now,
                    detail=detail,
                )
            )
        self.states = polled
        self._pending.clear()
        self._pending_count = 0
        for change in changes:
            try:
                self.on_change(change)
            except Exception:  # a faulty callback must not stop the ground-truth feed
                log.exception("on_change failed for %s", change)
        return changes

    def _read_log(self) -> None:
        if self._offset is None:
            if self.proc.first_log_offset is None:  # not started yet: nothing of ours to read
                return
            self._offset = self.proc.first_log_offset
        try:
            with self.proc.log_path.open("rb") as fh:
                if fh.seek(0, os.SEEK_END) < self._offset:  # truncated or replaced: start over
                    self._offset, self._partial = 0, b""
                fh.seek(self._offset)
                data = fh.read(_MAX_LOG_CHUNK)
        except OSError:
            return
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[-65536:]
        for raw in lines:
            self._note_line(raw.decode("utf-8", "replace"))

    def _note_line(self, line: str) -> None:
        match = _LOG_LINE.match(line)
        if match is None or self._pending_count >= _MAX_PENDING:
            return
        rest = match["rest"]
        if "maintenance" in rest and "leaving" not in rest:
            hint = "MAINT"
        elif rest.startswith(("is UP/DRAIN", "enters drain", "remains in forced drain")):
            hint = "DRAIN"
        elif rest.startswith("is DOWN"):
            hint = "DOWN"
        elif rest.startswith("is UP"):
            hint = "UP"
        else:
            return
        try:
            ts = datetime.fromisoformat(match["ts"]).timestamp()
        except ValueError:
            return
        message = f"Server {match['be']}/{match['srv']} {rest}"
        self._pending.setdefault((match["be"], match["srv"]), []).append((ts, hint, message))
        self._pending_count += 1


async def watch_states(
    proc: HaproxyProcess,
    interval_s: float,
    on_change: Callable[[StateChange], None],
) -> None:
    """Run a :class:`StateWatcher` on ``proc`` until cancelled (initial states are reported as changes)."""
    await StateWatcher(proc, on_change, interval_s=interval_s).run()
