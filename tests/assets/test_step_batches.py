"""Step batches (ADR 0032): many ready steps of one run and asset in one message.

Real PostgreSQL, real Redis and real Celery worker processes: what reaches the queue is read
from Redis with no worker running, then a worker runs it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from pytest_django import Settings

import flowstone
from assets.models import Materialization, RejectedMessage, Run
from assets.services import MAX_BATCH_STEPS, batch_payload
from assets.services.outbox import ClaimedRow, batch_size, messages_for
from flowstone.celery import app
from flowstone.conf import flowstone_settings
from flowstone.errors import StepTimeoutError
from flowstone.execution.worker import handle_batch_message
from flowstone.partitions import encode_partition_key
from flowstone.status import RunStatus, StepStatus
from tests.pipelines.batch_flow import FAILING_KEY, NAMES, STUCK_KEY
from tests.workers import Services, broker_url, most_at_once, worker_stack

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WAIT = 90
DEFINITIONS = "tests.pipelines.batch_flow"
ENCODED = [encode_partition_key(key) for key in NAMES]
CONSUMERS = 1
"""Expected consumers in these tests: 120 ready steps make batches of 120 // 8 = 15."""


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Services]:
    """A worker stack on ``batch_flow`` that batches from a few dozen ready steps on."""
    with worker_stack(settings, tmp_path, DEFINITIONS) as started:
        settings.FLOWSTONE = {**settings.FLOWSTONE, "STEP_BATCH_CONSUMERS": CONSUMERS}
        started.extra_env["FLOWSTONE_STEP_BATCH_CONSUMERS"] = str(CONSUMERS)
        yield started


def queued_messages(queue: str = "flowstone") -> list[tuple[str, dict[str, Any]]]:
    """The task name and keyword arguments of every message waiting in ``queue`` (left there)."""
    client = redis.Redis.from_url(broker_url())
    found = []
    for item in client.lrange(queue, 0, -1):
        envelope = json.loads(item)
        _, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
        found.append((envelope["headers"]["task"], kwargs))
    return found


def steps_carried(messages: list[tuple[str, dict[str, Any]]]) -> int:
    """How many steps the messages name, batches counted step by step."""
    return sum(len(kwargs.get("partitions", [None])) for _, kwargs in messages)


