"""Schedules and sensors that break each rule: E010, E011 and E012."""

from __future__ import annotations

from flowstone import asset
from flowstone.partitions import StaticPartitions
from flowstone.scheduling import (
    MaterializationEvent,
    SensorContext,
    asset_sensor,
    schedule,
    sensor,
)


@asset(partitions=StaticPartitions(keys=("a", "b")))
def letters() -> str:
    return "x"


@schedule(cron="@daily", assets=[letters])
def twin() -> None:
    """E010 (shares its name with a sensor) and E012 (static partitions, no partition_fn)."""


@sensor(name="twin")
def twin_sensor(context: SensorContext) -> None:
    """E010."""


@schedule(cron="@hourly", assets=["ghost"])
def haunted() -> None:
    """E011: selects an asset that does not exist."""


@asset_sensor(asset="phantom")
def watching(events: list[MaterializationEvent]) -> None:
    """E011: watches an asset that does not exist."""
