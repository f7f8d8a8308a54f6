"""Lineage test pipeline: a versioned diamond, weekly over daily, and tenant x day over daily.

::

    source ─┬─► left ──┬─► sink              (static regions)
            └─► right ─┘
    catalog ─► daily_events ─┬─► weekly_summary   (weekly over 7 daily partitions)
                             └─► tenant_events    (tenant x day, reads its day)
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flowstone import AssetContext, asset
from flowstone.partitions import (
    DailyPartitions,
    DimensionPartitionMapping,
    MultiPartitions,
    StaticPartitions,
    TimeWindowPartitionMapping,
    WeeklyPartitions,
)

REGIONS = StaticPartitions(keys=("eu", "us"))
DAYS = DailyPartitions(start=dt.date(2025, 12, 1), end=dt.date(2025, 12, 15))
WEEKS = WeeklyPartitions(start=dt.date(2025, 12, 1), end=dt.date(2025, 12, 15))
TENANT_DAYS = MultiPartitions(
    dimensions={"tenant": StaticPartitions(keys=("acme", "a|b")), "day": DAYS}
)


@asset(partitions=REGIONS, code_version="1")
def source(context: AssetContext) -> str:
    return str(context.partition)


@asset(partitions=REGIONS, code_version="1")
def left(source: str) -> str:
    return f"left({source})"


@asset(partitions=REGIONS, code_version="1")
def right(source: str) -> str:
    return f"right({source})"


@asset(partitions=REGIONS, code_version="1")
def sink(left: str, right: str) -> str:
    return f"{left}+{right}"


@asset(code_version="1")
def catalog() -> list[str]:
    return ["anvil", "rope"]


@asset(partitions=DAYS, code_version="1")
def daily_events(context: AssetContext, catalog: list[str]) -> dict[str, Any]:
    return {"day": str(context.partition), "products": catalog}


@asset(partitions=WEEKS, partition_mappings={"daily_events": TimeWindowPartitionMapping()})
def weekly_summary(daily_events: dict[dt.date, dict[str, Any]]) -> list[str]:
    return sorted(str(day) for day in daily_events)


@asset(
    partitions=TENANT_DAYS,
    partition_mappings={"daily_events": DimensionPartitionMapping(dimension="day")},
)
def tenant_events(context: AssetContext, daily_events: dict[str, Any]) -> dict[str, Any]:
    tenant, _day = context.partition  # type: ignore[misc]
    return {"tenant": str(tenant), **daily_events}
