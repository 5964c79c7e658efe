"""Stage tables for Locust load shapes (casprobe.load.stages): the grammar, its refusals and the tick() arithmetic."""

from __future__ import annotations

import math

import pytest

from casprobe.errors import ConfigError
from casprobe.load.stages import (
    DEFAULT_STAGES,
    MAX_STAGES,
    StageError,
    StageTable,
    parse_duration,
    parse_stages,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("2m30s", 150.0),
        ("1.5h", 5400.0),
        (" 10S ", 10.0),
    ],
)
def test_durations_read_bare_seconds_and_units(text: str, seconds: float) -> None:
    """A duration is a bare number of seconds or numbers with s/m/h units, added up."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "-5s", "1m30", "5d", "1e3", "nan", "inf", "s", "8h" * 30, "169h"])
def test_durations_that_are_not_durations_are_refused(text: str) -> None:
    """Empty, zero, negative, unitless after units, unknown units, exponents, NaN, too long or over a week: refused."""
    with pytest.raises(StageError):
        parse_duration(text)


def test_the_example_of_the_issue_ramps_at_its_rate_holds_and_ramps_down_linearly() -> None:
    """``ramp:30s:200@20,hold:10m,down:30s``: 200 users at 20/s, held, then stopped at 200/30 per second."""
    table = parse_stages("ramp:30s:200@20,hold:10m,down:30s")
    assert [(s.kind, s.start_s, s.duration_s, s.users_before, s.users) for s in table.stages] == [
        ("ramp", 0.0, 30.0, 0, 200),
        ("hold", 30.0, 600.0, 200, 200),
        ("down", 630.0, 30.0, 200, 0),
    ]
    assert table.total_s == 660.0
    assert table.peak == 200
    assert table.tick(0.0) == (200, 20.0)
    assert table.tick(29.99) == (200, 20.0)
    assert table.tick(30.0) == (200, 1.0)
    assert table.tick(645.0) == (0, pytest.approx(200 / 30))
    assert table.tick(660.0) is None
    assert table.tick(10_000.0) is None


def test_a_ramp_without_a_rate_is_linear_over_its_stage() -> None:
    """Without ``@RATE`` a ramp moves |Δ|/DURATION users per second, from the count the previous stage left."""
    table = parse_stages("ramp:10s:50, ramp:20s:10, hold:5s, ramp:4s:30")
    assert [s.spawn_rate for s in table.stages] == [5.0, 2.0, 1.0, 5.0]
    assert table.users_at(0.0) == 0.0
    assert table.users_at(4.0) == 20.0
    assert table.users_at(10.0) == 50.0
    assert table.users_at(20.0) == 30.0  # 10 s into the second ramp, down at 2/s
    assert table.users_at(32.0) == 10.0  # held
    assert table.users_at(37.0) == 20.0
    assert table.users_at(39.0) == 30.0  # the last stage ends: the table says what it left
    assert table.tick(39.0) is None


def test_a_ramp_with_a_rate_arrives_early_then_holds_for_the_rest_of_the_stage() -> None:
    """``ramp:60s:100@10`` reaches 100 users after 10 s and keeps them until 60 s."""
    table = parse_stages("ramp:60s:100@10")
    assert table.users_at(5.0) == 50.0
    assert table.users_at(10.0) == 100.0
    assert table.users_at(59.0) == 100.0
    assert table.tick(59.0) == (100, 10.0)


def test_down_goes_to_zero_and_hold_keeps_the_count_with_a_positive_rate() -> None:
    """``down`` is a ramp to 0; ``hold`` (even of 0 users) keeps the count and still gives Locust a rate > 0."""
    table = parse_stages("hold:2s,ramp:2s:4,down:4s@2")
    assert table.tick(0.0) == (0, 1.0)
    assert table.tick(3.0) == (4, 2.0)
    assert table.tick(5.0) == (0, 2.0)
    assert table.users_at(5.0) == 2.0
    assert table.users_at(7.0) == 0.0
    assert table.tick(8.0) is None


def test_names_are_case_insensitive_and_whitespace_is_ignored() -> None:
    """`` RAMP : 1m : 10 @ 1 , Hold:1m `` reads as ``ramp:1m:10@1,hold:1m``."""
    assert parse_stages(" RAMP : 1m : 10 @ 1 , Hold: 1m ") == parse_stages("ramp:1m:10@1,hold:1m")


def test_the_default_table_ramps_up_holds_ten_minutes_and_ramps_down() -> None:
    """The default table: 100 users over a minute, a 10-minute hold (the maintenance window), a minute down."""
    table = parse_stages(DEFAULT_STAGES)
    assert [s.kind for s in table.stages] == ["ramp", "hold", "down"]
    assert table.peak == 100
    assert table.stages[1].duration_s == 600.0
    assert table.total_s == 720.0
    assert "hold 100 for 600s" in table.describe()


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("", "empty"),
        ("ramp:10s", "expected ramp:DURATION:USERS"),
        ("ramp:10s:5:6", "expected ramp:DURATION:USERS"),
        ("ramp:10s:-1", "whole number"),
        ("ramp:10s:2.5", "whole number"),
        ("ramp:10s:99999999999", "whole number"),
        ("ramp:10s:5@0", "rate"),
        ("ramp:10s:5@-1", "rate"),
        ("ramp:10s:5@nan", "rate"),
        ("ramp:10s:5@inf", "rate"),
        ("ramp:10s:5@x", "not a number"),
        ("ramp:10s:100@1", "longer than the stage"),
        ("hold:5s@2", "expected hold:DURATION"),
        ("hold:5s:3", "expected hold:DURATION"),
        ("down:5s:3", "expected down:DURATION"),
        ("jump:5s", "unknown stage"),
        ("ramp:10s:5,,hold:1s", "stage 2 is empty"),
        ("ramp:0s:5", "more than 0"),
        ("hold:100h,hold:100h", "more than 7 days"),
        ("x" * 5000, "longer than"),
        (",".join(["hold:1s"] * (MAX_STAGES + 1)), f"more than {MAX_STAGES} stages"),
    ],
)
def test_bad_tables_are_refused_with_the_reason(spec: str, says: str) -> None:
    """Every malformed or out-of-range table raises a StageError (a ConfigError and a ValueError) saying why."""
    with pytest.raises(StageError) as caught:
        parse_stages(spec)
    assert says in str(caught.value)
    assert isinstance(caught.value, ConfigError)
    assert isinstance(caught.value, ValueError)


def test_a_bad_stage_is_named_by_its_position() -> None:
    """The message of a bad stage names which one it is, so a long table can be fixed."""
    with pytest.raises(StageError, match=r"stage 3 'ramp:1x:5'"):
        parse_stages("ramp:10s:5,hold:1m,ramp:1x:5")


def test_tick_before_the_start_or_at_nan_ends_nothing_and_asks_for_nothing() -> None:
    """A negative or NaN run time (a clock gone wrong) gives None rather than an exception or a bogus stage."""
    table = parse_stages("ramp:10s:5")
    assert table.stage_at(-1.0) is None
    assert table.stage_at(math.nan) is None
    assert table.users_at(-1.0) == 0.0
    assert StageTable(()).tick(0.0) is None
    assert StageTable(()).users_at(5.0) == 0.0
