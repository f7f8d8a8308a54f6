from __future__ import annotations

import datetime as dt

from flowstone import asset
from flowstone.partitions import DailyPartitions, StaticPartitions, WeeklyPartitions


@asset(partitions=DailyPartitions(start=dt.date(2025, 1, 1)))
def daily_events() -> int:
    return 1


@asset(partitions=WeeklyPartitions(start=dt.date(2025, 1, 6)))
def weekly_rollup(daily_events: dict[dt.date, int]) -> int:
    return sum(daily_events.values())


@asset(partitions=StaticPartitions(keys=("a", "b")))
def unrelated() -> int:
    return 1
