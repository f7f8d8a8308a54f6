"""Catch-up plans: exactly the missed cron times in the window, oldest first, bounded (DST too)."""

from __future__ import annotations

import datetime as dt
import time
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowstone.errors import DefinitionError
from flowstone.scheduling import DEFAULT_MAX_CATCH_UP_TICKS, CatchUpPolicy, schedule, schedule_of
from flowstone.scheduling.catchup import (
    MAX_CATCH_UP_WINDOW,
    NO_CATCH_UP,
    CatchUpPlan,
    plan_catch_up,
)
from flowstone.scheduling.cron import CronFields, latest_tick, parse_cron, ticks_between

UTC = dt.UTC
ZONES = ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe")
CRONS = ("30 2 * * *", "45 1 * * *", "0 3 * * *", "5 * * * *", "*/20 * * * *", "0 */6 * * *")
START = dt.datetime(2024, 1, 1, tzinfo=UTC)
YEARS = dt.timedelta(days=3 * 365)


def _clock_changes(zone: ZoneInfo) -> list[dt.datetime]:
    """The UTC hours in 2024-2026 after which ``zone``'s offset differs."""
    hours = (START + dt.timedelta(hours=h) for h in range(3 * 365 * 24))
    return [
        hour
        for hour in hours
        if hour.astimezone(zone).utcoffset()
        != (hour + dt.timedelta(hours=1)).astimezone(zone).utcoffset()
    ]


CHANGES = {name: _clock_changes(ZoneInfo(name)) for name in ZONES}


