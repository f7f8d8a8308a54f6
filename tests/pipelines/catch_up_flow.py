"""Schedules that catch up the ticks they missed: nightly in Berlin, and every minute for beat."""

from __future__ import annotations

import datetime as dt

from flowstone import AssetContext, asset
from flowstone.partitions import DailyPartitions
from flowstone.scheduling import schedule

BERLIN_DAYS = DailyPartitions(start=dt.date(2025, 1, 1), timezone="Europe/Berlin")


@asset(partitions=BERLIN_DAYS)
def cu_daily(context: AssetContext) -> str:
    return str(context.partition)


@asset
def cu_minutely() -> int:
    return 1


@schedule(
    cron="30 1 * * *",
    timezone="Europe/Berlin",
    assets=[cu_daily],
    catch_up=dt.timedelta(days=3),
    max_catch_up_ticks=2,
)
def nightly_catch_up() -> None:
    """Yesterday's partition every night; at most two missed nights of the last three run late."""


@schedule(
    cron="* * * * *",
    assets=[cu_minutely],
    catch_up=dt.timedelta(minutes=10),
    max_catch_up_ticks=3,
)
def minutely_catch_up() -> None:
    """Every minute; at most three missed minutes of the last ten run late."""
