"""Run-status sensors: one reaction per failed or successful run, or approval left waiting."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from pytest_django import Settings

import flowstone
from approvals import services as approval_services
from approvals.models import Approval, Notification
from assets.models import Run
from flowstone.errors import DefinitionError, ValidationFailedError
from flowstone.scheduling import Notify, RunStatusEvent, run_status_sensor
from flowstone.status import RunStatus
from schedules import services
from schedules.models import SensorCursor, Tick
from schedules.services.feed import DatabaseRunStatusFeed
from schedules.services.ticks import NOTICE_KEY_PREFIX
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

SETTLED = dt.timedelta(seconds=10)
BASE_URL = "https://flowstone.example.com"


@pytest.fixture(autouse=True)
def _definitions(use_definitions: UseDefinitions, settings: Settings) -> None:
    use_definitions("tests.pipelines.run_status_flow", resources={})
    settings.FLOWSTONE = {
        **settings.FLOWSTONE,
        "NOTIFICATION_BASE_URL": BASE_URL,
        "NOTIFICATION_CHANNELS": {
            "ops": {
                "CLASS": "flowstone.notifications.WebhookChannel",
                "OPTIONS": {"url": "https://hooks.example.com/ops"},
            }
        },
    }


def _new_reactions(name: str, at: dt.datetime | None) -> list[str]:
    """Poll once; the event keys this poll reacted to for the first time.

    A notice's tick is keyed ``notify:<key>``, apart from a run request for the same event.
    """
    outcome = services.poll_sensor(name, now=at)
    return [
        t.run_key.removeprefix(NOTICE_KEY_PREFIX)
        for t in outcome.ticks
        if t.is_new and t.status in ("requested", "notified")
    ]


def _failed(partition: str) -> str:
    result = flowstone.materialize("rs_flaky", partition)
    assert result.status == RunStatus.FAILED
    return result.run_id


def test_a_failed_run_sensor_reacts_once_per_failed_run_of_its_assets() -> None:
    assert _new_reactions("flaky_failed", timezone.now()) == []  # starts watching
    started = SensorCursor.objects.current("flaky_failed")
    first = _failed("bad")
    assert flowstone.materialize("rs_flaky", "ok").status == RunStatus.SUCCESS
    assert flowstone.materialize("rs_broken").status == RunStatus.FAILED  # not watched
    # Just finished: not seen until it settled (a late commit cannot be passed over).
    assert _new_reactions("flaky_failed", timezone.now()) == []
    second = _failed("worse")

    later = timezone.now() + SETTLED
    assert _new_reactions("flaky_failed", later) == [f"run-failed:{first}", f"run-failed:{second}"]
    assert _new_reactions("flaky_failed", later) == []
    assert _new_reactions("flaky_failed", later + SETTLED) == []
    # A second beat (or a redelivered message) that read the old cursor repeats nothing.
    SensorCursor.objects.filter(name="flaky_failed").update(cursor=started)
    assert _new_reactions("flaky_failed", later) == []

    notices = {n.key: n.notice for n in Notification.objects.all()}
    assert sorted(notices) == sorted(
        [f"sensor:flaky_failed:run-failed:{first}", f"sensor:flaky_failed:run-failed:{second}"]
    )
    notice = notices[f"sensor:flaky_failed:run-failed:{first}"]
    assert notice["text"] == f"run {first} failed in rs_flaky"
    assert (notice["title"], notice["status"], notice["partition"]) == (
        "Run failed: rs_flaky",
        "failed",
        "",
    )
    assert notice["link"] == f"{BASE_URL}/admin/assets/run/{first}/change/"
    ticks = Tick.objects.filter(name="flaky_failed", status="notified")
    assert sorted(ticks.values_list("reason", flat=True)) == ["notified ops", "notified ops"]


def test_a_success_sensor_launches_one_run_per_successful_run() -> None:
    _new_reactions("flaky_succeeded", timezone.now())
    runs = [flowstone.materialize("rs_flaky", "ok").run_id for _ in range(2)]
    _failed("bad")
    later = timezone.now() + SETTLED
    assert _new_reactions("flaky_succeeded", later) == [f"run-success:{r}" for r in runs]
    assert _new_reactions("flaky_succeeded", later + SETTLED) == []
    launched = Run.objects.filter(requested_by="sensor:flaky_succeeded")
    assert launched.count() == 2
    assert {tuple(r.selection) for r in launched} == {("rs_followup",)}
    assert not Notification.objects.exists()


def test_an_approval_waiting_too_long_is_reported_once() -> None:
    waiting = flowstone.materialize("rs_gated", requested_by="alice")
    approval = Approval.objects.get(run_id=waiting.run_id)
    decided = flowstone.materialize("rs_gated", requested_by="alice")
    approval_services.decide_approval(
        Approval.objects.get(run_id=decided.run_id).pk, "approve", actor="bob"
    )
    asked = approval.requested_at

    assert _new_reactions("approval_too_slow", asked + dt.timedelta(seconds=1)) == []
    late = asked + dt.timedelta(seconds=3)
    assert _new_reactions("approval_too_slow", late) == [f"approval-waiting:{approval.pk}"]
    assert _new_reactions("approval_too_slow", late + dt.timedelta(hours=1)) == []

    notification = Notification.objects.get(key__startswith="sensor:")
    assert notification.key == f"sensor:approval_too_slow:approval-waiting:{approval.pk}"
    assert notification.notice["title"] == "Still waiting for a decision"
    assert notification.notice["text"] == "Ship the release?"
    assert notification.notice["link"] == (
        f"{BASE_URL}/admin/approvals/approval/{approval.pk}/decide/"
    )


def test_without_channels_a_notice_is_a_skipped_tick(settings: Settings) -> None:
    settings.FLOWSTONE = {**settings.FLOWSTONE, "NOTIFICATION_CHANNELS": {}}
    _new_reactions("flaky_failed", timezone.now())
    run_id = _failed("bad")
    outcome = services.poll_sensor("flaky_failed", now=timezone.now() + SETTLED)
    assert [(t.run_key, t.status, t.reason) for t in outcome.ticks] == [
        (f"notify:run-failed:{run_id}", "skipped", "no notification channel is configured")
    ]


def _react(event: RunStatusEvent) -> Notify:
    return Notify(text=event.run_id)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"status": "canceled"}, "status must be one of"),
        ({"status": "approval_waiting"}, "needs a positive waiting_longer_than"),
        (
            {"status": "approval_waiting", "waiting_longer_than": dt.timedelta(0)},
            "needs a positive waiting_longer_than",
        ),
        (
            {"status": "failed", "waiting_longer_than": dt.timedelta(hours=1)},
            "approval_waiting sensors only",
        ),
        ({"status": "failed", "assets": "rs_flaky"}, "not a string"),
        ({"status": "failed", "assets": ["no such/asset"]}, "asset watched by run_status_sensor"),
    ],
)
def test_run_status_sensor_options_are_checked(options: dict[str, object], message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        run_status_sensor(**options)(_react)  # type: ignore[arg-type]


EDGES = "tests.pipelines.run_status_edges"


@pytest.fixture
def edges(settings: Settings) -> None:
    """The edge-case sensors next to the usual ones."""
    settings.FLOWSTONE = {
        **settings.FLOWSTONE,
        "DEFINITIONS": [*settings.FLOWSTONE["DEFINITIONS"], EDGES],
    }


@pytest.mark.usefixtures("edges")
def test_a_sensor_with_the_longest_name_records_its_notice_on_postgresql() -> None:
    """``sensor:<name>`` is the notice's event: every column must hold it (PostgreSQL checks)."""
    from tests.pipelines.run_status_edges import LONG_NAME  # noqa: PLC0415  # loaded by EDGES

    assert _new_reactions(LONG_NAME, timezone.now()) == []
    run_id = _failed("bad")
    assert _new_reactions(LONG_NAME, timezone.now() + SETTLED) == [f"run-failed:{run_id}"]
    notification = Notification.objects.get()
    assert (notification.event, notification.key) == (
        f"sensor:{LONG_NAME}",
        f"sensor:{LONG_NAME}:run-failed:{run_id}",
    )
    assert str(SensorCursor.objects.current(LONG_NAME)).endswith(run_id)


