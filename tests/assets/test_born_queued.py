"""Backfill steps inserted released (ADR 0033): no step row is written twice to enqueue it.

Real PostgreSQL, real Redis and real Celery worker processes. What reaches the queue is read from
Redis with no worker running; then a worker runs it. Each test is an edge of the fast enqueue with
a feature that shares its rows or its messages: limits, the relay, the lost-message backstop, a
broker outage at submit, a crash after the commit.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_django import Settings

import flowstone
from assets import services
from assets.models import Materialization, Run
from assets.services.outbox import take_back_births
from flowstone.partitions import encode_partition_key
from flowstone.status import RunStatus, StepStatus
from tests.assets.test_step_batches import queued_messages
from tests.pipelines.batch_flow import NAMES
from tests.workers import Services, broker_url, database_url, purge, worker_stack

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WAIT = 90
DEFINITIONS = "tests.pipelines.batch_flow"
ENCODED = [encode_partition_key(key) for key in NAMES]
TABLE = Materialization._meta.db_table


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Services]:
    """A worker stack on ``batch_flow`` expecting one consumer (120 ready steps: batches of 15)."""
    with worker_stack(settings, tmp_path, DEFINITIONS) as started:
        settings.FLOWSTONE = {**settings.FLOWSTONE, "STEP_BATCH_CONSUMERS": 1}
        started.extra_env["FLOWSTONE_STEP_BATCH_CONSUMERS"] = "1"
        yield started


def carried(messages: list[tuple[str, dict[str, object]]]) -> Counter[str]:
    """How often each partition key is named by the queued messages, batches step by step."""
    keys: Counter[str] = Counter()
    for _, kwargs in messages:
        partitions = kwargs.get("partitions", [kwargs.get("partition")])
        assert isinstance(partitions, list)
        keys.update(str(key) for key in partitions)
    return keys


def executed_once(stack: Services) -> bool:
    """Whether every partition of ``batch_flow`` ran exactly once."""
    return Counter(e["partition"] for e in stack.executions()) == Counter(ENCODED)


def test_a_backfill_is_inserted_released_and_no_step_row_is_rewritten(stack: Services) -> None:
    with CaptureQueriesContext(connection) as queries:
        handle = flowstone.backfill_async("b_noop")

    rewrites = [q["sql"] for q in queries if q["sql"].startswith(f'UPDATE "{TABLE}"')]
    assert rewrites == []  # neither released nor claimed by an UPDATE
    rows = list(Materialization.objects.filter(run_id=handle.run_id))
    assert {row.status for row in rows} == {StepStatus.QUEUED}
    assert all(row.dispatched_at is not None for row in rows)
    assert all(row.queued_at == row.dispatched_at for row in rows)
    run = Run.objects.get(pk=handle.run_id)
    assert (run.steps_pending, run.steps_active, run.status) == (0, len(NAMES), RunStatus.RUNNING)
    assert carried(queued_messages()) == Counter(ENCODED)  # each step in one message

    stack.start_worker("w1", concurrency=2)
    result = handle.wait(WAIT)
    assert result.status == RunStatus.SUCCESS
    assert {step.attempt for step in result.steps} == {1}
    assert executed_once(stack)


@pytest.mark.usefixtures("stack")
@settings(max_examples=25, deadline=None)
@given(
    keys=st.sets(st.sampled_from(NAMES), min_size=1),
    asset=st.sampled_from(["b_noop", "b_limited"]),
    max_parallel=st.none() | st.integers(min_value=1, max_value=40),
)
def test_a_new_backfills_counters_rows_and_messages_agree(
    keys: set[str], asset: str, max_parallel: int | None
) -> None:
    """Whatever the size, limit and cap: counters = rows, each queued step sent exactly once."""
    purge(broker_url())
    handle = flowstone.backfill_async(asset, sorted(keys), max_parallel=max_parallel)

    rows = list(Materialization.objects.filter(run_id=handle.run_id))
    by_status = Counter(row.status for row in rows)
    run = Run.objects.get(pk=handle.run_id)
    assert run.steps_total == len(keys) == len(rows)
    assert run.steps_active == by_status[StepStatus.QUEUED]
    assert run.steps_pending == by_status[StepStatus.PENDING]
    most = min(len(keys), max_parallel or len(keys), 2 if asset == "b_limited" else len(keys))
    assert by_status[StepStatus.QUEUED] == most  # released within the cap and the limit
    queued = [row for row in rows if row.status == StepStatus.QUEUED]
    assert all(row.dispatched_at is not None for row in queued)  # and all sent...
    assert carried(queued_messages()) == Counter(row.partition_key for row in queued)  # ...once
    services.cancel_run(handle.run_id)  # frees the limited asset's slots for the next example
    purge(broker_url())


def test_a_broker_outage_at_a_backfills_submit_leaves_every_step_to_the_relay(
    stack: Services,
) -> None:
    run_id, stderr = stack.submit_with_the_broker_down('flowstone.backfill_async("b_noop")')
    assert f"could not publish {len(NAMES)} step(s)" in stderr
    steps = Materialization.objects.filter(run_id=run_id)
    assert set(steps.values_list("status", "dispatched_at")) == {(StepStatus.QUEUED, None)}

    later = timezone.now() + dt.timedelta(seconds=5)
    assert services.relay_outbox(now=later) == len(NAMES)
    assert carried(queued_messages()) == Counter(ENCODED)
    stack.start_worker("w1", concurrency=2)
    assert flowstone.RunHandle(run_id).wait(WAIT).status == RunStatus.SUCCESS
    assert executed_once(stack)


def _crash_after_commit() -> None:
    raise RuntimeError("the process died after the commit")


def _backfill_then_die(created: list[str]) -> None:
    with transaction.atomic():
        transaction.on_commit(_crash_after_commit)  # runs first; the publish never does
        created.append(flowstone.backfill_async("b_noop").run_id)


def test_a_crash_between_the_commit_and_the_publish_is_sent_by_the_relay(
    stack: Services,
) -> None:
    """The new run's mark outlives its publisher: the relay sends its steps within seconds."""
    created: list[str] = []
    with pytest.raises(RuntimeError, match="died after the commit"):
        _backfill_then_die(created)
    handle = flowstone.RunHandle(created[0])
    assert queued_messages() == []
    steps = Materialization.objects.filter(run_id=handle.run_id)
    assert not steps.filter(dispatched_at__isnull=True).exists()  # claimed, never sent
    mark = Run.objects.get(pk=handle.run_id).born_unsent_at
    assert mark is not None

    assert services.relay_outbox(now=mark) == 0  # within the grace its publisher may be at work
    assert services.relay_outbox(now=timezone.now() + dt.timedelta(seconds=5)) == len(NAMES)
    assert carried(queued_messages()) == Counter(ENCODED)
    assert Run.objects.get(pk=handle.run_id).born_unsent_at is None
    stack.start_worker("w1", concurrency=2)
    assert handle.wait(WAIT).status == RunStatus.SUCCESS
    assert executed_once(stack)


