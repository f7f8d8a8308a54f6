"""Kept attempts on a real Celery worker: a retry, a failure and a lease taken back each leave
the attempt's error, traceback, log and worker where an operator looks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_django import Settings

import flowstone
from assets.models import Materialization, StepAttempt
from flowstone.status import RunStatus
from tests.workers import Services, worker_stack

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WAIT = 60


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Services]:
    with worker_stack(settings, tmp_path, "tests.pipelines.diagnosis") as started:
        yield started


def _attempts(run_id: str, asset: str) -> list[StepAttempt]:
    step = Materialization.objects.get(run_id=run_id, asset=asset)
    return list(step.attempt_history.order_by("attempt"))


def test_a_retry_and_a_failure_on_a_worker_keep_each_attempt(stack: Services) -> None:
    stack.start_worker("w1", concurrency=2)
    flaky = flowstone.materialize_async("d_flaky").wait(WAIT)
    broken = flowstone.materialize_all_async("d_downstream").wait(WAIT)

    assert flaky.status == RunStatus.SUCCESS
    first, second = _attempts(flaky.run_id, "d_flaky")
    assert first.outcome == StepAttempt.Outcome.RETRIED
    assert first.error is not None
    assert first.error["kind"] == "timeout"
    assert second.outcome == StepAttempt.Outcome.SUCCEEDED
    assert [r["message"] for r in second.log] == ["attempt 2 starts"]
    assert first.worker.startswith("celery:w1@")
    assert broken.status == RunStatus.FAILED
    (failed,) = _attempts(broken.run_id, "d_broken")
    assert failed.outcome == StepAttempt.Outcome.FAILED
    assert failed.error is not None
    assert "Traceback (most recent call last)" in failed.error["traceback"]
    assert [r["level"] for r in failed.log] == ["INFO", "ERROR"]


def test_a_lease_taken_back_from_a_dead_worker_is_kept_as_a_lost_attempt(
    stack: Services,
) -> None:
    stack.start_beat()
    stack.start_worker("w1", concurrency=1)

    result = flowstone.materialize_async("d_dies").wait(WAIT)

    assert result.status == RunStatus.SUCCESS
    lost, second = _attempts(result.run_id, "d_dies")
    assert (lost.attempt, lost.outcome) == (1, StepAttempt.Outcome.LOST)
    assert lost.worker.startswith("celery:w1@")
    assert lost.error is not None
    assert "stopped renewing its lease" in lost.error["message"]
    assert lost.log == []  # what a killed process logged died with it
    assert (second.attempt, second.outcome) == (2, StepAttempt.Outcome.SUCCEEDED)
