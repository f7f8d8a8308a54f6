"""A real ``celery beat`` with django-celery-beat's database scheduler triggers runs that a real
worker completes: a cron schedule and a sensor, synced into beat's tables when beat starts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django_celery_beat.models import PeriodicTask  # type: ignore[import-untyped]
from pytest_django import Settings

from assets.models import Run
from schedules.models import Tick
from tests.pipelines.beat_flow import MARKER
from tests.workers import Services, worker_stack

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DEFINITIONS = "tests.pipelines.beat_flow"
DATABASE_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# A "* * * * *" schedule fires at the next full minute after beat has loaded it.
WAIT = 150


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Services]:
    with worker_stack(settings, tmp_path, DEFINITIONS) as started:
        yield started


def _eventually(check: Callable[[], object], what: str, stack: Services) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            logs = {p.name: p.read_text()[-3000:] for p in stack.data_dir.glob("*.log")}
            pytest.fail(f"timed out waiting for {what}:\n{logs}")
        time.sleep(0.5)


def _done(name: str) -> bool:
    tick = Tick.objects.filter(name=name, status="requested").select_related("run").first()
    return tick is not None and tick.run is not None and tick.run.status == "success"


def test_beat_runs_a_cron_schedule_and_a_sensor_on_real_workers(stack: Services) -> None:
    stack.start_worker("w1")
    stack.start_beat(scheduler=DATABASE_SCHEDULER)

    # Beat synced the definitions into its tables when it started (there was no migrate).
    _eventually(
        lambda: PeriodicTask.objects.filter(name="flowstone.sensor.marker_sensor").exists(),
        "beat to sync the definitions",
        stack,
    )
    assert not PeriodicTask.objects.filter(name="flowstone.schedule.nightly_revenue").exists()
    assert PeriodicTask.objects.get(name="flowstone.schedule.every_minute").crontab.minute == "*"

    (stack.data_dir / MARKER).touch()
    _eventually(lambda: _done("marker_sensor"), "the sensor's run", stack)
    _eventually(lambda: _done("every_minute"), "the schedule's run", stack)

    sensed = Tick.objects.get(name="marker_sensor", status="requested")
    assert sensed.run_key == "marker"
    assert Run.objects.filter(requested_by="sensor:marker_sensor").count() == 1
    minute = Tick.objects.filter(name="every_minute", status="requested").first()
    assert minute is not None
    assert minute.tick_time.second == 0
    assert minute.run is not None
    assert minute.run.selection == ["beat_target"]
    beat_log = (stack.data_dir / "beat.log").read_text()
    assert "DatabaseScheduler" in beat_log
    # The settings' beat entries still run under the database scheduler.
    assert "flowstone-recover-stale-steps" in beat_log
