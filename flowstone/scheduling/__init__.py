"""Schedules and sensors declared in code next to the assets they run.

``@schedule`` runs an asset selection on a cron expression in a timezone, for a partition chosen
from the tick time, and can catch up the ticks it missed; ``@sensor`` polls a function at an
interval with a cursor stored between polls. ``file_sensor``, ``s3_sensor`` and ``asset_sensor``
are built-in sensors; ``run_status_sensor`` reacts to runs that failed or succeeded and approvals
that wait too long. The decorators attach definitions and return the function unchanged; the
registry collects them from the modules in ``FLOWSTONE["DEFINITIONS"]``, and the ``schedules``
app runs them on Celery beat. This package is pure Python: it imports no Django app.
"""

from __future__ import annotations

from flowstone.scheduling.builtin import (
    MAX_ARRIVALS_PER_POLL,
    FileArrival,
    S3Arrival,
    asset_sensor,
    file_sensor,
    s3_sensor,
)
from flowstone.scheduling.catchup import DEFAULT_MAX_CATCH_UP_TICKS, CatchUpPlan, CatchUpPolicy
from flowstone.scheduling.cron import CronFields, parse_cron
from flowstone.scheduling.requests import Notify, RunRequest, SensorResult, SkipReason
from flowstone.scheduling.run_status import run_status_sensor
from flowstone.scheduling.schedules import (
    ScheduleDefinition,
    ScheduleSpec,
    ScheduleTick,
    previous_window,
    schedule,
    schedule_of,
)
from flowstone.scheduling.sensors import (
    DEFAULT_SENSOR_INTERVAL_SECONDS,
    MaterializationEvent,
    MaterializationFeed,
    RunStatusEvent,
    RunStatusFeed,
    SensorContext,
    SensorDefinition,
    SensorSpec,
    sensor,
    sensor_of,
)

__all__ = [
    "DEFAULT_MAX_CATCH_UP_TICKS",
    "DEFAULT_SENSOR_INTERVAL_SECONDS",
    "MAX_ARRIVALS_PER_POLL",
    "CatchUpPlan",
    "CatchUpPolicy",
    "CronFields",
    "FileArrival",
    "MaterializationEvent",
    "MaterializationFeed",
    "Notify",
    "RunRequest",
    "RunStatusEvent",
    "RunStatusFeed",
    "S3Arrival",
    "ScheduleDefinition",
    "ScheduleSpec",
    "ScheduleTick",
    "SensorContext",
    "SensorDefinition",
    "SensorResult",
    "SensorSpec",
    "SkipReason",
    "asset_sensor",
    "file_sensor",
    "parse_cron",
    "previous_window",
    "run_status_sensor",
    "s3_sensor",
    "schedule",
    "schedule_of",
    "sensor",
    "sensor_of",
]
