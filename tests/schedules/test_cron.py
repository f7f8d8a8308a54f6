"""Cron parsing and tick times in a timezone, across daylight saving time changes."""

from __future__ import annotations

import datetime as dt
import itertools
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


ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe")
FIXED_TIMES = ("30 2 * * *", "15 2 * * *", "45 1 * * *", "0 3 * * *")


@pytest.mark.parametrize("zone_name", ZONES)
@pytest.mark.parametrize("expression", FIXED_TIMES)
def test_every_day_of_three_years_has_one_tick_whenever_its_message_is_handled(
    zone_name: str, expression: str
) -> None:
    """Each local day has exactly one tick of a daily cron (a wall time skipped by the spring
    change fires after the gap, a repeated one fires once), and a message handled at any moment
    from that tick until the next one stands for that tick, across every clock change.
    """
    fields, zone = parse_cron(expression), ZoneInfo(zone_name)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    ticks = list(ticks_between(fields, zone, start, dt.datetime(2027, 1, 1, tzinfo=dt.UTC)))
    days = [tick.astimezone(zone).date() for tick in ticks]
    first = days[0]
    assert days == [first + dt.timedelta(days=n) for n in range(len(days))]  # one per day, no gap
    for tick, following in itertools.pairwise(t.astimezone(dt.UTC) for t in ticks):
        span = following - tick  # in UTC: aware arithmetic in a zone is wall-clock arithmetic
        for moment in (tick, tick + span / 2, following - dt.timedelta(seconds=1)):
            assert latest_tick(fields, zone, moment).astimezone(dt.UTC) == tick, moment


@pytest.mark.parametrize("zone_name", ZONES)
def test_an_hourly_cron_stands_for_the_right_tick_around_every_clock_change(
    zone_name: str,
) -> None:
    fields, zone = parse_cron("5 * * * *"), ZoneInfo(zone_name)

    def offset(moment: dt.datetime) -> dt.timedelta | None:
        return moment.astimezone(zone).utcoffset()

    days = [dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=d) for d in range(3 * 366)]
    changes = [
        day + dt.timedelta(hours=h)
        for day in days
        if offset(day) != offset(day + dt.timedelta(days=1))
        for h in range(24)
        if offset(day + dt.timedelta(hours=h)) != offset(day + dt.timedelta(hours=h + 1))
    ]
    assert len(changes) == 6  # two a year
    for change in changes:
        ticks = list(
            ticks_between(
                fields, zone, change - dt.timedelta(hours=6), change + dt.timedelta(hours=6)
            )
        )
        instants = [t.astimezone(dt.UTC) for t in ticks]
        assert instants == sorted(set(instants))  # each real hour once, in order
        for tick, following in itertools.pairwise(instants):
            for moment in (
                tick,
                tick + (following - tick) / 2,
                following - dt.timedelta(seconds=1),
            ):
                assert latest_tick(fields, zone, moment).astimezone(dt.UTC) == tick, moment


def test_a_late_message_on_the_autumn_change_stands_for_that_day_in_berlin() -> None:
    fields, zone = parse_cron("30 2 * * *"), ZoneInfo("Europe/Berlin")
    handled = dt.datetime(2024, 10, 27, 1, 10, tzinfo=dt.UTC)  # 02:10 CET, after 02:30 CEST ran
    tick = latest_tick(fields, zone, handled)
    assert tick.astimezone(dt.UTC) == dt.datetime(2024, 10, 27, 0, 30, tzinfo=dt.UTC)
