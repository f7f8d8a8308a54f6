"""The outbox on a real broker: what the relay sends, what it never sends twice, the backstop."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection, transaction
from django.utils import timezone
from kombu import Connection
from pytest_django import Settings

from assets import services
from assets.models import Materialization
from flowstone.celery import app
from flowstone.status import RunKind, StepStatus
from tests.workers import Services, broker_url, database_url, flowstone_settings_for, purge

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DEFINITIONS = "tests.pipelines.limits"


@pytest.fixture(autouse=True)
def _queues(settings: Settings, tmp_path: Path) -> Iterator[None]:
    settings.FLOWSTONE = flowstone_settings_for(tmp_path, DEFINITIONS)
    purge(broker_url())
    yield
    purge(broker_url())


def _waiting_in_queue() -> int:
    with Connection(broker_url()) as conn:
        channel: Any = conn.default_channel
        return int(channel.client.llen("flowstone"))


def _run(n: int) -> list[int]:
    """A worker run of ``n`` steps, released but (as after a crash) never published."""
    created = services.create_run(
        services.RunRequest(
            kind=RunKind.BACKFILL,
            selection=["unlimited"],
            steps=[
                services.StepRequest(asset="unlimited", partition_key=f"s:k{i}") for i in range(n)
            ],
        )
    )
    purge(broker_url())  # the fast path published after commit; pretend it never did
    Materialization.objects.filter(pk__in=created.ready).update(dispatched_at=None)
    return created.ready


def test_the_relay_sends_unsent_steps_once_they_are_old_enough_and_never_again() -> None:
    ids = _run(3)
    assert services.relay_outbox() == 0  # just queued: the fast path may still be sending
    later = timezone.now() + dt.timedelta(seconds=5)

    assert services.relay_outbox(now=later) == 3
    assert _waiting_in_queue() == 3
    assert not Materialization.objects.filter(pk__in=ids, dispatched_at__isnull=True).exists()
    assert services.relay_outbox(now=later + dt.timedelta(hours=1)) == 0  # sent: never again
    assert _waiting_in_queue() == 3


def test_a_retry_too_far_ahead_stays_unsent_until_it_fits_a_countdown() -> None:
    (step_id,) = _run(1)
    far = timezone.now() + dt.timedelta(hours=2)
    Materialization.objects.filter(pk=step_id).update(not_before=far)
    assert services.relay_outbox(now=timezone.now() + dt.timedelta(seconds=5)) == 0
    assert services.relay_outbox(now=far - dt.timedelta(seconds=60)) == 1
    assert _waiting_in_queue() == 1


def test_the_backstop_sends_again_only_when_the_queue_holds_no_message() -> None:
    _run(1)
    later = timezone.now() + dt.timedelta(seconds=5)
    assert services.relay_outbox(now=later) == 1  # sent, and waiting in the queue
    much_later = timezone.now() + dt.timedelta(hours=1)

    assert services.republish_quiet(now=much_later) == 0  # its message merely waits
    purge(broker_url())  # the broker lost it
    assert services.republish_quiet(now=much_later) == 1
    assert _waiting_in_queue() == 1


def _relayed_within(seconds: float, expected: int) -> int:
    """Run the relay (as if its grace were over) until it sends ``expected`` steps or time ends."""
    deadline = time.monotonic() + seconds
    sent = 0
    while sent < expected and time.monotonic() < deadline:
        sent += services.relay_outbox(now=timezone.now() + dt.timedelta(seconds=5))
        time.sleep(0.1)
    return sent


def test_a_publisher_killed_between_its_claim_and_its_send_leaves_its_steps_to_the_relay(
    tmp_path: Path,
) -> None:
    """kill -9 after the claim and before any message: the claim dies with the publisher.

    Its steps are the relay's within seconds, not the backstop's after ``REQUEUE_AFTER_SECONDS``
    (ADR 0035). Before, the claim committed first and the steps waited ten minutes.
    """
    ids = _run(3)
    publisher = Services(broker_url=broker_url(), data_dir=tmp_path, definitions=DEFINITIONS)
    try:
        publisher.kill_while_sending(f"services.publish_steps({ids!r})")
    finally:
        publisher.stop_all()
    assert _waiting_in_queue() == 0

    assert _relayed_within(10, 3) == 3
    assert _waiting_in_queue() == 3
    assert not Materialization.objects.filter(pk__in=ids, dispatched_at__isnull=True).exists()


def test_the_relay_leaves_alone_the_steps_a_live_publisher_is_sending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A claim not yet committed (its messages still going out) is skipped by the relay.

    Not waited for (the relay never stands behind a slow send) and not sent a second time.
    """
    ids = _run(3)
    sending, go_on = threading.Event(), threading.Event()
    real_send = app.send_task
    published: list[int] = []

    def slow_send(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is publisher:
            sending.set()
            go_on.wait(30)
        return real_send(*args, **kwargs)

    def publish() -> None:
        try:
            published.append(services.publish_steps(ids))
        finally:
            connection.close()

    monkeypatch.setattr(app, "send_task", slow_send)
    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        assert sending.wait(10)
        assert services.relay_outbox(now=timezone.now() + dt.timedelta(seconds=5)) == 0
    finally:
        go_on.set()
        publisher.join(30)
    assert published == [3]
    assert _waiting_in_queue() == 3
    assert services.relay_outbox(now=timezone.now() + dt.timedelta(seconds=5)) == 0


def test_the_fast_path_waits_for_a_held_row_and_the_relay_skips_it() -> None:
    """A row held elsewhere (a renewal that lost to a retry, say) is sent once it is free.

    Skipped, it would be left to the relay, seconds later, or to nobody where beat is not run.
    """
    ids = _run(1)
    table = Materialization._meta.db_table
    published: list[int] = []

    def publish() -> None:
        try:
            published.append(services.publish_steps(ids))
        finally:
            connection.close()

    waiting = (
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database()"
    )
    with (
        psycopg.connect(database_url()) as holder,  # a transaction, until the rollback
        psycopg.connect(database_url(), autocommit=True) as watcher,
    ):
        holder.execute(f"SELECT id FROM {table} WHERE id = %s FOR UPDATE", ids)  # noqa: S608
        assert services.relay_outbox(now=timezone.now() + dt.timedelta(seconds=5)) == 0
        publisher = threading.Thread(target=publish)
        publisher.start()
        deadline = time.monotonic() + 10
        while watcher.execute(waiting).fetchone() != (1,):
            assert time.monotonic() < deadline, "the publisher did not wait for the row"
            time.sleep(0.05)
        holder.rollback()
    publisher.join(10)
    assert published == [1]
    assert _waiting_in_queue() == 1


def test_an_early_delivery_is_rescheduled_for_its_time() -> None:
    (step_id,) = _run(1)
    soon = timezone.now() + dt.timedelta(seconds=30)
    Materialization.objects.filter(pk=step_id).update(not_before=soon)

    assert services.claim_step(step_id, "w") is None
    assert services.reschedule_early(step_id)
    assert _waiting_in_queue() == 1  # an ETA message: the worker holds it until then
    step = Materialization.objects.get(pk=step_id)
    assert (step.status, step.dispatched_at is not None) == (StepStatus.QUEUED, True)
    Materialization.objects.filter(pk=step_id).update(not_before=None)
    assert not services.reschedule_early(step_id)  # due now: nothing to reschedule


def _crash_after_commit() -> None:
    raise RuntimeError("the process died after the commit")


def _cancel_then_crash(run_id: str) -> None:
    with transaction.atomic():
        transaction.on_commit(_crash_after_commit)  # runs first; the release never does
        services.cancel_run(run_id, actor="carol")


def test_the_relay_releases_slots_that_a_crashed_cancel_freed() -> None:
    def limited_run(*keys: str) -> str:
        created = services.create_run(
            services.RunRequest(
                kind=RunKind.BACKFILL,
                selection=["limited"],
                steps=[services.StepRequest(asset="limited", partition_key=f"s:{k}") for k in keys],
            )
        )
        return str(created.run.pk)

    first = limited_run("k0", "k1", "k2")  # the limit is 2: two queued, one pending
    second = limited_run("k3")
    waiting = Materialization.objects.get(run_id=second)
    assert waiting.status == StepStatus.PENDING
    with pytest.raises(RuntimeError):
        _cancel_then_crash(first)
    waiting.refresh_from_db()
    assert waiting.status == StepStatus.PENDING

    services.relay_outbox()

    waiting.refresh_from_db()
    assert waiting.status == StepStatus.QUEUED