@pytest.mark.usefixtures("edges")
def test_a_run_and_two_notices_for_one_event_are_each_recorded_once() -> None:
    _new_reactions("flaky_failed_both", timezone.now())
    started = SensorCursor.objects.current("flaky_failed_both")
    run_id = _failed("bad")
    later = timezone.now() + SETTLED
    key = f"run-failed:{run_id}"
    assert _new_reactions("flaky_failed_both", later) == [key, key, f"{key}#1"]
    # Polled again from the old cursor (a crash before it moved): nothing twice.
    SensorCursor.objects.filter(name="flaky_failed_both").update(cursor=started)
    assert _new_reactions("flaky_failed_both", later) == []

    assert Run.objects.filter(requested_by="sensor:flaky_failed_both").count() == 1
    notices = dict(Notification.objects.values_list("key", "notice__title"))
    assert notices == {
        f"sensor:flaky_failed_both:{key}": "to the team",
        f"sensor:flaky_failed_both:{key}#1": "to the on-call",
    }


def test_the_settling_window_is_on_the_database_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A poller whose clock runs 10 s ahead of the database's still sees every run, once."""
    real_now = timezone.now
    ahead = dt.timedelta(seconds=10)
    monkeypatch.setattr(timezone, "now", lambda: real_now() + ahead)
    assert _new_reactions("flaky_failed", None) == []  # starts watching
    run_id = _failed("bad")  # finished_at: the database's clock, 10 s behind the poller's
    assert _new_reactions("flaky_failed", None) == []  # not settled on the database's clock
    assert _new_reactions("flaky_failed", timezone.now() + SETTLED) == [f"run-failed:{run_id}"]


