"""Multi-dimensional and dynamic partitions, and a fan-in over all partitions."""

from __future__ import annotations

import datetime as dt

from flowstone import AssetContext, asset
from flowstone.partitions import (
    AllPartitionsMapping,
    DailyPartitions,
    DimensionPartitionMapping,
    DynamicPartitions,
    MultiPartitions,
    StaticPartitions,
)

DAYS = DailyPartitions(start=dt.date(2025, 1, 1), end=dt.date(2025, 1, 4))
TENANT_DAYS = MultiPartitions(
    dimensions={"tenant": StaticPartitions(keys=("acme", "a|b")), "day": DAYS}
)
CUSTOMERS = DynamicPartitions(name="customers")


@asset(partitions=DAYS)
def calendar(context: AssetContext) -> str:
    return str(context.partition)


@asset(
    partitions=TENANT_DAYS,
    partition_mappings={"calendar": DimensionPartitionMapping(dimension="day")},
)
def tenant_usage(context: AssetContext, calendar: str) -> dict[str, str]:
    tenant, day = context.partition  # type: ignore[misc]
    return {"tenant": str(tenant), "day": str(day), "calendar": calendar}


@asset(partitions=CUSTOMERS)
def customer_profile(context: AssetContext) -> dict[str, str]:
    return {"customer": str(context.partition)}


@asset(partition_mappings={"calendar": AllPartitionsMapping()})
def calendar_summary(calendar: dict[dt.date, str]) -> list[str]:
    return sorted(calendar.values())