@st.composite
def moments(draw: st.DrawFn, zone_name: str) -> dt.datetime:
    """A moment in 2024-2026, half of the time within three days of a clock change."""
    if draw(st.booleans()):
        change = draw(st.sampled_from(CHANGES[zone_name]))
        return change + dt.timedelta(minutes=draw(st.integers(-3 * 24 * 60, 3 * 24 * 60)))
    return START + dt.timedelta(minutes=draw(st.integers(0, int(YEARS.total_seconds()) // 60)))


@st.composite
def situations(
    draw: st.DrawFn,
) -> tuple[CronFields, ZoneInfo, CatchUpPolicy, dt.datetime, dt.datetime]:
    """A cron in a zone, a policy, a last recorded tick (a cron time) and a current tick."""
    zone_name = draw(st.sampled_from(ZONES))
    zone, fields = ZoneInfo(zone_name), parse_cron(draw(st.sampled_from(CRONS)))
    current = latest_tick(fields, zone, draw(moments(zone_name)))
    gap = dt.timedelta(minutes=draw(st.integers(0, 5 * 24 * 60)))
    last = latest_tick(fields, zone, current - gap)
    policy = CatchUpPolicy(
        window=dt.timedelta(minutes=draw(st.integers(1, 4 * 24 * 60))),
        max_ticks=draw(st.integers(1, 12)),
    )
    return fields, zone, policy, last, current


def _instants(ticks: tuple[dt.datetime, ...] | list[dt.datetime]) -> list[dt.datetime]:
    return [tick.astimezone(UTC) for tick in ticks]


def _missed(
    fields: CronFields, zone: ZoneInfo, last: dt.datetime, current: dt.datetime
) -> list[dt.datetime]:
    """Every cron time strictly between ``last`` and ``current`` (the definition of missed).

    Compared in UTC: aware datetimes in one zone compare (and subtract) as wall-clock times.
    """
    end = current.astimezone(UTC)
    return [t for t in ticks_between(fields, zone, last, current) if t.astimezone(UTC) < end]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(situations())
def test_a_plan_runs_the_newest_missed_ticks_in_the_window_oldest_first(
    situation: tuple[CronFields, ZoneInfo, CatchUpPolicy, dt.datetime, dt.datetime],
) -> None:
    fields, zone, policy, last, current = situation
    plan = plan_catch_up(fields, zone, policy, last=last, current=current)

    after_last = [t for t in (plan.not_run_first, *plan.ticks) if t is not None]
    assert all(t.astimezone(UTC) > last.astimezone(UTC) for t in after_last)  # never ``last``
    missed = _missed(fields, zone, last, current)
    in_window = [t for t in missed if t.astimezone(UTC) >= current.astimezone(UTC) - policy.window]
    expected = in_window[-policy.max_ticks :]
    assert _instants(plan.ticks) == _instants(expected)
    assert _instants(plan.ticks) == sorted(set(_instants(plan.ticks)))  # oldest first, once
    for tick in plan.ticks:  # each in the schedule's zone, as the schedule's functions get it
        assert tick.tzinfo == zone
    not_run = missed[: len(missed) - len(expected)]
    if not_run:
        assert _instants([plan.not_run_first, plan.not_run_last]) == _instants(  # type: ignore[list-item]
            [not_run[0], not_run[-1]]
        )
    else:
        assert (plan.not_run_first, plan.not_run_last) == (None, None)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(situations(), st.data())
def test_replanning_after_part_of_a_plan_ran_plans_only_the_rest(
    situation: tuple[CronFields, ZoneInfo, CatchUpPolicy, dt.datetime, dt.datetime],
    data: st.DataObject,
) -> None:
    """A crash, a second beat or a redelivered message finds the ticks already recorded."""
    fields, zone, policy, last, current = situation
    plan = plan_catch_up(fields, zone, policy, last=last, current=current)
    recorded = [t for t in (plan.not_run_last, *plan.ticks) if t is not None]
    if not recorded:
        return
    done = data.draw(st.integers(0, len(recorded) - 1))
    again = plan_catch_up(fields, zone, policy, last=recorded[done], current=current)
    assert _instants(again.ticks) == _instants(recorded[done + 1 :])
    assert again.not_run_last is None
    assert plan_catch_up(fields, zone, policy, last=current, current=current) == NO_CATCH_UP


def _check_ticks_after(
    fields: CronFields, zone: ZoneInfo, start: dt.datetime, end: dt.datetime
) -> list[dt.datetime]:
    """``ticks_between`` from ``start``: each after it, at most ``end``, in order, once."""
    ticks = _instants(list(ticks_between(fields, zone, start, end)))
    assert all(start.astimezone(UTC) < t <= end.astimezone(UTC) for t in ticks), start
    assert ticks == sorted(set(ticks))
    return ticks


@pytest.mark.parametrize("zone_name", ZONES)
def test_ticks_between_excludes_its_start_at_every_clock_change(zone_name: str) -> None:
    """Started at any tick near any change (2024-2026), the next ticks are the later ones only.

    A fixed-time cron maps the repeated hour's second wall time back to the first, which is
    the start itself when the start is that first occurrence (Berlin's 02:30+02:00 on
    2026-10-25): it must not come out again, or catch-up records a false ``missed`` row.
    """
    zone = ZoneInfo(zone_name)
    window = dt.timedelta(hours=6)
    for change in CHANGES[zone_name]:
        for expression in CRONS:
            fields = parse_cron(expression)
            ticks = _check_ticks_after(fields, zone, change - window, change + window)
            for index, tick in enumerate(ticks):
                after = _check_ticks_after(fields, zone, tick, change + window)
                assert after == ticks[index + 1 :], (expression, tick)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ZONES).flatmap(lambda z: st.tuples(st.just(z), moments(z))), st.data())
def test_ticks_between_yields_only_later_ticks_from_any_start(
    zone_and_start: tuple[str, dt.datetime], data: st.DataObject
) -> None:
    zone_name, start = zone_and_start
    fields = parse_cron(data.draw(st.sampled_from(CRONS)))
    zone = ZoneInfo(zone_name)
    _check_ticks_after(fields, zone, start, start + dt.timedelta(days=2))
    tick = latest_tick(fields, zone, start)
    _check_ticks_after(fields, zone, tick, tick + dt.timedelta(days=2))


def test_the_last_tick_in_the_repeated_hour_is_not_missed_the_next_day() -> None:
    nightly = parse_cron("30 2 * * *")
    last = dt.datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN)
    assert last.utcoffset() == dt.timedelta(hours=2)  # the first of the two 02:30s
    current = latest_tick(nightly, BERLIN, dt.datetime(2026, 10, 26, 12, tzinfo=UTC))
    assert current.isoformat() == "2026-10-26T02:30:00+01:00"
    assert plan_catch_up(nightly, BERLIN, WEEK, last=last, current=current) == NO_CATCH_UP


BERLIN = ZoneInfo("Europe/Berlin")
DAILY = parse_cron("30 1 * * *")
WEEK = CatchUpPolicy(window=dt.timedelta(days=7), max_ticks=3)


def _berlin(day: int, month: int = 3) -> dt.datetime:
    return dt.datetime(2025, month, day, 1, 30, tzinfo=BERLIN)


def test_the_first_tick_of_a_schedule_replays_nothing() -> None:
    assert plan_catch_up(DAILY, BERLIN, WEEK, last=None, current=_berlin(31)) == NO_CATCH_UP


