"""Syncing schedules and sensors from code into django-celery-beat's periodic tasks.

The registry is the source of truth: each schedule becomes a ``PeriodicTask`` on a
``CrontabSchedule`` (in the schedule's timezone) calling ``flowstone.tick_schedule``, each sensor
one on an ``IntervalSchedule`` calling ``flowstone.poll_sensor``, with JSON kwargs naming it.
Rows of definitions that are gone are deleted. The only thing the database owns is ``enabled``:
a schedule paused in the admin stays paused across syncs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from django.db import transaction
from django_celery_beat.models import (  # type: ignore[import-untyped]
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    PeriodicTasks,
)

from flowstone.registry import Registry, get_registry

TICK_SCHEDULE_TASK: Final = "flowstone.tick_schedule"
POLL_SENSOR_TASK: Final = "flowstone.poll_sensor"
SCHEDULE_TASK_PREFIX: Final = "flowstone.schedule."
SENSOR_TASK_PREFIX: Final = "flowstone.sensor."
SYNCED_FIELDS: Final = ("task", "kwargs", "crontab_id", "interval_id", "description")


@dataclass(frozen=True, kw_only=True, slots=True)
class SyncReport:
    """What a sync changed: names of periodic tasks created, updated, deleted and unchanged."""

    created: list[str]
    updated: list[str]
    deleted: list[str]
    unchanged: list[str]


def schedule_task_name(name: str) -> str:
    """The ``PeriodicTask`` name of a schedule."""
    return f"{SCHEDULE_TASK_PREFIX}{name}"


def sensor_task_name(name: str) -> str:
    """The ``PeriodicTask`` name of a sensor."""
    return f"{SENSOR_TASK_PREFIX}{name}"


def _wanted(registry: Registry) -> dict[str, dict[str, Any]]:
    """The periodic task fields each definition should have, by periodic task name."""
    wanted: dict[str, dict[str, Any]] = {}
    for name, schedule in sorted(registry.schedules.items()):
        fields = schedule.spec.cron_fields
        crontab, _ = CrontabSchedule.objects.get_or_create(
            minute=fields.minute,
            hour=fields.hour,
            day_of_month=fields.day_of_month,
            month_of_year=fields.month_of_year,
            day_of_week=fields.day_of_week,
            timezone=schedule.spec.timezone,
        )
        wanted[schedule_task_name(name)] = {
            "task": TICK_SCHEDULE_TASK,
            "kwargs": json.dumps({"schedule": name}),
            "crontab_id": crontab.pk,
            "interval_id": None,
            "description": schedule.spec.description,
        }
    for name, sensor in sorted(registry.sensors.items()):
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=sensor.spec.interval_seconds, period=IntervalSchedule.SECONDS
        )
        wanted[sensor_task_name(name)] = {
            "task": POLL_SENSOR_TASK,
            "kwargs": json.dumps({"sensor": name}),
            "crontab_id": None,
            "interval_id": interval.pk,
            "description": sensor.spec.description,
        }
    return wanted


def sync_periodic_tasks(registry: Registry | None = None) -> SyncReport:
    """Make beat's periodic tasks match the schedules and sensors in the registry."""
    registry = get_registry() if registry is None else registry
    created: list[str] = []
    updated: list[str] = []
    unchanged: list[str] = []
    with transaction.atomic():
        wanted = _wanted(registry)
        existing = {
            task.name: task
            for task in PeriodicTask.objects.select_for_update().filter(
                task__in=(TICK_SCHEDULE_TASK, POLL_SENSOR_TASK)
            )
        }
        for name, values in wanted.items():
            task = existing.get(name)
            if task is None:
                PeriodicTask.objects.create(name=name, **values)
                created.append(name)
            elif any(getattr(task, key) != value for key, value in values.items()):
                PeriodicTask.objects.filter(pk=task.pk).update(**values)
                updated.append(name)
            else:
                unchanged.append(name)
        deleted = sorted(name for name in existing if name not in wanted)
        PeriodicTask.objects.filter(name__in=deleted).delete()
        if updated or deleted:
            PeriodicTasks.update_changed()
    return SyncReport(created=created, updated=updated, deleted=deleted, unchanged=unchanged)