def test_a_submitter_killed_while_publishing_a_backfill_leaves_its_steps_to_the_relay(
    stack: Services,
) -> None:
    """kill -9 of the submitting process inside ``publish_born``: the relay sends every step."""
    before = set(Run.objects.values_list("pk", flat=True))
    stack.kill_while_sending('flowstone.backfill_async("b_noop")')
    (run_id,) = set(Run.objects.values_list("pk", flat=True)) - before
    assert queued_messages() == []
    assert Run.objects.get(pk=run_id).born_unsent_at is not None

    later = timezone.now() + dt.timedelta(seconds=5)
    deadline = time.monotonic() + 10  # until the database has seen the session end
    sent = 0
    while not sent and time.monotonic() < deadline:
        sent = services.relay_outbox(now=later)
        time.sleep(0.1)
    assert sent == len(NAMES)
    assert carried(queued_messages()) == Counter(ENCODED)
    stack.start_worker("w1", concurrency=2)
    assert flowstone.RunHandle(str(run_id)).wait(WAIT).status == RunStatus.SUCCESS
    assert executed_once(stack)


@pytest.mark.usefixtures("stack")
def test_a_publisher_that_comes_after_the_relay_took_its_steps_back_sends_them() -> None:
    """The relay may act before a slow creating transaction's publisher takes its lock."""
    created: list[str] = []
    with pytest.raises(RuntimeError, match="died after the commit"):
        _backfill_then_die(created)
    (run_id,) = created
    mark = Run.objects.get(pk=run_id).born_unsent_at
    assert mark is not None
    assert take_back_births(Run.objects.get(pk=run_id).pk, mark) == len(NAMES)
    assert queued_messages() == []  # taken back, not yet sent

    assert services.publish_born(Run.objects.get(pk=run_id).pk, mark, len(NAMES)) == len(NAMES)
    assert carried(queued_messages()) == Counter(ENCODED)  # each once


@pytest.mark.usefixtures("stack")
def test_the_relay_takes_nothing_back_from_a_publisher_that_finished() -> None:
    """The relay reads a mark before its lock: a publish that ended in between keeps its sends."""
    handle = flowstone.backfill_async("b_noop")
    run = Run.objects.get(pk=handle.run_id)
    assert run.born_unsent_at is None  # published and cleared
    at = Materialization.objects.filter(run_id=run.pk).values_list("dispatched_at", flat=True)[0]
    assert at is not None

    assert take_back_births(run.pk, at) == 0
    assert not Materialization.objects.filter(run_id=run.pk, dispatched_at__isnull=True).exists()
    assert carried(queued_messages()) == Counter(ENCODED)


@pytest.mark.usefixtures("stack")
def test_the_relay_leaves_a_live_publishers_new_steps_alone() -> None:
    """While the publisher lock is held (a slow publish), the relay neither claims nor sends."""
    created: list[str] = []
    with pytest.raises(RuntimeError, match="died after the commit"):
        _backfill_then_die(created)
    key = f"flowstone:born:{created[0]}"
    later = timezone.now() + dt.timedelta(seconds=5)
    with psycopg.connect(database_url(), autocommit=True) as publisher:
        publisher.execute("SELECT pg_advisory_lock(hashtext(%s))", [key])
        assert services.relay_outbox(now=later) == 0
        assert Run.objects.get(pk=created[0]).born_unsent_at is not None
    assert services.relay_outbox(now=later) == len(NAMES)  # its session ended: an orphan
    assert carried(queued_messages()) == Counter(ENCODED)


@pytest.mark.usefixtures("stack")
def test_a_backfill_canceled_before_its_publish_sends_nothing() -> None:
    with transaction.atomic():
        handle = flowstone.backfill_async("b_noop")
        services.cancel_run(handle.run_id, actor="carol")  # in the creating transaction
    assert queued_messages() == []  # no step was still queued when the publish read them
    assert Run.objects.get(pk=handle.run_id).status == RunStatus.CANCELED