def test_a_last_tick_of_another_cron_replays_nothing() -> None:
    """The cron or timezone changed: the gap since the old cron's tick is not a gap in this one."""
    other = dt.datetime(2025, 3, 28, 4, 0, tzinfo=BERLIN)
    assert plan_catch_up(DAILY, BERLIN, WEEK, last=other, current=_berlin(31)) == NO_CATCH_UP


def test_the_nights_missed_across_the_spring_change_run_for_their_own_days() -> None:
    plan = plan_catch_up(DAILY, BERLIN, WEEK, last=_berlin(24), current=_berlin(31))
    assert [t.isoformat() for t in plan.ticks] == [
        "2025-03-28T01:30:00+01:00",
        "2025-03-29T01:30:00+01:00",
        "2025-03-30T01:30:00+01:00",
    ]
    assert plan == CatchUpPlan(
        ticks=plan.ticks, not_run_first=_berlin(25), not_run_last=_berlin(27)
    )


def test_ticks_older_than_the_window_are_not_run() -> None:
    two_days = CatchUpPolicy(window=dt.timedelta(days=2))
    plan = plan_catch_up(DAILY, BERLIN, two_days, last=_berlin(20), current=_berlin(31))
    assert [t.isoformat() for t in plan.ticks] == [
        "2025-03-29T01:30:00+01:00",
        "2025-03-30T01:30:00+01:00",
    ]
    assert (plan.not_run_first, plan.not_run_last) == (_berlin(21), _berlin(28))


def test_the_work_follows_the_bound_not_the_gap() -> None:
    """An every-minute cron down for a year, with the largest window: a handful of ticks read."""
    policy = CatchUpPolicy(window=MAX_CATCH_UP_WINDOW, max_ticks=3)
    current = dt.datetime(2026, 1, 1, tzinfo=UTC)
    started = time.perf_counter()
    plan = plan_catch_up(
        parse_cron("* * * * *"),
        ZoneInfo("UTC"),
        policy,
        last=current - dt.timedelta(days=400),
        current=current,
    )
    assert time.perf_counter() - started < 1
    assert plan.ticks == tuple(current - dt.timedelta(minutes=m) for m in (3, 2, 1))
    assert plan.not_run_first == current - dt.timedelta(days=400, minutes=-1)
    assert plan.not_run_last == current - dt.timedelta(minutes=4)


def test_the_decorator_builds_a_policy_with_the_default_bound() -> None:
    @schedule(cron="@daily", assets=["a"], catch_up=dt.timedelta(days=2))
    def nightly() -> None:
        """Nightly."""

    definition = schedule_of(nightly)
    assert definition is not None
    assert definition.spec.catch_up == CatchUpPolicy(
        window=dt.timedelta(days=2), max_ticks=DEFAULT_MAX_CATCH_UP_TICKS
    )

    @schedule(cron="@daily", assets=["a"])
    def plain() -> None:
        """Plain."""

    plain_definition = schedule_of(plain)
    assert plain_definition is not None
    assert plain_definition.spec.catch_up is None
    assert plain_definition.plan_catch_up(last=_berlin(1), current=_berlin(31)) == NO_CATCH_UP


def test_the_window_reads_as_words() -> None:
    assert WEEK.window_text == "7 days"
    assert CatchUpPolicy(window=dt.timedelta(days=1, hours=6, seconds=1)).window_text == (
        "1 day 6 hours 1 second"
    )
    assert CatchUpPolicy(window=dt.timedelta(microseconds=5)).window_text == "less than a second"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"catch_up": dt.timedelta(0)}, "catch_up must be a timedelta above zero"),
        ({"catch_up": dt.timedelta(hours=-1)}, "catch_up must be a timedelta above zero"),
        ({"catch_up": dt.timedelta(days=367)}, "at most 366 days"),
        ({"catch_up": 2}, "catch_up must be a timedelta"),
        ({"catch_up": dt.timedelta(days=1), "max_catch_up_ticks": 0}, "from 1 to 1000, got 0"),
        ({"catch_up": dt.timedelta(days=1), "max_catch_up_ticks": 1001}, "got 1001"),
        ({"catch_up": dt.timedelta(days=1), "max_catch_up_ticks": True}, "got True"),
        ({"catch_up": dt.timedelta(days=1), "max_catch_up_ticks": "5"}, "got '5'"),
        ({"max_catch_up_ticks": 5}, "max_catch_up_ticks needs catch_up"),
    ],
)
def test_bad_catch_up_options_are_definition_errors(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(DefinitionError, match=f"schedule 'bad': .*{message}"):

        @schedule(cron="@daily", assets=["a"], name="bad", **options)  # type: ignore[arg-type]
        def bad() -> None:
            """Bad."""
