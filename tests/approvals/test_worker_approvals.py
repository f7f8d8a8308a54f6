"""Approvals on real Celery workers: nothing waits in a worker, decisions resume the run."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.utils import timezone
from pytest_django import Settings

import flowstone
from approvals import services
from approvals.models import Approval
from assets.models import Materialization
from assets.services import publish_steps
from flowstone.celery import app
from flowstone.execution.resume import continue_after_decision
from flowstone.status import RunStatus, StepStatus
from lineage.models import AuditEvent
from tests.workers import Services, worker_stack

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

GATES = "tests.pipelines.gates"
WAIT = 90


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Services]:
    with worker_stack(settings, tmp_path, GATES) as started:
        yield started


def _events(stack: Services, name: str) -> list[dict[str, object]]:
    path = stack.data_dir / "gates.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e["event"] == name]


def _wait_for(predicate: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_waiting_holds_no_worker_and_approval_resumes_the_run(stack: Services) -> None:
    stack.start_worker("w1", concurrency=1)
    gated = flowstone.materialize_all_async("g_ledger", "large", requested_by="alice")
    _wait_for(lambda: Approval.objects.filter(run_id=gated.run_id).exists())
    assert gated.status() == RunStatus.WAITING_APPROVAL

    # The only worker process is free: another run completes while the first one waits.
    other = flowstone.materialize_async("g_quick", "small").wait(WAIT)
    assert other.status == RunStatus.SUCCESS
    assert gated.status() == RunStatus.WAITING_APPROVAL

    approval = Approval.objects.get(run_id=gated.run_id)
    continue_after_decision(services.decide_approval(approval.pk, "approve", actor="bob"))
    result = gated.wait(WAIT)
    assert result.status == RunStatus.SUCCESS
    assert [e["amount"] for e in _events(stack, "g_ledger")] == [500]
    assert len(_events(stack, "g_payout")) == 1  # the value was computed once, not again


def test_modify_on_workers_sends_the_edited_value_downstream(stack: Services) -> None:
    stack.start_worker("w1")
    gated = flowstone.materialize_all_async("g_ledger", "a|b", requested_by="alice")
    _wait_for(lambda: Approval.objects.filter(run_id=gated.run_id).exists())
    approval = Approval.objects.get(run_id=gated.run_id)
    continuation = services.decide_approval(
        approval.pk, "modify", actor="bob", value={"account": "a|b", "amount": 699}
    )
    continue_after_decision(continuation)
    assert gated.wait(WAIT).status == RunStatus.SUCCESS
    assert [e["amount"] for e in _events(stack, "g_ledger")] == [699]


def test_reject_on_workers_fails_the_run(stack: Services) -> None:
    stack.start_worker("w1")
    gated = flowstone.materialize_all_async("g_ledger", "large", requested_by="alice")
    _wait_for(lambda: Approval.objects.filter(run_id=gated.run_id).exists())
    approval = Approval.objects.get(run_id=gated.run_id)
    continue_after_decision(
        services.decide_approval(approval.pk, "reject", actor="bob", reason="no")
    )
    result = gated.wait(WAIT)
    assert result.status == RunStatus.FAILED
    assert result.step("g_ledger", "large").status == StepStatus.UPSTREAM_FAILED
    assert not _events(stack, "g_ledger")


def test_approval_requested_once_when_the_step_is_delivered_twice(stack: Services) -> None:
    gated = flowstone.materialize_async("g_payout", "huge", requested_by="alice")
    step = Materialization.objects.get(run_id=gated.run_id)
    for _ in range(3):
        Materialization.objects.filter(pk=step.pk).update(dispatched_at=None)  # send it again
        publish_steps([step.pk])
    flowstone.materialize_all("g_invoice", "huge")  # its upstream, so the gate can compute
    stack.start_worker("w1", concurrency=3)
    _wait_for(lambda: Approval.objects.filter(run_id=gated.run_id).exists())
    time.sleep(1.5)  # the duplicate deliveries arrive and do nothing
    assert Approval.objects.filter(materialization=step).count() == 1
    assert len(_events(stack, "g_payout")) == 1
    step.refresh_from_db()
    assert step.status == StepStatus.WAITING_APPROVAL


def test_the_timeout_task_on_a_worker_applies_the_policy_once(stack: Services) -> None:
    stack.start_worker("w1")
    gated = flowstone.materialize_all_async("g_timeout_approve", "large", requested_by="alice")
    _wait_for(lambda: Approval.objects.filter(run_id=gated.run_id).exists())
    Approval.objects.filter(run_id=gated.run_id).update(expires_at=timezone.now())
    for _ in range(3):  # three beat ticks: the policy applies once
        app.send_task("flowstone.expire_approvals")
    assert gated.wait(WAIT).status == RunStatus.SUCCESS
    approval = Approval.objects.get(run_id=gated.run_id)
    assert (approval.status, approval.decided_by) == ("approved", "timeout")
    assert AuditEvent.objects.filter(action="checkpoint.approved", run_id=gated.run_id).count() == 1
