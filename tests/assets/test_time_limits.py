"""Steps past Celery's time limits fail as timeouts, on a real worker (``flowstone.time_limits``).

The worker gets a hard limit of a few seconds through ``CELERY_TASK_TIME_LIMIT`` in its
environment, or a soft limit through the step's message. Beat is not started: without the fix a
killed step stays ``running`` until its lease is taken back, so these tests would time out.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from pytest_django import Settings

import flowstone
from assets.models import Materialization
from assets.services import step_payload
from flowstone.celery import app
from flowstone.errors import ExecutionError, StepTimeoutError
from flowstone.execution.step import as_step_error
from flowstone.partitions import encode_partition_key
from flowstone.status import RunStatus, StepStatus
from tests.workers import Services, broker_url, purge, worker_stack

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DEFINITIONS = "tests.pipelines.slow_steps"
HARD_LIMIT = 2
WAIT = 20
FAST = 12.0
"""Well under the old path: lease expiry and three recoveries, each another full time limit."""


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Services]:
    with worker_stack(settings, tmp_path, DEFINITIONS) as started:
        yield started


def test_a_step_killed_by_the_hard_time_limit_fails_as_a_timeout(stack: Services) -> None:
    stack.extra_env["CELERY_TASK_TIME_LIMIT"] = str(HARD_LIMIT)
    worker = stack.start_worker("w1")
    started = time.monotonic()
    result = flowstone.materialize_async("t_slow", "eu").wait(WAIT)
    elapsed = time.monotonic() - started

    assert result.status == RunStatus.FAILED
    step = result.step("t_slow", "eu")
    assert step.status == StepStatus.FAILED
    assert step.attempt == 1
    assert isinstance(step.error, StepTimeoutError)
    assert step.error.kind == "timeout"
    assert step.error.message == f"the step exceeded the task's time limit of {HARD_LIMIT} s"
    assert (step.error.recorded_cause or "").startswith("TimeLimitExceeded")
    assert elapsed < FAST, elapsed
    assert len(stack.executions()) == 1
    assert flowstone.materialize_async("t_quick", "eu").wait(WAIT).status == RunStatus.SUCCESS
    assert worker.poll() is None


def test_a_timed_out_step_is_retried_by_its_retry_policy(stack: Services) -> None:
    stack.extra_env["CELERY_TASK_TIME_LIMIT"] = str(HARD_LIMIT)
    stack.start_worker("w1")
    started = time.monotonic()
    result = flowstone.materialize_async("t_slow_once", "us").wait(WAIT)

    assert result.status == RunStatus.SUCCESS
    assert result.step("t_slow_once", "us").attempt == 2
    assert [e["attempt"] for e in stack.executions()] == [1, 2]
    assert time.monotonic() - started < FAST


def test_a_step_past_the_soft_time_limit_fails_as_a_timeout(stack: Services) -> None:
    handle = flowstone.materialize_async("t_slow", "us")  # no worker yet: its message waits
    purge(broker_url())
    app.send_task(
        "flowstone.run_step",
        kwargs=step_payload(handle.run_id, "t_slow", encode_partition_key("us")),
        queue="flowstone",
        soft_time_limit=1,
    )
    worker = stack.start_worker("w1")
    result = handle.wait(WAIT)

    assert result.status == RunStatus.FAILED
    step = result.step("t_slow", "us")
    assert isinstance(step.error, StepTimeoutError)
    assert step.error.kind == "timeout"
    assert step.error.message == "the step exceeded the task's soft time limit of 1 s"
    assert (step.error.recorded_cause or "").startswith("SoftTimeLimitExceeded")
    assert Materialization.objects.get(run_id=handle.run_id).attempt == 1
    assert len(stack.executions()) == 1
    assert worker.poll() is None


def test_a_soft_time_limit_wrapped_by_the_asset_call_is_still_a_timeout() -> None:
    wrapped = ExecutionError("asset 't_slow' raised SoftTimeLimitExceeded")
    wrapped.__cause__ = SoftTimeLimitExceeded()
    error = as_step_error(wrapped)
    assert isinstance(error, StepTimeoutError)
    assert error.message == "the step exceeded the task's soft time limit"  # outside a task
    assert error.__cause__ is wrapped.__cause__
