"""Partitions definitions (static, time windows, multi, dynamic) and partition mappings."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

import flowstone.partitions
from flowstone.errors import DefinitionError, PartitionKeyError, ValidationFailedError
from flowstone.partitions import (
    AllPartitionsMapping,
    DailyPartitions,
    DimensionPartitionMapping,
    DynamicPartitions,
    HourlyPartitions,
    IdentityPartitionMapping,
    MemoryDynamicKeyStore,
    MonthlyPartitions,
    MultiPartitions,
    PartitionsDefinition,
    StaticPartitions,
    TimeWindowPartitionMapping,
    TimeWindowPartitions,
    WeeklyPartitions,
    check_mapping,
    decode_partition_key,
    encode_partition_key,
    requires_explicit_mapping,
)
from flowstone.partitions.codec import format_partition_value

BERLIN = ZoneInfo("Europe/Berlin")
REGIONS = StaticPartitions(keys=("eu", "us", "a|b:c"))
DAILY = DailyPartitions(start=date(2025, 1, 1))
WEEKLY = WeeklyPartitions(start=date(2025, 1, 6))


def naive(text: str) -> datetime:
    """A naive datetime, on purpose."""
    return datetime.fromisoformat(text)


def test_all_is_pinned() -> None:
    assert flowstone.partitions.__all__ == [
        "MAX_PARTITION_KEY_LENGTH",
        "UNPARTITIONED_KEY",
        "AllPartitionsMapping",
        "Cadence",
        "DailyPartitions",
        "DimensionPartitionMapping",
        "DynamicKeyStore",
        "DynamicPartitions",
        "HourlyPartitions",
        "IdentityPartitionMapping",
        "MemoryDynamicKeyStore",
        "MonthlyPartitions",
        "MultiPartitions",
        "PartitionMapping",
        "PartitionValue",
        "PartitionsDefinition",
        "StaticPartitions",
        "TimeWindowPartitionMapping",
        "TimeWindowPartitions",
        "WeeklyPartitions",
        "check_mapping",
        "decode_partition_key",
        "encode_partition_key",
        "requires_explicit_mapping",
    ]


# --- static -----------------------------------------------------------------------------------


def test_static_keys_validate_and_parse() -> None:
    assert REGIONS.keys() == ["eu", "us", "a|b:c"]
    assert REGIONS.validate("us") == "us"
    assert REGIONS.parse("a|b:c") == "a|b:c"
    assert REGIONS.encode_key("eu") == "s:eu"
    assert REGIONS.decode_key("s:a|b:c") == "a|b:c"
    with pytest.raises(PartitionKeyError) as caught:
        REGIONS.validate("asia")
    assert caught.value.message == "'asia' is not one of the static partitions eu, us, a|b:c"
    with pytest.raises(PartitionKeyError, match="take str partition values, got int \\(1\\)"):
        REGIONS.validate(1)
    with pytest.raises(PartitionKeyError, match="is not one of"):
        REGIONS.decode_key("s:asia")
    with pytest.raises(PartitionKeyError, match="unpartitioned"):
        REGIONS.decode_key("")


@pytest.mark.parametrize(
    ("keys", "fragment"),
    [
        (("a", "b", "a"), "duplicate keys ['a']"),
        ((), "at least one key"),
        ([], "at least one key"),
        (("a", 1), "must be a str, got int"),
        (("a\x00",), "NUL"),
        (("",), "empty string"),
        ("abc", "not the str 'abc'"),
    ],
)
def test_static_rejects_bad_keys(keys: object, fragment: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        StaticPartitions(keys=keys)  # type: ignore[arg-type]
    assert fragment in caught.value.message


def test_static_equality_hash_repr() -> None:
    same = StaticPartitions(keys=["eu", "us", "a|b:c"])
    assert same == REGIONS
    assert hash(same) == hash(REGIONS)
    assert StaticPartitions(keys=("us", "eu", "a|b:c")) != REGIONS
    assert repr(REGIONS) == "StaticPartitions(keys=('eu', 'us', 'a|b:c'))"
    assert isinstance(REGIONS, PartitionsDefinition)
    with pytest.raises(dataclasses.FrozenInstanceError):
        REGIONS.partition_keys = ("x",)  # type: ignore[misc]


# --- time windows ---------------------------------------------------------------------------------


def test_daily_keys_end_is_exclusive() -> None:
    daily = DailyPartitions(start=date(2025, 1, 30), end=date(2025, 2, 2))
    assert daily.keys() == [date(2025, 1, 30), date(2025, 1, 31), date(2025, 2, 1)]
    described = "daily partitions from 2025-01-30 to 2025-02-02 (exclusive)"
    with pytest.raises(PartitionKeyError) as caught:
        daily.validate(date(2025, 2, 2))
    assert caught.value.message == (
        f"2025-02-02 is not before the end (2025-02-02, exclusive) of the {described}"
    )
    with pytest.raises(PartitionKeyError) as caught:
        daily.validate(date(2025, 1, 29))
    assert caught.value.message == (
        f"2025-01-29 is before the first partition (2025-01-30) of the {described}"
    )


@pytest.mark.parametrize(
    ("definition", "described"),
    [
        (DailyPartitions(start=date(2025, 12, 1)), "daily partitions from 2025-12-01"),
        (
            HourlyPartitions(start=date(2025, 1, 1), timezone="Europe/Berlin"),
            "hourly partitions from 2025-01-01T00:00:00+01:00 in Europe/Berlin",
        ),
        (
            StaticPartitions(keys=[f"k{i}" for i in range(12)]),
            "static partitions k0, k1, k2, k3, k4, k5, k6, k7, k8, k9 and 2 more",
        ),
        (DynamicPartitions(name="customers"), "dynamic partitions 'customers'"),
        (
            MultiPartitions(
                dimensions={"region": StaticPartitions(keys=["eu"]), "day": DAILY},
            ),
            "partitions by region (static partitions eu) x day (daily partitions from 2025-01-01)",
        ),
    ],
)
def test_each_kind_describes_itself_without_python_reprs(
    definition: PartitionsDefinition, described: str
) -> None:
    assert definition.describe() == described


def test_partition_values_show_as_people_write_them() -> None:
    assert format_partition_value(date(2024, 1, 1)) == "2024-01-01"
    assert format_partition_value(datetime(2024, 1, 1, 5, tzinfo=UTC)) == (
        "2024-01-01T05:00:00+00:00"
    )
    assert format_partition_value(("acme", date(2024, 1, 1))) == '["acme", "2024-01-01"]'
    assert format_partition_value(None) == "(unpartitioned)"
    assert format_partition_value(7) == "7"


def test_open_ended_keys_stop_at_the_last_complete_window() -> None:
    assert DAILY.keys(now=datetime(2025, 1, 3, tzinfo=UTC)) == [date(2025, 1, 1), date(2025, 1, 2)]
    assert DAILY.keys(now=datetime(2025, 1, 2, 23, 59, tzinfo=UTC)) == [date(2025, 1, 1)]
    assert DAILY.keys(now=datetime(2024, 12, 1, tzinfo=UTC)) == []
    last = DAILY.keys()[-1]
    assert isinstance(last, date)
    assert last < datetime.now(UTC).date()
    with pytest.raises(ValidationFailedError, match="aware"):
        DAILY.keys(now=naive("2025-01-03T00:00"))
    # Validation never reads the clock: future windows are partitions too.
    assert DAILY.validate(date(2999, 1, 1)) == date(2999, 1, 1)


def test_daily_keys_follow_the_local_timezone() -> None:
    tokyo = DailyPartitions(start=date(2025, 1, 1), timezone="Asia/Tokyo")
    # Midnight 2025-01-03 in Tokyo is 15:00 UTC on 2025-01-02.
    assert tokyo.keys(now=datetime(2025, 1, 2, 15, tzinfo=UTC)) == [
        date(2025, 1, 1),
        date(2025, 1, 2),
    ]
    start, end = tokyo.window(date(2025, 1, 2))
    assert start == datetime(2025, 1, 2, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert end - start == timedelta(days=1)


def test_validate_checks_types_for_each_cadence() -> None:
    with pytest.raises(PartitionKeyError, match="daily partitions take a date, got datetime"):
        DAILY.validate(datetime(2025, 1, 3, tzinfo=UTC))
    with pytest.raises(PartitionKeyError, match="take a date, got str"):
        DAILY.validate("2025-01-03")
    hourly = HourlyPartitions(start=date(2025, 1, 1), timezone="Europe/Berlin")
    with pytest.raises(PartitionKeyError, match="aware datetime, got date"):
        hourly.validate(date(2025, 1, 3))
    with pytest.raises(PartitionKeyError, match="aware datetime"):
        hourly.validate(naive("2025-01-03T05:00"))
    with pytest.raises(PartitionKeyError, match="not the start of an hour"):
        hourly.validate(datetime(2025, 1, 3, 5, 30, tzinfo=BERLIN))
    # An aware value in another zone is normalised to the definition's zone.
    value = hourly.validate(datetime(2025, 1, 3, 4, tzinfo=UTC))
    assert value == datetime(2025, 1, 3, 5, tzinfo=BERLIN)
    assert isinstance(value, datetime)
    assert value.tzinfo is BERLIN


def test_hourly_keys_on_the_day_dst_starts_in_berlin() -> None:
    hourly = HourlyPartitions(
        start=date(2025, 3, 30), end=date(2025, 3, 31), timezone="Europe/Berlin"
    )
    keys = hourly.keys()
    assert len(keys) == 23
    hours = [key.hour for key in keys if isinstance(key, datetime)]
    assert hours == [0, 1, *range(3, 24)]
    assert encode_partition_key(keys[1]) == "t:2025-03-30T01:00:00+01:00"
    assert encode_partition_key(keys[2]) == "t:2025-03-30T03:00:00+02:00"
    start, end = hourly.window(keys[1])
    assert start == datetime(2025, 3, 30, 1, tzinfo=BERLIN)
    assert end == datetime(2025, 3, 30, 3, tzinfo=BERLIN)
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=1)
    with pytest.raises(PartitionKeyError, match="does not exist"):
        hourly.parse("2025-03-30T02:00")


def test_hourly_keys_on_the_day_dst_ends_in_berlin() -> None:
    hourly = HourlyPartitions(
        start=date(2025, 10, 26), end=date(2025, 10, 27), timezone="Europe/Berlin"
    )
    keys = hourly.keys()
    assert len(keys) == 25
    encoded = [encode_partition_key(key) for key in keys]
    assert len(set(encoded)) == 25
    assert encoded[2:4] == ["t:2025-10-26T02:00:00+02:00", "t:2025-10-26T02:00:00+01:00"]
    instants = [key.timestamp() for key in keys if isinstance(key, datetime)]
    assert all(later - earlier == 3600 for earlier, later in itertools.pairwise(instants))
    # Every key survives the codec and validates back to the same instant.
    for key in encoded:
        value = hourly.decode_key(key)
        assert encode_partition_key(value) == key
    with pytest.raises(PartitionKeyError, match="happens twice"):
        hourly.parse("2025-10-26T02:00")
    second = hourly.parse("2025-10-26T02:00+01:00")
    assert encode_partition_key(second) == "t:2025-10-26T02:00:00+01:00"
    start, end = hourly.window(second)
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(hours=1)


def test_daily_windows_across_dst_are_23_and_25_hours() -> None:
    daily = DailyPartitions(start=date(2025, 1, 1), timezone="Europe/Berlin")
    spring_start, spring_end = daily.window(date(2025, 3, 30))
    autumn_start, autumn_end = daily.window(date(2025, 10, 26))
    assert spring_end.astimezone(UTC) - spring_start.astimezone(UTC) == timedelta(hours=23)
    assert autumn_end.astimezone(UTC) - autumn_start.astimezone(UTC) == timedelta(hours=25)


def test_hourly_parse_forms() -> None:
    hourly = HourlyPartitions(start=date(2025, 1, 1), timezone="Europe/Berlin")
    expected = datetime(2025, 1, 3, 5, tzinfo=BERLIN)
    assert hourly.parse("2025-01-03T05:00") == expected
    assert hourly.parse("2025-01-03 05:00:00") == expected
    assert hourly.parse("2025-01-03T04:00Z") == expected
    assert hourly.parse("2025-01-03T05:00+01:00") == expected
    for bad in ("2025-01-03", "yesterday", "2025-01-03T5:00", "2025-01-03T25:00"):
        with pytest.raises(PartitionKeyError):
            hourly.parse(bad)


def test_weekly_alignment_and_parse() -> None:
    assert WEEKLY.parse("2025-01-13") == date(2025, 1, 13)
    with pytest.raises(
        PartitionKeyError, match="is a Wednesday; weekly partitions start on Monday"
    ):
        WEEKLY.validate(date(2025, 1, 15))
    with pytest.raises(DefinitionError, match="is a Wednesday"):
        WeeklyPartitions(start=date(2025, 1, 1))
    sunday_weeks = WeeklyPartitions(start=date(2025, 1, 5), end=date(2025, 1, 26), week_start=6)
    assert sunday_weeks.keys() == [date(2025, 1, 5), date(2025, 1, 12), date(2025, 1, 19)]


def test_monthly_alignment_and_parse() -> None:
    monthly = MonthlyPartitions(start=date(2024, 11, 1), end=date(2025, 3, 1))
    assert monthly.keys() == [
        date(2024, 11, 1),
        date(2024, 12, 1),
        date(2025, 1, 1),
        date(2025, 2, 1),
    ]
    assert monthly.parse("2025-01") == date(2025, 1, 1)
    assert monthly.parse("2025-01-01") == date(2025, 1, 1)
    with pytest.raises(PartitionKeyError, match="not the first day of a month"):
        monthly.parse("2025-01-15")
    assert monthly.window(date(2024, 12, 1)) == (
        datetime(2024, 12, 1, tzinfo=ZoneInfo("UTC")),
        datetime(2025, 1, 1, tzinfo=ZoneInfo("UTC")),
    )


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (
            {"cadence": "daily", "start": date(2025, 1, 1), "timezone": "Mars/Olympus"},
            "unknown timezone",
        ),
        (
            {"cadence": "daily", "start": date(2025, 1, 1), "timezone": "../etc/passwd"},
            "unknown timezone",
        ),
        ({"cadence": "daily", "start": date(2025, 1, 1), "timezone": ""}, "IANA name"),
        ({"cadence": "yearly", "start": date(2025, 1, 1)}, "cadence must be one of"),
        ({"cadence": "daily", "start": "2025-01-01"}, "must be a date or datetime"),
        ({"cadence": "daily", "start": date(2025, 1, 2), "end": date(2025, 1, 2)}, "must be after"),
        ({"cadence": "monthly", "start": date(2025, 1, 2)}, "not the first day of a month"),
        (
            {"cadence": "daily", "start": datetime(2025, 1, 1, 5, tzinfo=UTC)},
            "not the start of a day",
        ),
        (
            {"cadence": "hourly", "start": datetime(2025, 1, 1, 5, 30, tzinfo=UTC)},
            "start of an hour",
        ),
        ({"cadence": "weekly", "start": date(2025, 1, 6), "week_start": 7}, "week_start"),
        ({"cadence": "weekly", "start": date(2025, 1, 6), "week_start": True}, "week_start"),
        (
            {"cadence": "daily", "start": date(2025, 1, 6), "week_start": 2},
            "only applies to weekly",
        ),
    ],
)
def test_time_window_rejects_bad_options(options: dict[str, object], fragment: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        TimeWindowPartitions(**options)  # type: ignore[arg-type]
    assert fragment in caught.value.message


def test_time_window_normalises_start_so_equal_definitions_compare_equal() -> None:
    from_datetime = DailyPartitions(start=naive("2025-01-01T00:00"))
    from_aware = DailyPartitions(
        start=datetime(2024, 12, 31, 23, tzinfo=UTC), timezone="Europe/Berlin"
    )
    assert from_datetime == DAILY
    assert hash(from_datetime) == hash(DAILY)
    assert from_aware.start == date(2025, 1, 1)
    assert DailyPartitions(start=date(2025, 1, 2)) != DAILY
    assert DailyPartitions(start=date(2025, 1, 1), timezone="Europe/Berlin") != DAILY
    assert repr(DAILY) == (
        "TimeWindowPartitions(cadence='daily', start=datetime.date(2025, 1, 1), end=None, "
        "timezone='UTC', week_start=0)"
    )
    assert dataclasses.replace(DAILY, end=date(2025, 1, 3)).keys() == [
        date(2025, 1, 1),
        date(2025, 1, 2),
    ]
    assert len({DAILY, from_datetime, WEEKLY}) == 2


def test_keys_overlapping() -> None:
    start = datetime(2025, 1, 2, 12, tzinfo=UTC)
    assert DAILY.keys_overlapping(start, start + timedelta(days=1)) == [
        date(2025, 1, 2),
        date(2025, 1, 3),
    ]
    assert DAILY.keys_overlapping(start - timedelta(days=30), start) == [
        date(2025, 1, 1),
        date(2025, 1, 2),
    ]


# --- multi --------------------------------------------------------------------------------------


def make_multi() -> MultiPartitions:
    return MultiPartitions(
        dimensions={
            "tenant": StaticPartitions(keys=("acme", "globex")),
            "date": DailyPartitions(start=date(2025, 1, 1), end=date(2025, 1, 4)),
        }
    )


def test_multi_keys_are_the_cartesian_product_in_order() -> None:
    multi = make_multi()
    assert multi.dimension_names == ("tenant", "date")
    keys = multi.keys()
    assert len(keys) == 6
    assert keys[:3] == [
        ("acme", date(2025, 1, 1)),
        ("acme", date(2025, 1, 2)),
        ("acme", date(2025, 1, 3)),
    ]
    assert keys[3] == ("globex", date(2025, 1, 1))
    assert encode_partition_key(keys[0]) == 'T:["s:acme","d:2025-01-01"]'
    assert multi.decode_key('T:["s:acme","d:2025-01-01"]') == keys[0]


def test_multi_validate_and_parse() -> None:
    multi = make_multi()
    assert multi.validate(("globex", date(2025, 1, 2))) == ("globex", date(2025, 1, 2))
    assert multi.parse('["acme", "2025-01-03"]') == ("acme", date(2025, 1, 3))
    with pytest.raises(PartitionKeyError, match="dimension 'tenant'"):
        multi.validate(("initech", date(2025, 1, 2)))
    with pytest.raises(PartitionKeyError, match="tuple of 2 values"):
        multi.validate(["acme", date(2025, 1, 2)])
    with pytest.raises(PartitionKeyError, match="tuple of 2 values"):
        multi.validate(("acme",))
    with pytest.raises(PartitionKeyError, match="not JSON"):
        multi.parse("acme|2025-01-03")
    with pytest.raises(PartitionKeyError, match="JSON array of 2 strings"):
        multi.parse('["acme"]')
    with pytest.raises(PartitionKeyError, match="dimension 'date'"):
        multi.parse('["acme", "2025-01-09"]')


@pytest.mark.parametrize(
    ("dimensions", "fragment"),
    [
        ({}, "at least one dimension"),
        ({"1st": REGIONS}, "invalid dimension name"),
        ({"a-b": REGIONS}, "invalid dimension name"),
        ({"x" * 65: REGIONS}, "invalid dimension name"),
        (
            {"inner": MultiPartitions(dimensions={"r": REGIONS})},
            "cannot itself be a MultiPartitions",
        ),
        ({"r": "eu"}, "must be a PartitionsDefinition"),
        ((("r", REGIONS), ("r", DAILY)), "duplicate dimension names"),
        ([("r",)], "mapping or (name, definition) pairs"),
    ],
)
def test_multi_rejects_bad_dimensions(dimensions: object, fragment: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        MultiPartitions(dimensions=dimensions)  # type: ignore[arg-type]
    assert fragment in caught.value.message


def test_multi_equality_hash_repr() -> None:
    multi = make_multi()
    pairs = MultiPartitions(dimensions=tuple(multi.dimensions))
    assert pairs == multi
    assert hash(pairs) == hash(multi)
    assert MultiPartitions(dimensions=dict(reversed(multi.dimensions))) != multi
    assert repr(multi).startswith("MultiPartitions(dimensions=(('tenant', StaticPartitions(")
    assert multi.dimension("date") == multi.dimensions[1][1]
    with pytest.raises(DefinitionError, match="no dimension 'region'"):
        multi.dimension("region")


# --- dynamic ------------------------------------------------------------------------------------


def test_dynamic_partitions_use_the_store() -> None:
    customers = DynamicPartitions(name="customers")
    store = MemoryDynamicKeyStore()
    assert customers.keys(store=store) == []
    store.add_keys("customers", ["acme", "globex", "acme"])
    store.add_keys("customers", ["initech"])
    assert customers.keys(store=store) == ["acme", "globex", "initech"]
    assert customers.validate("acme", store=store) == "acme"
    assert customers.validate("not-yet-added") == "not-yet-added"
    assert customers.parse("a|b") == "a|b"
    with pytest.raises(PartitionKeyError, match="has not been added to dynamic partitions"):
        customers.validate("umbrella", store=store)
    with pytest.raises(PartitionKeyError, match="needs a DynamicKeyStore"):
        customers.keys()
    with pytest.raises(PartitionKeyError, match="must be a str"):
        customers.validate(3)
    with pytest.raises(PartitionKeyError, match="empty string"):
        customers.validate("")
    with pytest.raises(PartitionKeyError, match="NUL"):
        store.add_keys("customers", ["a\x00"])
    with pytest.raises(PartitionKeyError, match="single str"):
        store.add_keys("customers", "abc")


def test_dynamic_name_and_equality() -> None:
    assert DynamicPartitions(name="customers") == DynamicPartitions(name="customers")
    assert hash(DynamicPartitions(name="a")) == hash(DynamicPartitions(name="a"))
    assert DynamicPartitions(name="a") != DynamicPartitions(name="b")
    assert repr(DynamicPartitions(name="a")) == "DynamicPartitions(name='a')"
    for bad in ("", "has space", "x" * 129, "1abc"):
        with pytest.raises(DefinitionError, match="invalid name"):
            DynamicPartitions(name=bad)


# --- mappings -----------------------------------------------------------------------------------


def test_weekly_over_daily_reads_the_seven_days() -> None:
    mapping = TimeWindowPartitionMapping()
    assert mapping.is_fan_in
    days = mapping.upstream_values(date(2025, 1, 13), downstream=WEEKLY, upstream=DAILY)
    assert days == [date(2025, 1, 13) + timedelta(days=offset) for offset in range(7)]


def test_daily_over_weekly_reads_the_containing_week() -> None:
    mapping = TimeWindowPartitionMapping()
    assert mapping.upstream_values(date(2025, 1, 15), downstream=DAILY, upstream=WEEKLY) == [
        date(2025, 1, 13)
    ]
    # Before the upstream's start there is nothing to read.
    assert mapping.upstream_values(date(2025, 1, 3), downstream=DAILY, upstream=WEEKLY) == []


def test_time_window_mapping_respects_upstream_bounds_and_cadences() -> None:
    mapping = TimeWindowPartitionMapping()
    short_daily = DailyPartitions(start=date(2025, 1, 15), end=date(2025, 1, 17))
    assert mapping.upstream_values(date(2025, 1, 13), downstream=WEEKLY, upstream=short_daily) == [
        date(2025, 1, 15),
        date(2025, 1, 16),
    ]
    monthly = MonthlyPartitions(start=date(2025, 1, 1))
    feb = mapping.upstream_values(date(2025, 2, 1), downstream=monthly, upstream=DAILY)
    assert len(feb) == 28
    hourly = HourlyPartitions(start=date(2025, 1, 1), timezone="Europe/Berlin")
    berlin_daily = DailyPartitions(start=date(2025, 1, 1), timezone="Europe/Berlin")
    hours = mapping.upstream_values(date(2025, 10, 26), downstream=berlin_daily, upstream=hourly)
    assert len(hours) == 25
    with pytest.raises(PartitionKeyError, match="time-window partitions on both sides"):
        mapping.upstream_values("eu", downstream=REGIONS, upstream=DAILY)


def test_identity_mapping() -> None:
    mapping = IdentityPartitionMapping()
    assert not mapping.is_fan_in
    assert mapping.upstream_values("eu", downstream=REGIONS, upstream=None) == [None]
    assert mapping.upstream_values("eu", downstream=REGIONS, upstream=REGIONS) == ["eu"]
    assert mapping.upstream_values(None, downstream=None, upstream=None) == [None]
    with pytest.raises(PartitionKeyError, match="is not one of"):
        mapping.upstream_values("asia", downstream=REGIONS, upstream=REGIONS)
    with pytest.raises(PartitionKeyError, match="unpartitioned asset"):
        mapping.upstream_values(None, downstream=None, upstream=REGIONS)


def test_all_partitions_mapping() -> None:
    mapping = AllPartitionsMapping()
    assert mapping.is_fan_in
    assert mapping.upstream_values(None, downstream=None, upstream=REGIONS) == ["eu", "us", "a|b:c"]
    assert mapping.upstream_values(None, downstream=None, upstream=None) == [None]
    store = MemoryDynamicKeyStore()
    store.add_keys("customers", ["acme"])
    customers = DynamicPartitions(name="customers")
    assert mapping.upstream_values(
        date(2025, 1, 1), downstream=DAILY, upstream=customers, store=store
    ) == ["acme"]


def test_dimension_mapping() -> None:
    multi = make_multi()
    mapping = DimensionPartitionMapping(dimension="date")
    assert not mapping.is_fan_in
    assert mapping.upstream_values(
        ("acme", date(2025, 1, 2)), downstream=multi, upstream=DAILY
    ) == [date(2025, 1, 2)]
    weekly_of_date = DimensionPartitionMapping(
        dimension="date", mapping=TimeWindowPartitionMapping()
    )
    assert weekly_of_date.is_fan_in
    assert weekly_of_date.upstream_values(
        ("acme", date(2025, 1, 3)), downstream=multi, upstream=DAILY
    ) == [date(2025, 1, 3)]
    assert check_mapping(mapping, multi, DAILY) is None
    assert "no dimension 'region'" in str(
        check_mapping(DimensionPartitionMapping(dimension="region"), multi, DAILY)
    )
    assert "needs a MultiPartitions" in str(check_mapping(mapping, DAILY, DAILY))
    with pytest.raises(DefinitionError, match="invalid dimension name"):
        DimensionPartitionMapping(dimension="not valid")


def test_requires_explicit_mapping_truth_table() -> None:
    assert not requires_explicit_mapping(None, None)
    assert not requires_explicit_mapping(DAILY, None)
    assert requires_explicit_mapping(None, DAILY)
    assert not requires_explicit_mapping(DAILY, DailyPartitions(start=date(2025, 1, 1)))
    assert requires_explicit_mapping(WEEKLY, DAILY)
    assert requires_explicit_mapping(DAILY, DailyPartitions(start=date(2024, 1, 1)))
    assert requires_explicit_mapping(REGIONS, DAILY)
    assert not requires_explicit_mapping(make_multi(), make_multi())


def test_check_mapping_reasons() -> None:
    assert check_mapping(TimeWindowPartitionMapping(), WEEKLY, DAILY) is None
    reason = check_mapping(TimeWindowPartitionMapping(), REGIONS, DAILY)
    assert reason is not None
    assert "the asset has StaticPartitions" in reason
    assert check_mapping(AllPartitionsMapping(), None, DAILY) is None
    assert "unpartitioned" in str(check_mapping(AllPartitionsMapping(), DAILY, None))
    assert check_mapping(IdentityPartitionMapping(), DAILY, None) is None
    assert (
        check_mapping(IdentityPartitionMapping(), DAILY, DailyPartitions(start=date(2024, 1, 1)))
        is None
    )
    assert "AllPartitionsMapping" in str(check_mapping(IdentityPartitionMapping(), None, DAILY))
    assert "TimeWindowPartitionMapping" in str(
        check_mapping(IdentityPartitionMapping(), WEEKLY, DAILY)
    )
    assert "StaticPartitions and TimeWindowPartitions" in str(
        check_mapping(IdentityPartitionMapping(), REGIONS, DAILY)
    )
    assert "no partitions ['us']" in str(
        check_mapping(
            IdentityPartitionMapping(),
            StaticPartitions(keys=("eu", "us")),
            StaticPartitions(keys=("eu",)),
        )
    )
    assert "is not a PartitionMapping" in str(check_mapping("identity", DAILY, DAILY))  # type: ignore[arg-type]


def test_mappings_are_frozen_hashable_values() -> None:
    assert IdentityPartitionMapping() == IdentityPartitionMapping()
    assert hash(TimeWindowPartitionMapping()) == hash(TimeWindowPartitionMapping())
    assert repr(AllPartitionsMapping()) == "AllPartitionsMapping()"
    assert DimensionPartitionMapping(dimension="date") == DimensionPartitionMapping(
        dimension="date", mapping=IdentityPartitionMapping()
    )
    assert repr(DimensionPartitionMapping(dimension="date")) == (
        "DimensionPartitionMapping(dimension='date', mapping=IdentityPartitionMapping())"
    )


def test_partitions_package_does_not_import_django() -> None:
    code = (
        "import sys, flowstone.partitions; "
        "sys.exit(any(m == 'django' or m.startswith('django.') for m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True)
    assert result.returncode == 0, result.stderr


def test_decoded_keys_round_trip_through_definitions() -> None:
    hourly = HourlyPartitions(
        start=date(2025, 10, 26), end=date(2025, 10, 27), timezone="Europe/Berlin"
    )
    for definition in (REGIONS, DAILY, WEEKLY, hourly, make_multi()):
        for value in definition.keys(now=datetime(2025, 2, 1, tzinfo=UTC))[:30]:
            key = definition.encode_key(value)
            assert definition.encode_key(definition.decode_key(key)) == key
            assert decode_partition_key(key) is not None