def test_the_run_feed_reads_the_run_finished_index_in_one_query_per_kind(
    django_assert_num_queries: Callable[..., Any],
) -> None:
    """A poll reads the newest runs by ``(status, finished_at, id)``, not the whole table.

    A failed run's assets come with its failed steps in one more query, not one per run.
    """
    failed = [_failed(partition) for partition in ("bad", "worse", "bad")]
    feed = DatabaseRunStatusFeed()
    first_finished = Run.objects.get(pk=failed[0]).finished_at
    assert first_finished is not None
    after = (first_finished, failed[0])
    until = timezone.now() + SETTLED
    with django_assert_num_queries(2):
        events = feed.events_after("failed", after=None, until=until, assets=(), limit=100)
    assert [e.assets for e in events] == [("rs_flaky",)] * 3
    with django_assert_num_queries(2):
        feed.events_after("failed", after=after, until=until, assets=["rs_flaky"], limit=100)

    with CaptureQueriesContext(connection) as queries:
        feed.events_after("success", after=after, until=until, assets=(), limit=100)
    with connection.cursor() as cursor:
        # A test table is tiny: with neither scans nor sorts to fall back on, the planner shows
        # the index that serves the poll's filter and order (for a few rows it may pick another
        # one, which says nothing about a large table).
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("SET enable_sort = off")
        cursor.execute(f"EXPLAIN {queries[0]['sql']}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("RESET enable_seqscan")
        cursor.execute("RESET enable_sort")
    assert "run_finished" in plan, plan
    assert "finished_at >=" in plan.partition("Index Cond")[2].partition("\n")[0], plan


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"text": "late\x00run"}, "NUL"),
        ({"text": "x", "title": "a\x00"}, "NUL"),
        ({"text": "x" * 10_001}, "longer than"),
        ({"text": 3}, "must be a string"),
    ],
)
def test_a_notice_is_checked_like_every_input(fields: dict[str, Any], message: str) -> None:
    """A NUL stored in the outbox's JSON would fail the poll's transaction, poll after poll."""
    with pytest.raises(ValidationFailedError, match=message):
        Notify(**fields)
