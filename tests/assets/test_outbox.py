"""The outbox on a real broker: what the relay sends, what it never sends twice, the backstop."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone
from kombu import Connection
from pytest_django import Settings

from assets import services
from assets.models import Materialization
from flowstone.status import RunKind, StepStatus
from tests.workers import broker_url, flowstone_settings_for, purge

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _queues(settings: Settings, tmp_path: Path) -> Iterator[None]:
    settings.FLOWSTONE = flowstone_settings_for(tmp_path, "tests.pipelines.limits")
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
