"""Assets, schedules and sensors for the scheduling tests (in-process and database only)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flowstone import AssetContext, asset
from flowstone.partitions import DailyPartitions, HourlyPartitions, StaticPartitions
from flowstone.scheduling import (
    RunRequest,
    SensorContext,
    SensorResult,
    SkipReason,
    schedule,
    sensor,
)

BERLIN_DAYS = DailyPartitions(start=dt.date(2025, 1, 1), timezone="Europe/Berlin")
BERLIN_HOURS = HourlyPartitions(start=dt.date(2025, 1, 1), timezone="Europe/Berlin")
REGIONS = StaticPartitions(keys=("eu", "us"))
SKIPPED_DAY = dt.date(2025, 12, 25)


@asset(partitions=BERLIN_DAYS)
def s_daily(context: AssetContext) -> dict[str, Any]:
    return {"day": str(context.partition)}


@asset(partitions=BERLIN_DAYS)
def s_report(s_daily: dict[str, Any]) -> dict[str, Any]:
    return {"report": s_daily["day"]}


@asset(partitions=BERLIN_HOURS)
def s_hourly(context: AssetContext) -> str:
    return str(context.partition)


@asset(partitions=REGIONS)
def s_regional(context: AssetContext) -> str:
    return str(context.partition)


@asset
def s_plain() -> int:
    return 1


@schedule(cron="30 1 * * *", timezone="Europe/Berlin", assets=[s_report], include_upstreams=True)
def berlin_nightly(tick_time: dt.datetime) -> SkipReason | None:
    """Yesterday's report in Berlin, except on Christmas."""
    if tick_time.date() - dt.timedelta(days=1) == SKIPPED_DAY:
        return SkipReason("no report for Christmas")
    return None


@schedule(cron="30 2 * * *", timezone="Europe/Berlin", assets=[s_daily])
def berlin_half_past_two() -> None:
    """A fixed time inside the hours that daylight saving time skips and repeats."""


@schedule(cron="@hourly", timezone="Europe/Berlin", assets=[s_hourly])
def berlin_hourly() -> None:
    """The previous hour, every hour."""


@schedule(cron="0 6 * * 1", assets=[s_regional], partition_fn=lambda _tick_time: "eu")
def weekly_eu() -> None:
    """A static partition chosen by partition_fn."""


@schedule(cron="*/5 * * * *", assets=[s_plain])
def every_five_minutes() -> None:
    """An unpartitioned asset."""


@sensor(interval=5)
def counting_sensor(context: SensorContext) -> SensorResult:
    """Requests the next number each poll; the cursor is the last number requested."""
    number = int(context.cursor or 0) + 1
    return SensorResult(
        run_requests=(RunRequest(asset="s_plain", run_key=f"count-{number}"),),
        cursor=str(number),
    )


@sensor(interval=5)
def broken_sensor(context: SensorContext) -> None:
    """Always fails."""
    message = f"broken at {context.tick_time.isoformat()}"
    raise RuntimeError(message)
