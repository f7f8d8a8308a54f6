"""Cron parsing and tick times in a timezone, across daylight saving time changes."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from flowstone.errors import DefinitionError
from flowstone.scheduling.cron import latest_tick, load_timezone, parse_cron, ticks_between

BERLIN = ZoneInfo("Europe/Berlin")


def _ticks(expression: str, start: dt.datetime, end: dt.datetime) -> list[str]:
    return [t.isoformat() for t in ticks_between(parse_cron(expression), BERLIN, start, end)]


def test_macros_and_fields() -> None:
    assert parse_cron("@daily").expression == "0 0 * * *"
    assert parse_cron("@hourly").expression == "0 * * * *"
    fields = parse_cron("30 1 * * 1-5")
    assert (fields.minute, fields.hour, fields.day_of_week) == ("30", "1", "1-5")
    assert fields.is_fixed_time
    assert not parse_cron("*/15 * * * *").is_fixed_time


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 * * * *", "invalid minute field '61'"),
        ("* * * *", "must have 5 fields"),
        ("0 0 * * * 2025", "must have 5 fields"),
        ("0 0 L * *", "invalid day_of_month field 'L'"),
        ("0 0 * * 7", "invalid day_of_week field '7'"),
        ("0 0 1 * 1", "restricts both the day of month and the day of week"),
        ("@often", "must have 5 fields"),
    ],
)
def test_invalid_expressions_are_definition_errors(expression: str, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        parse_cron(expression)


def test_unknown_timezone() -> None:
    with pytest.raises(DefinitionError, match="unknown timezone 'Mars/Olympus'"):
        load_timezone("Mars/Olympus")


def test_daily_at_01_30_in_berlin_keeps_local_time_across_both_changes() -> None:
    spring = _ticks(
        "30 1 * * *",
        dt.datetime(2025, 3, 29, 12, tzinfo=BERLIN),
        dt.datetime(2025, 4, 1, 12, tzinfo=BERLIN),
    )
    assert spring == [
        "2025-03-30T01:30:00+01:00",
        "2025-03-31T01:30:00+02:00",
        "2025-04-01T01:30:00+02:00",
    ]
    autumn = _ticks(
        "30 1 * * *",
        dt.datetime(2025, 10, 25, 12, tzinfo=BERLIN),
        dt.datetime(2025, 10, 28, 12, tzinfo=BERLIN),
    )
    assert autumn == [
        "2025-10-26T01:30:00+02:00",
        "2025-10-27T01:30:00+01:00",
        "2025-10-28T01:30:00+01:00",
    ]


def test_a_fixed_time_in_the_repeated_hour_fires_once_and_a_skipped_one_after_the_gap() -> None:
    spring = _ticks(
        "30 2 * * *",
        dt.datetime(2025, 3, 29, 12, tzinfo=BERLIN),
        dt.datetime(2025, 3, 31, 12, tzinfo=BERLIN),
    )
    assert spring == ["2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"]
    autumn = _ticks(
        "30 2 * * *",
        dt.datetime(2025, 10, 25, 12, tzinfo=BERLIN),
        dt.datetime(2025, 10, 27, 12, tzinfo=BERLIN),
    )
    assert autumn == ["2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00"]


def test_hourly_fires_every_real_hour_when_the_clocks_go_back() -> None:
    ticks = _ticks(
        "0 * * * *",
        dt.datetime(2025, 10, 26, 0, 30, tzinfo=BERLIN),
        dt.datetime(2025, 10, 26, 4, 0, tzinfo=BERLIN),
    )
    assert ticks == [
        "2025-10-26T01:00:00+02:00",
        "2025-10-26T02:00:00+02:00",
        "2025-10-26T02:00:00+01:00",
        "2025-10-26T03:00:00+01:00",
        "2025-10-26T04:00:00+01:00",
    ]


def test_latest_tick_counts_a_tick_at_now_and_maps_the_repeat_to_the_first() -> None:
    fields = parse_cron("30 1 * * *")
    at = dt.datetime(2025, 3, 31, 1, 30, tzinfo=BERLIN)
    assert latest_tick(fields, BERLIN, at) == at
    assert latest_tick(fields, BERLIN, at - dt.timedelta(seconds=1)) == dt.datetime(
        2025, 3, 30, 1, 30, tzinfo=BERLIN
    )
    repeated = dt.datetime(2025, 10, 26, 2, 40, fold=1, tzinfo=BERLIN)
    first = latest_tick(parse_cron("30 2 * * *"), BERLIN, repeated)
    assert first.isoformat() == "2025-10-26T02:30:00+02:00"
