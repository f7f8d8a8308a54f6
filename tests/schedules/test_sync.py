"""Syncing definitions into django-celery-beat: command, post_migrate, pause kept, orphans gone."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django_celery_beat.models import PeriodicTask, PeriodicTasks  # type: ignore[import-untyped]

from flowstone.registry import Registry
from schedules import receivers, services
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.embedded, pytest.mark.django_db]

NAMES = [
    "flowstone.schedule.berlin_half_past_two",
    "flowstone.schedule.berlin_hourly",
    "flowstone.schedule.berlin_nightly",
    "flowstone.schedule.every_five_minutes",
    "flowstone.schedule.weekly_eu",
    "flowstone.sensor.broken_sensor",
    "flowstone.sensor.counting_sensor",
]


def _ours() -> list[PeriodicTask]:
    return list(
        PeriodicTask.objects.filter(
            task__in=(services.TICK_SCHEDULE_TASK, services.POLL_SENSOR_TASK)
        ).order_by("name")
    )


def test_migrate_synced_the_demo_schedule() -> None:
    nightly = PeriodicTask.objects.get(name="flowstone.schedule.nightly_revenue")
    assert json.loads(nightly.kwargs) == {"schedule": "nightly_revenue"}
    assert (nightly.crontab.minute, nightly.crontab.hour) == ("0", "2")
    assert nightly.enabled


def test_the_command_writes_one_periodic_task_per_definition(registry: Registry) -> None:
    PeriodicTask.objects.filter(name="flowstone.schedule.nightly_revenue").delete()
    out = StringIO()
    call_command("sync_schedules", stdout=out)

    tasks = {t.name: t for t in _ours()}
    assert sorted(tasks) == NAMES
    nightly = tasks["flowstone.schedule.berlin_nightly"]
    assert nightly.task == "flowstone.tick_schedule"
    assert json.loads(nightly.kwargs) == {"schedule": "berlin_nightly"}
    crontab = nightly.crontab
    assert (crontab.minute, crontab.hour, crontab.day_of_month) == ("30", "1", "*")
    assert str(crontab.timezone) == "Europe/Berlin"
    assert nightly.interval is None
    assert nightly.description == "Yesterday's report in Berlin, except on Christmas."
    sensor = tasks["flowstone.sensor.counting_sensor"]
    assert json.loads(sensor.kwargs) == {"sensor": "counting_sensor"}
    assert (sensor.interval.every, sensor.interval.period) == (5, "seconds")
    assert out.getvalue().splitlines()[-1] == "7 created, 0 updated, 0 deleted, 0 unchanged"


def test_a_second_sync_changes_nothing_and_a_pause_survives(registry: Registry) -> None:
    services.sync_periodic_tasks()
    PeriodicTask.objects.filter(name="flowstone.schedule.berlin_nightly").update(enabled=False)
    before = PeriodicTasks.last_change()

    report = services.sync_periodic_tasks()

    assert (report.created, report.updated, report.deleted) == ([], [], [])
    assert len(report.unchanged) == 7
    assert PeriodicTasks.last_change() == before
    assert not PeriodicTask.objects.get(name="flowstone.schedule.berlin_nightly").enabled


def test_removed_definitions_are_deleted_and_changed_ones_updated(
    registry: Registry, use_definitions: UseDefinitions
) -> None:
    services.sync_periodic_tasks()
    PeriodicTask.objects.create(
        name="flowstone.sensor.gone",
        task=services.POLL_SENSOR_TASK,
        kwargs='{"sensor": "gone"}',
        interval=PeriodicTask.objects.get(name="flowstone.sensor.counting_sensor").interval,
    )
    PeriodicTask.objects.filter(name="flowstone.schedule.weekly_eu").update(description="old")

    report = services.sync_periodic_tasks()

    assert report.deleted == ["flowstone.sensor.gone"]
    assert report.updated == ["flowstone.schedule.weekly_eu"]
    assert PeriodicTask.objects.get(name="flowstone.schedule.weekly_eu").description == (
        "A static partition chosen by partition_fn."
    )


def test_other_periodic_tasks_are_left_alone(registry: Registry) -> None:
    services.sync_periodic_tasks()
    assert PeriodicTask.objects.filter(name="celery.backend_cleanup").count() == 0
    call_command("sync_schedules", stdout=StringIO())
    assert [t.name for t in _ours()] == NAMES


def test_post_migrate_syncs_and_invalid_definitions_do_not_break_migrate(
    use_definitions: UseDefinitions, caplog: pytest.LogCaptureFixture
) -> None:
    use_definitions("tests.pipelines.scheduled")
    receivers.sync_after_migrate(using="default")
    assert [t.name for t in _ours()] == NAMES

    use_definitions("tests.pipelines.bad_schedules", resources={})
    receivers.sync_after_migrate(using="default")
    assert "schedules not synced after migrate: invalid definitions" in caplog.text
    assert [t.name for t in _ours()] == NAMES
