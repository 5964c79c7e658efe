"""Load shapes as stage tables: ramp up, hold steady through the maintenance window, ramp down (issue 5).

Pure: parsing and the arithmetic behind a Locust ``LoadTestShape.tick()`` (``locustfiles/shapes.py``), no I/O and
no Locust import. Locust's contract ([Locust docs, "Custom load shapes"]; ``locust/shape.py``): ``tick()`` is
called about once a second with the run time and returns ``(user_count, spawn_rate)``, Locust then starts or
stops users at ``spawn_rate`` per second until ``user_count`` run (blocking the next tick until it has), and
``None`` ends the test.

Grammar of a table (``--casprobe-stages``), stages separated by commas, whitespace ignored, names case-insensitive::

    TABLE    := STAGE ("," STAGE)*
    STAGE    := "ramp:" DURATION ":" USERS ["@" RATE]     go from the current count to USERS
              | "hold:" DURATION                          keep the current count
              | "down:" DURATION ["@" RATE]               go to 0 users (= ramp:DURATION:0)
    DURATION := NUMBER | (NUMBER UNIT)+   UNIT := "s" | "m" | "h"; a bare number is seconds: 90, 90s, 1m30s, 1h
    USERS    := a whole number;   RATE := users per second, a positive number

The count starts at 0. A ramp without ``@RATE`` is linear: ``|USERS - current| / DURATION`` users per second, so
it arrives as the stage ends; with ``@RATE`` it arrives sooner and holds for the rest of the stage. A rate too low
to arrive within the stage is refused (Locust would block its next ticks and skip stages). After the last stage
``tick`` answers None and Locust stops. Example: ``ramp:30s:200@20,hold:10m,down:30s``: 200 users started at 20/s
(10 s) and held to 30 s, held 10 minutes more, then stopped over 30 s (6.67/s); 11 minutes in all.

The default table (:data:`DEFAULT_STAGES`) ramps to 100 users over a minute, holds them 10 minutes (a DAG member's
maintenance: drain, database moves, reboot, back) and ramps down over a minute.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from casprobe.errors import ConfigError

__all__ = [
    "DEFAULT_STAGES",
    "Stage",
    "StageError",
    "StageTable",
    "parse_duration",
    "parse_stages",
]

DEFAULT_STAGES = "ramp:1m:100,hold:10m,down:1m"

MAX_STAGES = 100
MAX_USERS = 1_000_000
MAX_RATE = 100_000.0
MAX_TOTAL_S = 7 * 24 * 3600.0  # a week
_MAX_SPEC = 4096
_HOLD_RATE = 1.0  # what tick() returns as the rate when the count does not change (Locust wants a rate > 0)
_BARE = re.compile(r"\d{1,9}(?:\.\d{1,6})?")
_WITH_UNITS = re.compile(r"(?:\d{1,9}(?:\.\d{1,6})?[smh])+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smh])")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0}


class StageError(ConfigError, ValueError):
    """A stage table that cannot be read (the message names the stage and what is wrong)."""


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage: ``kind`` (ramp/hold/down), when it starts (s from the start of the run), how long it lasts, the
    user count before and at the end of it, and the spawn rate Locust uses during it (users per second)."""

    kind: str
    start_s: float
    duration_s: float
    users_before: int
    users: int
    spawn_rate: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def users_at(self, offset_s: float) -> float:
        """The user count ``offset_s`` seconds into the stage if Locust follows the rate exactly."""
        delta = self.users - self.users_before
        if delta == 0:
            return float(self.users)
        moved = min(abs(delta), self.spawn_rate * max(0.0, offset_s))
        return self.users_before + math.copysign(moved, delta)


