"""@schedule: definitions, partitions chosen from tick times (across DST), exactly-once ticks."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import pytest

from assets.models import Materialization, Run
from flowstone.errors import DefinitionError
from flowstone.partitions import DailyPartitions, HourlyPartitions, encode_partition_key
from flowstone.registry import Registry
from flowstone.scheduling import ScheduleDefinition, previous_window, schedule, schedule_of
from flowstone.scheduling.cron import ticks_between
from schedules import services
from schedules.models import Tick
from tests.pipelines import scheduled

BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.UTC


def _definition(fn: object) -> ScheduleDefinition:
    definition = schedule_of(fn)
    assert definition is not None
    return definition


def _berlin_ticks(start: dt.date, end: dt.date) -> list[dt.datetime]:
    definition = _definition(scheduled.berlin_nightly)
    return list(
        ticks_between(
            definition.spec.cron_fields,
            BERLIN,
            dt.datetime.combine(start, dt.time(), tzinfo=BERLIN),
            dt.datetime.combine(end, dt.time(), tzinfo=BERLIN),
        )
    )


def test_the_decorator_attaches_a_definition_and_returns_the_function() -> None:
    definition = _definition(scheduled.berlin_nightly)
    assert definition.fn is scheduled.berlin_nightly
    assert definition.spec.assets == ("s_report",)
    assert definition.spec.include_upstreams
    assert definition.spec.description == "Yesterday's report in Berlin, except on Christmas."
    assert callable(scheduled.berlin_nightly)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cron": "nope", "assets": ["a"]}, "must have 5 fields"),
        ({"cron": "@daily", "assets": []}, "selects no assets"),
        ({"cron": "@daily", "assets": "abc"}, "assets must be a list"),
        ({"cron": "@daily", "assets": ["a", "a"]}, "selects an asset twice"),
        ({"cron": "@daily", "assets": ["a"], "timezone": "Nowhere/Land"}, "unknown timezone"),
        ({"cron": "@daily", "assets": ["not a name"]}, "invalid asset"),
        ({"cron": "@daily", "assets": ["a"], "name": "bad name"}, "invalid schedule"),
    ],
)
def test_bad_options_raise_at_decoration(options: dict[str, object], message: str) -> None:
    def fn() -> None: ...

    with pytest.raises(DefinitionError, match=message):
        schedule(**options)(fn)  # type: ignore[arg-type]


def test_the_function_takes_the_tick_time_or_nothing() -> None:
    def two(a: object, b: object) -> None: ...

    with pytest.raises(DefinitionError, match="tick time as its only parameter"):
        schedule(cron="@daily", assets=["a"])(two)


def test_previous_window_of_daily_and_hourly_partitions() -> None:
    daily = DailyPartitions(start=dt.date(2025, 1, 1), timezone="Europe/Berlin")
    assert previous_window(daily, dt.datetime(2025, 3, 31, 1, 30, tzinfo=BERLIN)) == dt.date(
        2025, 3, 30
    )
    assert previous_window(daily, dt.datetime(2025, 3, 31, 0, 0, tzinfo=BERLIN)) == dt.date(
        2025, 3, 30
    )
    # 2025-03-30T23:30Z is already 01:30 on the 31st in Berlin: the previous day is the 30th.
    assert previous_window(daily, dt.datetime(2025, 3, 30, 23, 30, tzinfo=UTC)) == dt.date(
        2025, 3, 30
    )
    assert previous_window(daily, dt.datetime(2025, 1, 1, 12, tzinfo=BERLIN)) is None
    hourly = HourlyPartitions(start=dt.date(2025, 1, 1), timezone="Europe/Berlin")
    second_two = dt.datetime(2025, 10, 26, 2, 0, fold=1, tzinfo=BERLIN)
    assert previous_window(hourly, second_two.astimezone(UTC) + dt.timedelta(hours=1)) == (
        dt.datetime(2025, 10, 26, 2, 0, fold=1, tzinfo=BERLIN)
    )


def test_a_daily_schedule_across_both_dst_changes_chooses_every_previous_day_once(
    registry: Registry,
) -> None:
    definition = registry.get_schedule("berlin_nightly")
    for start, end in (
        (dt.date(2025, 3, 27), dt.date(2025, 4, 3)),
        (dt.date(2025, 10, 23), dt.date(2025, 10, 30)),
    ):
        ticks = _berlin_ticks(start, end)
        assert [t.strftime("%H:%M") for t in ticks] == ["01:30"] * 7
        chosen = [definition.evaluate(t, registry.assets).targets for t in ticks]
        days = [start + dt.timedelta(days=n - 1) for n in range(7)]  # each tick: the day before
        assert chosen == [(("s_report", day),) for day in days]
        gaps = {(b - a) for a, b in itertools.pairwise(ticks)}
        assert gaps <= {dt.timedelta(hours=23), dt.timedelta(hours=24), dt.timedelta(hours=25)}


def test_an_hourly_schedule_in_the_repeated_hour_runs_both_hours(registry: Registry) -> None:
    definition = registry.get_schedule("berlin_hourly")
    ticks = list(
        ticks_between(
            definition.spec.cron_fields,
            BERLIN,
            dt.datetime(2025, 10, 26, 1, 30, tzinfo=BERLIN),
            dt.datetime(2025, 10, 26, 4, 0, tzinfo=BERLIN),
        )
    )
    partitions = [definition.evaluate(t, registry.assets).targets[0][1] for t in ticks]
    assert [p.isoformat() for p in partitions] == [  # type: ignore[union-attr]
        "2025-10-26T01:00:00+02:00",
        "2025-10-26T02:00:00+02:00",
        "2025-10-26T02:00:00+01:00",
        "2025-10-26T03:00:00+01:00",
    ]


@pytest.mark.embedded
@pytest.mark.django_db
def test_ticks_across_the_end_of_dst_run_the_right_partitions(registry: Registry) -> None:
    definition = registry.get_schedule("berlin_nightly")
    ticks = _berlin_ticks(dt.date(2025, 10, 24), dt.date(2025, 10, 29))
    outcomes = [services.evaluate_schedule_tick(definition, t) for t in ticks]

    assert [o.status for o in outcomes] == ["requested"] * 5
    rows = Tick.objects.filter(name="berlin_nightly").order_by("tick_time")
    assert [r.run_key for r in rows] == [
        "2025-10-23T23:30:00+00:00",
        "2025-10-24T23:30:00+00:00",
        "2025-10-25T23:30:00+00:00",
        "2025-10-27T00:30:00+00:00",
        "2025-10-28T00:30:00+00:00",
    ]
    assert [r.partition_keys for r in rows] == [
        [encode_partition_key(dt.date(2025, 10, day))] for day in range(23, 28)
    ]
    run = rows[3].run
    assert run is not None
    assert run.kind == "materialize_all"
    assert run.requested_by == "schedule:berlin_nightly"
    assert run.config.tags == {
        "flowstone/schedule": "berlin_nightly",
        "flowstone/run_key": "2025-10-27T00:30:00+00:00",
    }
    steps = Materialization.objects.filter(run=run).values_list("asset", "partition_key")
    assert set(steps) == {("s_daily", "d:2025-10-26"), ("s_report", "d:2025-10-26")}


@pytest.mark.embedded
@pytest.mark.django_db
def test_the_same_tick_evaluated_twice_starts_one_run(registry: Registry) -> None:
    definition = registry.get_schedule("berlin_nightly")
    tick = dt.datetime(2025, 3, 31, 1, 30, tzinfo=BERLIN)

    first = services.evaluate_schedule_tick(definition, tick)
    second = services.evaluate_schedule_tick(definition, tick)
    via_beat = services.tick_schedule("berlin_nightly", now=tick + dt.timedelta(minutes=5))

    assert first.is_new
    assert first.run_id is not None
    assert not second.is_new
    assert not via_beat.is_new
    assert via_beat.run_key == first.run_key
    assert Run.objects.count() == 1
    assert Tick.objects.count() == 1


@pytest.mark.embedded
@pytest.mark.django_db
def test_skips_and_failures_are_recorded_with_their_reason(registry: Registry) -> None:
    christmas = services.evaluate_schedule_tick(
        registry.get_schedule("berlin_nightly"), dt.datetime(2025, 12, 26, 1, 30, tzinfo=BERLIN)
    )
    too_early = services.evaluate_schedule_tick(
        registry.get_schedule("berlin_half_past_two"), dt.datetime(2025, 1, 1, 2, 30, tzinfo=BERLIN)
    )

    assert (christmas.status, christmas.reason) == ("skipped", "no report for Christmas")
    assert too_early.status == "skipped"
    assert too_early.reason == (
        "asset 's_daily' has no complete partition before 2025-01-01T02:30:00+01:00"
    )
    assert Run.objects.count() == 0
    assert set(Tick.objects.values_list("status", flat=True)) == {"skipped"}


@pytest.mark.embedded
@pytest.mark.django_db
def test_a_partition_fn_and_an_unpartitioned_asset(registry: Registry) -> None:
    monday = dt.datetime(2025, 6, 2, 6, 0, tzinfo=UTC)
    weekly = services.evaluate_schedule_tick(registry.get_schedule("weekly_eu"), monday)
    plain = services.tick_schedule("every_five_minutes", now=monday + dt.timedelta(minutes=7))

    assert Tick.objects.get(name="weekly_eu").partition_keys == ["s:eu"]
    assert weekly.status == "requested"
    assert plain.run_key == "2025-06-02T06:05:00+00:00"
    assert Tick.objects.get(name="every_five_minutes").partition_keys == [""]


@pytest.mark.embedded
@pytest.mark.django_db
def test_a_partition_the_asset_does_not_have_fails_the_tick(registry: Registry) -> None:
    definition = registry.get_schedule("weekly_eu")
    broken = dataclasses.replace(definition, partition_fn=lambda _tick_time: "mars")
    outcome = services.evaluate_schedule_tick(broken, dt.datetime(2025, 6, 2, 6, tzinfo=UTC))

    assert outcome.status == "failed"
    assert "'mars'" in outcome.reason
    assert Run.objects.count() == 0
    assert Tick.objects.get().status == "failed"
