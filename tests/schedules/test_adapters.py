"""The thin adapters: Celery tasks (payload checks), the tick API and the read-only admin."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from assets.models import RejectedMessage
from flowstone.registry import Registry
from schedules import services, tasks
from schedules.models import Tick

pytestmark = [pytest.mark.embedded, pytest.mark.django_db]

TICK = dt.datetime(2025, 3, 31, 1, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("args", "payload", "reason"),
    [
        ((), {}, "the payload must be exactly {'schedule': name}"),
        ((), {"schedule": "berlin_nightly", "extra": 1}, "the payload must be exactly"),
        (("berlin_nightly",), {}, "1 positional argument(s)"),
        ((), {"schedule": 5}, "payload field 'schedule' is not a valid name"),
        ((), {"schedule": "os.system"}, "payload field 'schedule' is not a valid name"),
        ((), {"schedule": "nope"}, "unknown schedule 'nope'"),
    ],
)
def test_bad_tick_payloads_are_recorded_and_refused(
    registry: Registry, args: tuple[object, ...], payload: dict[str, object], reason: str
) -> None:
    assert tasks.tick_schedule.apply(args=args, kwargs=payload).get() == "rejected"
    rejected = RejectedMessage.objects.get()
    assert reason in rejected.reason
    assert rejected.task_name == "flowstone.tick_schedule"
    assert Tick.objects.count() == 0


def test_tasks_evaluate_by_name(registry: Registry) -> None:
    assert tasks.tick_schedule.apply(kwargs={"schedule": "every_five_minutes"}).get() == "requested"
    assert tasks.tick_schedule.apply(kwargs={"schedule": "every_five_minutes"}).get() in (
        "duplicate",
        "requested",  # a new five-minute tick began between the two calls
    )
    assert tasks.poll_sensor.apply(kwargs={"sensor": "counting_sensor"}).get() == 1
    assert tasks.poll_sensor.apply(kwargs={"sensor": "nope"}).get() == 0
    assert RejectedMessage.objects.get().reason == "[validation_error] unknown sensor 'nope'"


def _ticks(registry: Registry) -> None:
    services.evaluate_schedule_tick(registry.get_schedule("berlin_nightly"), TICK)
    services.poll_sensor("broken_sensor", now=TICK + dt.timedelta(minutes=1))


def test_the_tick_api_needs_a_login_and_lists_newest_first(registry: Registry) -> None:
    _ticks(registry)
    client = APIClient()
    assert client.get("/api/schedules/ticks/").status_code in (401, 403)

    client.force_login(User.objects.create_user("viewer"))
    everything = client.get("/api/schedules/ticks/").json()["results"]
    failed = client.get("/api/schedules/ticks/?status=failed&kind=sensor").json()["results"]
    one = client.get(f"/api/schedules/ticks/{failed[0]['id']}/").json()

    assert [t["name"] for t in everything] == ["broken_sensor", "berlin_nightly"]
    assert everything[1]["status"] == "requested"
    assert everything[1]["partition_keys"] == ["d:2025-03-30"]
    assert everything[1]["run_id"] is not None
    assert everything[0]["run_id"] is None
    assert [t["name"] for t in failed] == ["broken_sensor"]
    assert one["reason"].startswith("[execution_error] sensor 'broken_sensor' raised")
    assert client.post("/api/schedules/ticks/", {}).status_code == 405
    assert client.delete(f"/api/schedules/ticks/{one['id']}/").status_code == 405


def test_the_admin_shows_ticks_and_cursors_read_only(registry: Registry, client: Client) -> None:
    _ticks(registry)
    services.poll_sensor("counting_sensor", now=TICK)
    client.force_login(User.objects.create_superuser("admin", "a@example.com", "pw"))

    listing = client.get("/admin/schedules/tick/?status__exact=failed")
    assert listing.status_code == 200
    assert [t.name for t in listing.context["cl"].result_list] == ["broken_sensor"]
    assert client.get("/admin/schedules/tick/add/").status_code == 403
    cursors = client.get("/admin/schedules/sensorcursor/")
    assert "counting_sensor" in cursors.content.decode()
    tick = Tick.objects.get(name="berlin_nightly")
    assert client.post(f"/admin/schedules/tick/{tick.pk}/delete/").status_code == 403
    assert client.get("/admin/django_celery_beat/periodictask/").status_code == 200
