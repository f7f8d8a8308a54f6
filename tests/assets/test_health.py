"""``/health/`` and real worker processes: 503 with none, 200 once one is seen, 503 after."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client
from pytest_django import Settings

from assets.models import WorkerHeartbeat
from tests.workers import Services, flowstone_settings_for, worker_stack

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WINDOW_SECONDS = 2
WAIT = 60


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Services]:
    """Workers that record a heartbeat every second; a 2 s window and no cache here."""
    with worker_stack(settings, tmp_path) as started:
        settings.FLOWSTONE = {
            **flowstone_settings_for(started.data_dir),
            "WORKER_SEEN_WITHIN_SECONDS": WINDOW_SECONDS,
            "HEALTH_CACHE_SECONDS": 0,
        }
        started.extra_env["FLOWSTONE_WORKER_HEARTBEAT_SECONDS"] = "1"
        yield started


def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def _status() -> int:
    return Client().get("/health/").status_code


def test_health_follows_the_workers_heartbeats(stack: Services) -> None:
    assert _status() == 503  # no worker has ever been seen

    worker = stack.start_worker("alive")
    # The worker records its first heartbeat as it starts, and one every second after.
    _wait_for(lambda: _status() == 200, "the worker to be seen")
    staff = Client()
    staff.force_login(User.objects.create_user("ops", is_staff=True))
    names = [w["name"] for w in staff.get("/health/").json()["details"]["workers"]]
    assert len(names) == 1
    assert names[0].startswith("alive@")
    assert Client().get("/health/").json() == {
        "status": "ok",
        "database": "ok",
        "broker": "ok",
        "workers": "ok",
    }

    stack.kill(worker)  # SIGKILL: no clean shutdown, the row stays behind
    assert WorkerHeartbeat.objects.filter(hostname=names[0]).exists()
    _wait_for(lambda: _status() == 503, "the window to pass")
    body = staff.get("/health/").json()
    assert body["workers"] == "failing"
    assert body["details"]["workers"] == []


def test_a_worker_that_stops_cleanly_is_forgotten_at_once(stack: Services) -> None:
    worker = stack.start_worker("leaving")
    _wait_for(WorkerHeartbeat.objects.exists, "the first heartbeat")
    stack.kill(worker, signal.SIGTERM)  # warm shutdown
    assert not WorkerHeartbeat.objects.exists()
    assert _status() == 503