@dataclass(frozen=True, slots=True)
class StageTable:
    """A parsed table: its stages in order (contiguous, starting at 0)."""

    stages: tuple[Stage, ...]

    @property
    def total_s(self) -> float:
        return self.stages[-1].end_s if self.stages else 0.0

    @property
    def peak(self) -> int:
        return max((s.users for s in self.stages), default=0)

    def stage_at(self, run_time_s: float) -> Stage | None:
        """The stage running ``run_time_s`` seconds into the run (None before 0 or once the table is over)."""
        if run_time_s < 0 or math.isnan(run_time_s):
            return None
        for stage in self.stages:
            if run_time_s < stage.end_s:
                return stage
        return None

    def tick(self, run_time_s: float) -> tuple[int, float] | None:
        """What ``LoadTestShape.tick()`` returns ``run_time_s`` seconds into the run: ``(users, spawn_rate)`` of the
        stage running then, or None when the table is over (Locust stops the test)."""
        stage = self.stage_at(run_time_s)
        if stage is None:
            return None
        return stage.users, stage.spawn_rate

    def users_at(self, run_time_s: float) -> float:
        """The user count the table asks for at ``run_time_s`` (ramps linear at their rate; 0 before and after)."""
        stage = self.stage_at(run_time_s)
        if stage is None:
            return 0.0 if run_time_s < 0 or not self.stages else float(self.stages[-1].users)
        return stage.users_at(run_time_s - stage.start_s)

    def describe(self) -> str:
        """One line: each stage with its users, rate and duration."""
        parts = []
        for s in self.stages:
            if s.kind == "hold":
                parts.append(f"hold {s.users} for {s.duration_s:g}s")
            else:
                parts.append(f"{s.kind} {s.users_before}→{s.users} at {s.spawn_rate:.3g}/s in {s.duration_s:g}s")
        return ", ".join(parts) + f" ({self.total_s:g}s in all)"


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``1m30s``, ``1.5h``: a :class:`StageError` unless > 0 and at most a week."""
    compact = text.strip().lower()
    if len(compact) > 32 or not (_BARE.fullmatch(compact) or _WITH_UNITS.fullmatch(compact)):
        raise StageError(f"duration {text.strip()[:40]!r}: expected e.g. 90 (seconds), 90s, 5m, 1h30m")
    if _BARE.fullmatch(compact):
        total = float(compact)
    else:
        total = sum(float(number) * _UNIT[unit] for number, unit in _PART.findall(compact))
    if not 0 < total <= MAX_TOTAL_S:
        raise StageError(f"duration {text.strip()!r}: must be more than 0 and at most {MAX_TOTAL_S / 86400:g} days")
    return total


def _duration(text: str, where: str) -> float:
    try:
        return parse_duration(text)
    except StageError as exc:
        raise StageError(f"{where}: {exc}") from None


def _users(text: str, where: str) -> int:
    value = text.strip()
    if not value.isdigit() or len(value) > 9 or int(value) > MAX_USERS:
        raise StageError(f"{where}: users {value[:20]!r} must be a whole number from 0 to {MAX_USERS}")
    return int(value)


def _rate(text: str, where: str) -> float:
    try:
        rate = float(text.strip())
    except ValueError:
        raise StageError(f"{where}: rate {text.strip()[:20]!r} is not a number") from None
    if not math.isfinite(rate) or not 0 < rate <= MAX_RATE:
        raise StageError(f"{where}: rate {text.strip()[:20]!r} must be more than 0 and at most {MAX_RATE:g}/s")
    return rate


def _stage(part: str, where: str, start: float, current: int) -> Stage:
    kind, _, rest = part.partition(":")
    kind = kind.strip().lower()
    if kind == "hold":
        if ":" in rest or "@" in rest:
            raise StageError(f"{where}: expected hold:DURATION")
        return Stage("hold", start, _duration(rest, where), current, current, _HOLD_RATE)
    if kind == "ramp":
        duration_text, sep, target = rest.partition(":")
        if not sep or ":" in target:
            raise StageError(f"{where}: expected ramp:DURATION:USERS[@RATE]")
        users_text, at, rate_text = target.partition("@")
    elif kind == "down":
        if ":" in rest:
            raise StageError(f"{where}: expected down:DURATION[@RATE]")
        duration_text, at, rate_text = rest.partition("@")
        users_text = "0"
    else:
        raise StageError(f"{where}: unknown stage {kind[:20]!r} (expected ramp, hold or down)")
    duration = _duration(duration_text, where)
    users = _users(users_text, where)
    delta = abs(users - current)
    if at:
        rate = _rate(rate_text, where)
        if delta / rate > duration + 1e-9:
            raise StageError(
                f"{where}: {delta} users at {rate:g}/s take {delta / rate:g}s, longer than the stage ({duration:g}s)"
            )
    else:
        rate = delta / duration if delta else _HOLD_RATE
    return Stage(kind, start, duration, current, users, rate)


def parse_stages(spec: str) -> StageTable:
    """Read a stage table (grammar in the module docstring); a :class:`StageError` names the stage at fault."""
    if len(spec) > _MAX_SPEC:
        raise StageError(f"stage table longer than {_MAX_SPEC} characters")
    parts = [p.strip() for p in spec.split(",")]
    if not spec.strip():
        raise StageError(f"empty stage table (expected e.g. {DEFAULT_STAGES})")
    if len(parts) > MAX_STAGES:
        raise StageError(f"more than {MAX_STAGES} stages")
    stages: list[Stage] = []
    start, current = 0.0, 0
    for number, part in enumerate(parts, 1):
        where = f"stage {number} {part[:40]!r}"
        if not part:
            raise StageError(f"stage {number} is empty")
        stage = _stage(part, where, start, current)
        stages.append(stage)
        start, current = stage.end_s, stage.users
        if start > MAX_TOTAL_S:
            raise StageError(f"the table lasts more than {MAX_TOTAL_S / 86400:g} days")
    return StageTable(tuple(stages))
