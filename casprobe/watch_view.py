"""What a watch shows while it runs: the board (per name × probe state and outages) and its two faces.

- :class:`Board`: the current state of every row (last result, latency, outage counter, open outage), updated
  from the worker threads; an outage opens at a row's first failed result and closes at its first success after
  it (the same rule as :class:`casprobe.model.Outage`). The live view and the metrics endpoint read its
  snapshots.
- :class:`LiveView`: a ``rich.live.Live`` table refreshed 4 times a second (only when stdout is a terminal), with
  a header (store, interval, elapsed time, "TLS verification OFF" when it is) and a line printed above the table
  for each outage as it opens and closes.
- :class:`PlainView`: no terminal: one plain line per outage opening or closing, nothing else.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from casprobe.model import ProbeResult, Target

__all__ = ["Board", "LiveView", "OutageEvent", "PlainView", "RowView", "View", "ViewHeader"]


@dataclass(frozen=True, slots=True)
class RowView:
    """One row as it is now.

    Attributes: target, probe; success: of the last result (None before the first); error_class: its class
    value, or ""; latency_s: its duration; last: the last result; results / failures: counts; outages: how many
    opened; open_since: ``time.monotonic()`` of the open outage's first failure (None when none is open);
    skipped: slots skipped because the previous run was still going.
    """

    target: Target
    probe: str
    success: bool | None
    error_class: str
    latency_s: float | None
    last: ProbeResult | None
    results: int
    failures: int
    outages: int
    open_since: float | None
    skipped: int

    @property
    def state(self) -> str:
        if self.success is None:
            return "…"
        return "OK" if self.success else f"FAIL {self.error_class or '?'}"


@dataclass(frozen=True, slots=True)
class OutageEvent:
    """An outage opening (``opened``) or closing on a row.

    Attributes: target (display name), probe; opened; wall: when (the result's start, wall clock); duration_s:
    first failure → first success (on closing); failures: failed results in it; error_class: of the first
    failure (opening) or the last one (closing); detail: the first failure's detail.
    """

    target: str
    probe: str
    opened: bool
    wall: float
    duration_s: float | None = None
    failures: int = 0
    error_class: str = ""
    detail: str = ""

    def line(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.wall)) + f".{int(self.wall * 1000) % 1000:03d}"
        if self.opened:
            return f"{stamp} outage opened  {self.target} {self.probe}: {self.error_class} — {self.detail}"
        return (
            f"{stamp} outage closed  {self.target} {self.probe}: {self.duration_s or 0.0:.2f} s, "
            f"{self.failures} failed probe(s), last {self.error_class}"
        )


class _Row:
    def __init__(self, target: Target, probe: str) -> None:
        self.target, self.probe = target, probe
        self.last: ProbeResult | None = None
        self.results = self.failures = self.outages = self.skipped = 0
        self.open_since: float | None = None
        self.open_wall = 0.0
        self.open_failures = 0
        self.open_detail = ""
        self.open_class = ""

    def view(self) -> RowView:
        last = self.last
        return RowView(
            self.target,
            self.probe,
            None if last is None else last.success,
            last.error_class.value if last is not None and last.error_class is not None else "",
            None if last is None else last.duration,
            last,
            self.results,
            self.failures,
            self.outages,
            self.open_since,
            self.skipped,
        )


class Board:
    """Every row's state, in a stable order (targets as given, probes as given); thread-safe."""

    def __init__(self, rows: list[tuple[Target, str]]) -> None:
        self._lock = threading.Lock()
        self._rows = {(target.display, probe): _Row(target, probe) for target, probe in rows}

    def record(self, result: ProbeResult) -> OutageEvent | None:
        """Take a result; the outage that opened or closed with it, if one did."""
        key = (result.target.display, result.probe)
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                row = self._rows[key] = _Row(result.target, result.probe)
            row.last = result
            row.results += 1
            name, probe = key
            error_class = result.error_class.value if result.error_class is not None else ""
            if not result.success:
                row.failures += 1
                row.open_class = error_class
                if row.open_since is not None:
                    row.open_failures += 1
                    return None
                row.outages += 1
                row.open_since, row.open_wall, row.open_failures = result.started_mono, result.started_at, 1
                row.open_detail = result.detail
                return OutageEvent(name, probe, True, result.started_at, None, 1, error_class, result.detail)
            if row.open_since is None:
                return None
            duration = result.started_mono - row.open_since
            failures, detail, last_class = row.open_failures, row.open_detail, row.open_class
            row.open_since = None
        return OutageEvent(name, probe, False, result.started_at, duration, failures, last_class, detail)

    def set_skipped(self, skipped: dict[tuple[str, str], int]) -> None:
        with self._lock:
            for key, count in skipped.items():
                if key in self._rows:
                    self._rows[key].skipped = count

    def snapshot(self) -> list[RowView]:
        with self._lock:
            return [row.view() for row in self._rows.values()]


@dataclass(frozen=True, slots=True)
class ViewHeader:
    """What the live view's header says. Attributes: store path, interval_s, tls_verification, started_mono."""

    store: Path
    interval_s: float
    tls_verification: bool
    started_mono: float


class View(Protocol):
    def start(self) -> None: ...
    def outage(self, event: OutageEvent) -> None: ...
    def stop(self) -> None: ...


class PlainView:
    """Not a terminal: one line per outage opening or closing, on ``console`` (stdout by default)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False, soft_wrap=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        """Nothing to start."""

    def outage(self, event: OutageEvent) -> None:
        with self._lock:
            self.console.print(event.line(), markup=False, highlight=False)

    def stop(self) -> None:
        """Nothing to stop."""


class LiveView:
    """The rich live table (4 refreshes a second) with outage lines printed above it."""

    def __init__(self, board: Board, header: ViewHeader, console: Console | None = None) -> None:
        self.board, self.header = board, header
        self.console = console or Console()
        self._live = Live(console=self.console, refresh_per_second=4, get_renderable=self.render, transient=False)

    def render(self) -> Group:
        h = self.header
        elapsed = int(time.monotonic() - h.started_mono)
        title = Text.assemble(
            ("casprobe watch", "bold"),
            f"  store {h.store}  every {h.interval_s:g} s  elapsed {elapsed // 3600:d}:{elapsed // 60 % 60:02d}:"
            f"{elapsed % 60:02d}",
        )
        if not h.tls_verification:
            title.append("  TLS verification OFF", style="bold red")
        table = Table(expand=True, pad_edge=False, box=None)
        # the short columns keep their width; the last failure's text takes what is left
        widths = {"name": 10, "probe": 12, "state": 17, "latency": 8, "outages": 7, "open for": 8, "skipped": 7}
        for column, width in widths.items():
            table.add_column(column, no_wrap=True, overflow="ellipsis", min_width=width, max_width=max(width, 24))
        table.add_column("last failure", no_wrap=True, overflow="ellipsis", ratio=1)
        now = time.monotonic()
        for row in self.board.snapshot():
            style = "" if row.success is None else "green" if row.success else "bold red"
            latency = "" if row.latency_s is None else f"{row.latency_s * 1000:.0f} ms"
            open_for = "" if row.open_since is None else f"{now - row.open_since:.1f} s"
            detail = "" if row.last is None or row.last.success else row.last.detail
            table.add_row(
                row.target.display,
                row.probe,
                Text(row.state, style=style),
                latency,
                str(row.outages),
                open_for,
                str(row.skipped) if row.skipped else "",
                Text(detail),
            )
        return Group(title, table)

    def start(self) -> None:
        self._live.start()

    def outage(self, event: OutageEvent) -> None:
        style = "red" if event.opened else "green"
        self._live.console.print(Text(event.line(), style=style))

    def stop(self) -> None:
        self._live.stop()
