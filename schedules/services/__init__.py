"""The only code that writes ticks, sensor cursors and beat's periodic tasks.

``ticks`` evaluates schedule ticks and sensor polls, each run started once; ``periodic`` syncs
the definitions into django-celery-beat; ``launch`` starts runs; ``feed`` is what asset sensors
read.
"""

from __future__ import annotations

from schedules.services.feed import DatabaseMaterializationFeed
from schedules.services.launch import StartedRun, start_run
from schedules.services.periodic import (
    POLL_SENSOR_TASK,
    TICK_SCHEDULE_TASK,
    SyncReport,
    schedule_task_name,
    sensor_task_name,
    sync_periodic_tasks,
)
from schedules.services.ticks import (
    PollOutcome,
    TickOutcome,
    catch_up_schedule,
    evaluate_schedule_tick,
    poll_sensor,
    record_once,
    tick_schedule,
)

__all__ = [
    "POLL_SENSOR_TASK",
    "TICK_SCHEDULE_TASK",
    "DatabaseMaterializationFeed",
    "PollOutcome",
    "StartedRun",
    "SyncReport",
    "TickOutcome",
    "catch_up_schedule",
    "evaluate_schedule_tick",
    "poll_sensor",
    "record_once",
    "schedule_task_name",
    "sensor_task_name",
    "start_run",
    "sync_periodic_tasks",
    "tick_schedule",
]
