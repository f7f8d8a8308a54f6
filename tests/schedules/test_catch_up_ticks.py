"""Catch-up on PostgreSQL: missed ticks run once each, oldest first, under racing and redelivery."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from assets.models import Run, RunConfig
from flowstone.registry import Registry, get_registry
from schedules import services
from schedules.models import Tick
from tests.conftest import UseDefinitions
from tests.workers import broker_url, purge

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

BERLIN = ZoneInfo("Europe/Berlin")
NIGHTLY = "nightly_catch_up"
RACERS = 4


@pytest.fixture
def registry(use_definitions: UseDefinitions) -> Iterator[Registry]:
    """The catch-up pipeline; runs started here publish steps that no worker consumes."""
    use_definitions("tests.pipelines.catch_up_flow")
    purge(broker_url())
    yield get_registry()
    purge(broker_url())


def _night(day: int) -> dt.datetime:
    return dt.datetime(2025, 3, day, 1, 30, tzinfo=BERLIN)


def _history() -> list[tuple[str, str, bool, list[str]]]:
    return [
        (t.local_tick_time, t.status, t.is_catch_up, t.partition_keys)
        for t in Tick.objects.order_by("tick_time")
    ]


EXPECTED = [
    ("2025-03-26T01:30:00+01:00", "requested", False, ["d:2025-03-25"]),
    ("2025-03-28T01:30:00+01:00", "missed", True, []),
    ("2025-03-29T01:30:00+01:00", "requested", True, ["d:2025-03-28"]),
    ("2025-03-30T01:30:00+01:00", "requested", True, ["d:2025-03-29"]),
    ("2025-03-31T01:30:00+02:00", "requested", False, ["d:2025-03-30"]),
]


def test_missed_nights_run_once_each_oldest_first_for_their_own_days(registry: Registry) -> None:
    services.evaluate_schedule_tick(registry.get_schedule(NIGHTLY), _night(26))
    # Beat was down from the 27th to the 30th; the message of the 31st (after the spring change).
    current = services.tick_schedule(NIGHTLY, now=_night(31) + dt.timedelta(seconds=5))

    assert current.is_new
    assert _history() == EXPECTED
    ticks = list(Tick.objects.order_by("tick_time"))
    assert [t.run_key for t in ticks] == [
        "2025-03-26T00:30:00+00:00",
        "missed:2025-03-28T00:30:00+00:00",
        "2025-03-29T00:30:00+00:00",
        "2025-03-30T00:30:00+00:00",
        "2025-03-30T23:30:00+00:00",
    ]
    assert ticks[1].reason == (
        "missed ticks from 2025-03-27T01:30:00+01:00 to 2025-03-28T01:30:00+01:00 were not run: "
        "older than the catch-up window (3 days) or beyond max_catch_up_ticks (2)"
    )
    assert ticks[1].run is None
    # The runs were created oldest first, and only the replayed ones carry the catch-up tag.
    runs = [t.run_id for t in ticks if t.run_id is not None]
    assert list(Run.objects.order_by("created_at", "id").values_list("pk", flat=True)) == runs
    tags = {c.run_id: c.tags for c in RunConfig.objects.all()}
    assert [tags[r].get("flowstone/catch_up") for r in runs] == [None, "true", "true", None]

    # A redelivered message (or a second beat) later in the same tick finds everything recorded.
    again = services.tick_schedule(NIGHTLY, now=_night(31) + dt.timedelta(minutes=40))
    assert not again.is_new
    assert _history() == EXPECTED
    assert Run.objects.count() == len(runs)


def test_racing_evaluations_replay_each_missed_tick_once(registry: Registry) -> None:
    """Two beats, or a message redelivered while the first delivery is still evaluating."""
    services.evaluate_schedule_tick(registry.get_schedule(NIGHTLY), _night(26))
    barrier = threading.Barrier(RACERS)
    outcomes: list[services.TickOutcome] = []

    def race(seconds: int) -> None:
        try:
            barrier.wait(timeout=30)
            now = _night(31) + dt.timedelta(seconds=seconds)
            outcomes.append(services.tick_schedule(NIGHTLY, now=now))
        finally:
            connection.close()

    threads = [threading.Thread(target=race, args=(n,)) for n in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(outcomes) == RACERS
    assert sum(o.is_new for o in outcomes) == 1
    assert _history() == EXPECTED
    assert Run.objects.count() == 4


def test_the_first_tick_of_a_schedule_replays_nothing(registry: Registry) -> None:
    services.tick_schedule(NIGHTLY, now=_night(31))
    assert _history() == [EXPECTED[-1]]


def test_a_schedule_back_within_its_window_replays_without_a_missed_tick(
    registry: Registry,
) -> None:
    services.evaluate_schedule_tick(registry.get_schedule(NIGHTLY), _night(29))
    services.tick_schedule(NIGHTLY, now=_night(31))
    on_time = ("2025-03-29T01:30:00+01:00", "requested", False, ["d:2025-03-28"])
    assert _history() == [on_time, *EXPECTED[3:]]


def test_the_last_tick_is_read_from_the_tick_history_index(registry: Registry) -> None:
    queryset = (
        Tick.objects.filter(kind="schedule", name=NIGHTLY, tick_time__lt=_night(31))
        .order_by("-tick_time")
        .values_list("tick_time", flat=True)[:1]
    )
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        plan = queryset.explain()
        cursor.execute("RESET enable_seqscan")
    assert "tick_history" in plan
    assert Tick.objects.last_schedule_tick(NIGHTLY, before=_night(31)) is None


def test_the_api_and_the_admin_show_and_filter_catch_up_ticks(
    registry: Registry, client: Client
) -> None:
    services.evaluate_schedule_tick(registry.get_schedule(NIGHTLY), _night(26))
    services.tick_schedule(NIGHTLY, now=_night(31))
    user = User.objects.create_superuser("admin", "a@example.com", "pw")
    api = APIClient()
    api.force_login(user)

    caught_up = api.get("/api/schedules/ticks/?is_catch_up=true").json()["results"]
    on_time = api.get("/api/schedules/ticks/?is_catch_up=false").json()["results"]
    assert [(t["local_tick_time"], t["status"]) for t in caught_up] == [
        ("2025-03-30T01:30:00+01:00", "requested"),
        ("2025-03-29T01:30:00+01:00", "requested"),
        ("2025-03-28T01:30:00+01:00", "missed"),
    ]
    assert all(t["is_catch_up"] for t in caught_up)
    assert [t["is_catch_up"] for t in on_time] == [False, False]
    missed = api.get("/api/schedules/ticks/?status=missed").json()["results"]
    assert [t["run_id"] for t in missed] == [None]
    bad = api.get("/api/schedules/ticks/?is_catch_up=maybe")
    assert bad.status_code == 400
    assert "is_catch_up" in str(bad.json())
    assert Tick.objects.count() == len(EXPECTED)  # a bad filter records nothing

    client.force_login(user)
    listing = client.get("/admin/schedules/tick/?is_catch_up__exact=1")
    assert listing.status_code == 200
    assert len(listing.context["cl"].result_list) == 3
    assert "Is catch up" in listing.content.decode()


def test_the_openapi_schema_documents_the_catch_up_fields_and_filter() -> None:
    document = SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-untyped-call]
    tick = document["components"]["schemas"]["Tick"]["properties"]
    assert tick["is_catch_up"]["type"] == "boolean"
    assert "catch-up" in tick["is_catch_up"]["description"]
    assert "timezone" in tick["local_tick_time"]["description"]
    assert "missed" in document["components"]["schemas"]["TickStatusEnum"]["enum"]
    parameters = document["paths"]["/api/schedules/ticks/"]["get"]["parameters"]
    (flag,) = (p for p in parameters if p["name"] == "is_catch_up")
    assert flag["schema"]["type"] == "boolean"