def wait_for(condition: Any, timeout: float = WAIT) -> None:
    """Poll ``condition`` every 50 ms until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.usefixtures("stack")
@given(ready=st.integers(min_value=0, max_value=200_000))
def test_batch_size_is_one_when_few_are_ready_and_bounded_for_a_backfill(ready: int) -> None:
    size = batch_size(ready)
    assert 1 <= size <= min(flowstone_settings.STEP_BATCH_MAX, MAX_BATCH_STEPS)
    assert size == 1 or ready >= 8 * CONSUMERS * size  # every consumer gets >= 8 batches


@pytest.mark.usefixtures("stack")
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["r1", "r2"]), st.sampled_from(["b_noop", "b_slow"]), st.booleans()
        ),
        max_size=60,
    ),
    size=st.integers(min_value=1, max_value=20),
)
def test_every_claimed_step_is_in_one_message_of_one_run_and_asset(
    rows: list[tuple[str, str, bool]], size: int
) -> None:
    later = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    claimed: list[ClaimedRow] = [
        (pk, run, asset, f"s:k{pk:03d}", later if due_later else None)
        for pk, (run, asset, due_later) in enumerate(rows)
    ]
    messages = messages_for(claimed, size)

    assert sorted(pk for m in messages for pk in m.step_ids) == list(range(len(rows)))
    for message in messages:
        _, run, asset, _, _ = claimed[message.step_ids[0]]
        assert {(claimed[pk][1], claimed[pk][2]) for pk in message.step_ids} == {(run, asset)}
        assert len(message.step_ids) <= size
        if message.task == "flowstone.run_steps":
            assert message.kwargs == batch_payload(
                run, asset, [claimed[pk][3] for pk in message.step_ids]
            )
            assert all(claimed[pk][4] is None for pk in message.step_ids)  # never an ETA
        else:
            assert len(message.step_ids) == 1


def test_a_backfill_goes_out_in_batches_and_runs_every_step_once(stack: Services) -> None:
    handle = flowstone.backfill_async("b_noop")

    messages = queued_messages()
    assert Counter(task for task, _ in messages) == {"flowstone.run_steps": 8}  # 120 / 15
    assert steps_carried(messages) == len(NAMES)
    stack.start_worker("w1", concurrency=2)
    result = handle.wait(WAIT)

    assert result.status == RunStatus.SUCCESS
    assert {step.attempt for step in result.steps} == {1}
    executed = Counter(e["partition"] for e in stack.executions())
    assert executed == Counter(ENCODED)  # each exactly once


def test_a_failing_body_ends_its_own_step_alone(stack: Services) -> None:
    handle = flowstone.backfill_async("b_picky")
    assert {task for task, _ in queued_messages()} == {"flowstone.run_steps"}
    stack.start_worker("w1", concurrency=2)
    result = handle.wait(WAIT)

    assert result.status == RunStatus.FAILED
    by_status = Counter(step.status for step in result.steps)
    assert by_status == {StepStatus.SUCCESS: len(NAMES) - 1, StepStatus.FAILED: 1}
    assert result.step("b_picky", FAILING_KEY).status == StepStatus.FAILED
    assert Counter(e["partition"] for e in stack.executions()) == Counter(ENCODED)


def test_kill_9_mid_batch_loses_nothing_and_doubles_nothing(stack: Services) -> None:
    stack.start_beat()  # the sweeper takes back the step the killed process held
    handle = flowstone.backfill_async("b_slow")
    stack.start_worker("w1", concurrency=1)
    wait_for(lambda: len(stack.executions()) >= 3)  # mid-batch: 15 steps of 0.06 s each
    victim = stack.executions()[-1]
    os.kill(victim["pid"], signal.SIGKILL)
    result = handle.wait(WAIT)

    assert result.status == RunStatus.SUCCESS
    runs = Counter(e["partition"] for e in stack.executions())
    assert set(runs) == set(ENCODED)  # nothing lost
    doubled = {key for key, count in runs.items() if count > 1}
    assert doubled <= {victim["partition"]}  # only the step killed in its body ran again...
    attempts = Counter((e["partition"], e["attempt"]) for e in stack.executions())
    assert set(attempts.values()) == {1}  # ...as a new attempt: no attempt ran twice
    assert {e["pid"] for e in stack.executions()} != {victim["pid"]}  # a new process went on


def test_a_hard_time_limit_ends_the_stuck_step_and_the_rest_of_its_batch_runs(
    stack: Services, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool kills the batch's process: its step fails as a timeout, nothing else is lost.

    The steps that succeeded before the kill were counted in the dead process's tally (ADR 0034);
    the sweeper recounts the run, so it still finishes, with exact counters.
    """
    monkeypatch.setitem(app.conf, "task_time_limit", 2)  # the publisher sets a batch's limits
    settings.FLOWSTONE = {**settings.FLOWSTONE, "STEP_BATCH_SECONDS": 1}
    stack.extra_env.update({"CELERY_TASK_TIME_LIMIT": "2", "FLOWSTONE_STEP_BATCH_SECONDS": "1"})
    handle = flowstone.backfill_async("b_stuck")
    stack.start_beat()
    stack.start_worker("w1", concurrency=1)
    result = handle.wait(WAIT)

    assert result.status == RunStatus.FAILED
    stuck = result.step("b_stuck", STUCK_KEY)
    assert (stuck.status, stuck.attempt) == (StepStatus.FAILED, 1)
    assert isinstance(stuck.error, StepTimeoutError)
    assert Counter(step.status for step in result.steps) == {
        StepStatus.SUCCESS: len(NAMES) - 1,
        StepStatus.FAILED: 1,
    }
    assert Counter(e["partition"] for e in stack.executions()) == Counter(ENCODED)  # each once
    run = Run.objects.get(pk=handle.run_id)
    assert (run.steps_active, run.steps_succeeded, run.steps_failed) == (0, len(NAMES) - 1, 1)


def test_a_batch_never_exceeds_max_parallel_or_a_concurrency_limit(stack: Services) -> None:
    limited = flowstone.backfill_async("b_limited")
    capped = flowstone.backfill_async("b_noop", max_parallel=3)

    messages = queued_messages()
    by_asset = Counter(kwargs["asset"] for _, kwargs in messages)
    assert by_asset == {"b_limited": 2, "b_noop": 3}  # only released steps went out
    assert {task for task, _ in messages} == {"flowstone.run_step"}
    stack.start_worker("w1", concurrency=4)
    assert limited.wait(WAIT).status == RunStatus.SUCCESS
    assert capped.wait(WAIT).status == RunStatus.SUCCESS
    for run_id, most in ((limited.run_id, 2), (capped.run_id, 3)):
        rows = list(Materialization.objects.filter(run_id=run_id))
        assert len(rows) == len(NAMES)
        assert most_at_once(rows) <= most


