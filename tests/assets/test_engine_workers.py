"""The run engine's edges on real Celery workers, Redis and PostgreSQL.

Each test is one of the defects the engine was rebuilt for: a stored status that lied, a cancel
that stranded another run or left an approval open, a broker outage at submit, a crash between a
commit and its publish, an early delivery that was dropped.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from pytest_django import Settings
from rest_framework.test import APIClient

import flowstone
from approvals import services as approval_services
from approvals.models import Approval
from assets import services
from assets.models import Materialization, Run
from flowstone.celery import app
from flowstone.errors import ApprovalDecidedError
from flowstone.status import RunStatus, StepStatus, derive_run_status
from lineage.models import AuditEvent
from tests.workers import Services, worker_stack

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ENGINE = "tests.pipelines.engine_flow"
WAIT = 60
# The production defaults, for the tests that promise a bound "with the default settings".
DEFAULT_TIMINGS = {
    "FLOWSTONE_SWEEP_SECONDS": "30",
    "FLOWSTONE_REQUEUE_AFTER_SECONDS": "600",
    "FLOWSTONE_STEP_LEASE_SECONDS": "60",
}


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Services]:
    with worker_stack(settings, tmp_path, ENGINE) as started:
        yield started


def _wait_for(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _status_agrees(run_id: str) -> None:
    run = Run.objects.get(pk=run_id)
    statuses = Materialization.objects.filter(run=run).values_list("status", flat=True)
    assert run.status == derive_run_status(statuses)


def _wait_for_relay(stack: Services) -> None:
    """Wait until beat has sent the relay task once (it is scheduled, and so are the others)."""
    log = stack.data_dir / "beat.log"
    _wait_for(lambda: log.exists() and "flowstone.relay_outbox" in log.read_text(), 60)


def test_a_run_whose_only_step_runs_says_running(stack: Services) -> None:
    handle = flowstone.materialize_async("e_slow", "k0")
    stack.start_worker("w1", concurrency=1)
    _wait_for(
        lambda: Materialization.objects.filter(
            run_id=handle.run_id, status=StepStatus.RUNNING
        ).exists()
    )
    assert handle.status() == RunStatus.RUNNING
    assert Run.objects.filter(pk=handle.run_id, status="running").exists()  # the API's filter
    _status_agrees(handle.run_id)
    assert handle.wait(WAIT).status == RunStatus.SUCCESS


def test_a_step_waiting_for_approval_and_a_sibling_that_succeeds_say_waiting(
    stack: Services,
) -> None:
    stack.start_worker("w1", concurrency=2)
    handle = flowstone.materialize_all_async("e_top", requested_by="alice")
    _wait_for(
        lambda: (
            Materialization.objects.filter(
                run_id=handle.run_id, asset="e_sibling", status=StepStatus.SUCCESS
            ).exists()
            and Approval.objects.filter(run_id=handle.run_id).exists()
        )
    )
    assert handle.status() == RunStatus.WAITING_APPROVAL
    _status_agrees(handle.run_id)
    approval = Approval.objects.get(run_id=handle.run_id)
    approval_services.decide_approval(approval.pk, "approve", actor="bob")
    assert handle.wait(WAIT).status == RunStatus.SUCCESS


def test_cancel_frees_concurrency_slots_for_another_run(stack: Services) -> None:
    first = flowstone.backfill_async("e_limited")  # 8 steps, one at a time across all runs
    second = flowstone.materialize_async("e_limited", "k0")
    assert Materialization.objects.get(run_id=second.run_id).status == StepStatus.PENDING
    stack.start_worker("w1", concurrency=2)
    _wait_for(
        lambda: Materialization.objects.filter(
            run_id=first.run_id, status=StepStatus.SUCCESS
        ).exists()
    )
    first.cancel(actor="alice")

    assert second.wait(WAIT).status == RunStatus.SUCCESS
    assert first.wait(WAIT).status == RunStatus.CANCELED
    _status_agrees(first.run_id)


def test_cancel_of_a_run_waiting_for_approval_cancels_the_approval(stack: Services) -> None:
    stack.start_worker("w1", concurrency=2)
    handle = flowstone.materialize_all_async("e_top", requested_by="alice")
    _wait_for(lambda: Approval.objects.filter(run_id=handle.run_id).exists())
    approval = Approval.objects.get(run_id=handle.run_id)

    handle.cancel(actor="carol")

    assert handle.wait(WAIT).status == RunStatus.CANCELED
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by) == (Approval.Status.CANCELED, "carol")
    assert AuditEvent.objects.filter(
        action=AuditEvent.Action.CHECKPOINT_CANCELED, run_id=handle.run_id, actor="carol"
    ).exists()
    with pytest.raises(ApprovalDecidedError, match="already canceled"):
        approval_services.decide_approval(approval.pk, "approve", actor="bob")
    reviewer = User.objects.create_superuser("bob", "bob@example.com", "pw")
    client = APIClient()
    client.force_authenticate(reviewer)
    response = client.post(
        f"/api/approvals/{approval.pk}/decide/", {"decision": "approve"}, format="json"
    )
    assert response.status_code == 409, response.content
    gate = Materialization.objects.get(run_id=handle.run_id, asset="e_gate")
    assert gate.status == StepStatus.CANCELED
    assert not Materialization.objects.filter(asset="e_gate", status=StepStatus.SUCCESS).exists()
    _status_agrees(handle.run_id)


def test_a_foreign_exception_in_an_io_manager_fails_the_step_on_a_worker(stack: Services) -> None:
    stack.start_worker("w1", concurrency=1)
    result = flowstone.materialize_all_async("e_after_deep").wait(WAIT)

    assert result.status == RunStatus.FAILED
    deep = Materialization.objects.get(run_id=result.run_id, asset="e_deep")
    assert deep.status == StepStatus.FAILED
    assert deep.error is not None
    assert (deep.error["type"], deep.error["kind"]) == ("IOManagerError", "io_error")
    assert deep.error["cause"].startswith("RecursionError")
    assert "Traceback (most recent call last)" in deep.error["traceback"]
    after = Materialization.objects.get(run_id=result.run_id, asset="e_after_deep")
    assert after.status == StepStatus.UPSTREAM_FAILED
    _status_agrees(result.run_id)


def test_a_broker_outage_at_submit_records_the_run_and_the_relay_sends_it_later(
    stack: Services,
) -> None:
    run_id, stderr = stack.submit_with_the_broker_down(
        'flowstone.materialize_all_async("e_crash_sink")'
    )
    assert "stay in the outbox" in stderr
    step = Materialization.objects.get(run_id=run_id, asset="e_crash_source")
    assert (step.status, step.dispatched_at) == (StepStatus.QUEUED, None)

    stack.start_worker("w1")
    stack.start_beat()
    result = flowstone.RunHandle(run_id).wait(WAIT)
    assert result.status == RunStatus.SUCCESS


def test_kill_9_between_a_success_commit_and_its_publish_recovers_within_seconds(
    stack: Services,
) -> None:
    stack.extra_env.update({**DEFAULT_TIMINGS, "FLOWSTONE_TEST_CRASH": "1"})
    stack.start_beat()
    stack.start_worker("w1", concurrency=2)
    _wait_for_relay(stack)
    started = time.monotonic()

    handle = flowstone.materialize_all_async("e_crash_sink")
    result = handle.wait(WAIT)

    elapsed = time.monotonic() - started
    assert (stack.data_dir / "crashed").exists()  # the pool process did die after the commit
    assert result.status == RunStatus.SUCCESS
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert [s.attempt for s in result.steps] == [1, 1]


def test_an_early_delivery_is_sent_again_for_its_time(stack: Services) -> None:
    handle = flowstone.materialize_async("e_limited", "k3")
    due = timezone.now() + dt.timedelta(seconds=3)
    Materialization.objects.filter(run_id=handle.run_id).update(not_before=due)
    step = Materialization.objects.get(run_id=handle.run_id)
    app.send_task(
        "flowstone.run_step",
        kwargs=services.step_payload(handle.run_id, step.asset, step.partition_key),
        queue="flowstone",
    )  # no ETA: it arrives early (no sweeper runs in this test)
    stack.start_worker("w1", concurrency=1)

    result = handle.wait(WAIT)

    assert result.status == RunStatus.SUCCESS
    step.refresh_from_db()
    assert step.started_at is not None
    assert step.started_at >= due
    assert step.attempt == 1
