"""What a real Celery beat process schedules in the beat test: one cron schedule, one sensor."""

from __future__ import annotations

import os
from pathlib import Path

from flowstone import asset
from flowstone.scheduling import RunRequest, SensorContext, SensorResult, schedule, sensor

MARKER = "beat-sensor-go"


@asset
def beat_target() -> int:
    return 42


@asset
def beat_sensed() -> int:
    return 7


@schedule(cron="* * * * *", assets=[beat_target])
def every_minute() -> None:
    """Materializes beat_target every minute."""


@sensor(interval=1)
def marker_sensor(context: SensorContext) -> SensorResult | None:
    """Requests beat_sensed once, when the marker file appears in the data directory."""
    marker = Path(os.environ.get("FLOWSTONE_DATA_DIR", "var")) / MARKER
    if context.cursor == "done" or not marker.exists():
        return None
    return SensorResult(
        run_requests=(RunRequest(asset="beat_sensed", run_key="marker"),), cursor="done"
    )