BAD_BATCHES: list[tuple[list[Any], dict[str, Any]]] = [
    ([], {}),
    (["x"], {"run_id": "", "asset": "b_noop", "partitions": ["s:k001"]}),
    ([], {"run_id": "not-a-uuid", "asset": "b_noop", "partitions": ["s:k001"]}),
    ([], {"run_id": str(uuid.uuid4()), "asset": "b_noop", "partitions": "s:k001"}),
    ([], {"run_id": str(uuid.uuid4()), "asset": "b_noop", "partitions": []}),
    ([], {"run_id": str(uuid.uuid4()), "asset": "b_noop", "partitions": [7]}),
    ([], {"run_id": str(uuid.uuid4()), "asset": "b_noop", "partitions": ["s:k001"] * 2}),
    ([], {"run_id": str(uuid.uuid4()), "asset": "b_noop", "partitions": ["s:x"] * 1001}),
    ([], {"run_id": str(uuid.uuid4()), "asset": "no_such", "partitions": ["s:k001"]}),
    ([], {"run_id": str(uuid.uuid4()), "asset": "b_noop", "partitions": ["\x00;drop"]}),
    ([], {"run_id": str(uuid.uuid4()), "asset": "b_noop", "partitions": ["s:k001"]}),
    ([], {"run_id": "1", "asset": "b_noop", "partitions": ["s:k001"], "extra": 1}),
]


@pytest.mark.usefixtures("stack")
def test_a_malformed_batch_is_recorded_and_runs_nothing() -> None:
    handle = flowstone.backfill_async("b_noop", max_parallel=1)
    known = handle.run_id
    bad = [
        *BAD_BATCHES,
        ([], {"run_id": known, "asset": "b_noop", "partitions": ["s:k000", "s:nope"]}),
    ]
    for args, payload in bad:
        assert handle_batch_message(args, payload, owner="t", task_id="bad", start_within=10) == []

    rejected = list(RejectedMessage.objects.filter(task_name="flowstone.run_steps"))
    assert len(rejected) == len(bad)
    assert all(row.reason.startswith("[") and row.task_id == "bad" for row in rejected)
    assert Materialization.objects.filter(run_id=known, attempt__gt=0).count() == 0


def test_a_malformed_batch_on_the_wire_is_dropped_and_the_worker_goes_on(
    stack: Services,
) -> None:
    from flowstone.celery import app  # noqa: PLC0415

    stack.start_worker("w1")
    app.send_task(
        "flowstone.run_steps", kwargs={"run_id": "x", "partitions": [1]}, queue="flowstone"
    )
    result = flowstone.backfill_async("b_noop").wait(WAIT)

    assert result.status == RunStatus.SUCCESS
    wait_for(lambda: RejectedMessage.objects.filter(task_name="flowstone.run_steps").exists())


@pytest.mark.usefixtures("stack")
def test_the_canceled_steps_of_a_batch_are_skipped() -> None:
    handle = flowstone.backfill_async("b_noop")
    (task, payload), *_ = queued_messages()
    assert task == "flowstone.run_steps"
    handle.cancel()

    assert handle_batch_message([], payload, owner="t", start_within=10) == []
    steps = Materialization.objects.filter(run_id=handle.run_id)
    assert {step.status for step in steps} == {StepStatus.CANCELED}
    assert {step.attempt for step in steps} == {0}  # none was claimed


@pytest.mark.usefixtures("stack")
def test_steps_a_batch_did_not_start_in_time_are_sent_again() -> None:
    handle = flowstone.backfill_async("b_noop")
    (_, payload), *_ = before = queued_messages()

    assert handle_batch_message([], payload, owner="t", start_within=0) == []  # none started
    after = queued_messages()
    assert steps_carried(after) == steps_carried(before) + len(payload["partitions"])
    assert Materialization.objects.filter(run_id=handle.run_id, attempt__gt=0).count() == 0
    again = {kwargs["partition"] for task, kwargs in after if task == "flowstone.run_step"}
    assert again == set(payload["partitions"])  # 15 ready: one message each
