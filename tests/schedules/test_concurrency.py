"""Exactly-once on PostgreSQL: racing threads and processes, and a cursor in a new process."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
from django.db import connection

from assets.models import Run
from flowstone.registry import Registry
from schedules import services
from schedules.models import SensorCursor, Tick
from tests.schedules.conftest import PIPELINE
from tests.workers import ROOT, broker_url, database_url, purge

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

BERLIN = ZoneInfo("Europe/Berlin")
TICK = dt.datetime(2025, 3, 31, 1, 30, tzinfo=BERLIN)
RACERS = 4

DRIVER = """
import datetime as dt, json, sys
import django
django.setup()
from schedules import services
kind, name, now = sys.argv[1], sys.argv[2], dt.datetime.fromisoformat(sys.argv[3])
if kind == "schedule":
    outcome = services.tick_schedule(name, now=now)
    print(json.dumps({"is_new": outcome.is_new, "run_id": outcome.run_id}))
else:
    polled = services.poll_sensor(name, now=now)
    print(json.dumps({"run_keys": [t.run_key for t in polled.ticks if t.is_new]}))
"""


@pytest.fixture(autouse=True)
def _empty_queues() -> Iterator[None]:
    """Runs started here publish their steps; no worker consumes them."""
    purge(broker_url())
    yield
    purge(broker_url())


def _drive(kind: str, name: str, now: dt.datetime) -> subprocess.Popen[str]:
    env = {
        **dict(__import__("os").environ),
        "DJANGO_SETTINGS_MODULE": "flowstone.settings",
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": broker_url(),
        "FLOWSTONE_DEFINITIONS": PIPELINE,
    }
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, kind, name, now.isoformat()],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(process: subprocess.Popen[str]) -> dict[str, object]:
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-4000:]
    result: dict[str, object] = json.loads(stdout.strip().splitlines()[-1])
    return result


def test_two_threads_racing_on_one_tick_start_one_run(registry: Registry) -> None:
    definition = registry.get_schedule("berlin_nightly")
    barrier = threading.Barrier(RACERS)
    outcomes: list[services.TickOutcome] = []

    def race() -> None:
        try:
            barrier.wait(timeout=30)
            outcomes.append(services.evaluate_schedule_tick(definition, TICK))
        finally:
            connection.close()

    threads = [threading.Thread(target=race) for _ in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(outcomes) == RACERS
    assert sum(o.is_new for o in outcomes) == 1
    assert Run.objects.count() == 1
    assert Tick.objects.get().run_id == Run.objects.get().pk


def test_processes_racing_on_one_tick_start_one_run(registry: Registry) -> None:
    now = TICK + dt.timedelta(seconds=3)
    results = [
        _result(p) for p in [_drive("schedule", "berlin_nightly", now) for _ in range(RACERS)]
    ]

    assert sum(bool(r["is_new"]) for r in results) == 1
    assert Run.objects.count() == 1
    tick = Tick.objects.get()
    assert tick.run_key == "2025-03-30T23:30:00+00:00"
    assert tick.partition_keys == ["d:2025-03-30"]


def test_a_sensor_cursor_survives_a_new_process(registry: Registry) -> None:
    now = dt.datetime(2025, 6, 1, 12, tzinfo=dt.UTC)
    first = _result(_drive("sensor", "counting_sensor", now))
    second = _result(_drive("sensor", "counting_sensor", now + dt.timedelta(seconds=5)))

    assert first["run_keys"] == ["count-1"]
    assert second["run_keys"] == ["count-2"]
    assert SensorCursor.objects.current("counting_sensor") == "2"
    assert Run.objects.filter(requested_by="sensor:counting_sensor").count() == 2


def test_overlapping_polls_move_the_cursor_once(registry: Registry) -> None:
    assert SensorCursor.objects.compare_and_set("s", expected=None, new="1")
    assert not SensorCursor.objects.compare_and_set("s", expected=None, new="1")
    assert SensorCursor.objects.compare_and_set("s", expected="1", new="2")
    assert not SensorCursor.objects.compare_and_set("s", expected="1", new="9")
    assert SensorCursor.objects.current("s") == "2"
