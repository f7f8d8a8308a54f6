"""Quorum votes racing on PostgreSQL: one vote completes the quorum, the run goes on once; an
escalation applied by beat hands a worker run's approval over."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from pytest_django import Settings

import flowstone
from approvals import services
from approvals.models import Approval, ApprovalVote
from assets.models import Materialization, Run
from flowstone.errors import ApprovalDecidedError, ApprovalForbiddenError
from flowstone.execution.resume import continue_after_decision
from flowstone.status import RunStatus, StepStatus
from lineage.models import AuditEvent
from tests.conftest import UseDefinitions
from tests.workers import Services, worker_stack

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DEFINITIONS = "tests.pipelines.deciders"
VOTERS = ("fiona", "frank", "fred", "fay")
WAIT = 90


def _finance() -> None:
    group = Group.objects.create(name="finance")
    decide = Permission.objects.get(codename="decide_approval")
    for name in VOTERS:
        user = User.objects.create_user(name)
        user.user_permissions.add(decide)
        user.groups.add(group)


def _race(approval: Approval) -> list[str]:
    """Every voter approves at the same moment; what each got: completed, voted or refused."""
    start = threading.Barrier(len(VOTERS))
    outcomes: list[str] = []

    def vote(name: str) -> None:
        try:
            start.wait()
            continuation = services.decide_approval(approval.pk, "approve", actor=name)
            outcomes.append("voted" if continuation is None else "completed")
            continue_after_decision(continuation)
        except ApprovalDecidedError:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=vote, args=(name,)) for name in VOTERS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    return sorted(outcomes)


@pytest.mark.parametrize("partition", ["small", "large", "hostile"])
def test_racing_votes_complete_the_quorum_once(
    use_definitions: UseDefinitions, partition: str
) -> None:
    use_definitions(DEFINITIONS, resources={})
    _finance()
    result = flowstone.materialize_all("d_booked", partition, requested_by="alice")
    approval = Approval.objects.get(run_id=result.run_id)

    assert _race(approval) == ["completed", "refused", "refused", "voted"]
    approval.refresh_from_db()
    assert approval.status == "approved"
    assert ApprovalVote.objects.filter(approval=approval).count() == 2
    assert AuditEvent.objects.filter(action="checkpoint.approved").count() == 2
    assert Run.objects.get(pk=result.run_id).status == RunStatus.SUCCESS
    booked = Materialization.objects.get(run_id=result.run_id, asset="d_booked")
    assert (booked.status, booked.attempt) == (StepStatus.SUCCESS, 1)


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Services]:
    with worker_stack(settings, tmp_path, DEFINITIONS) as started:
        yield started


def _events(stack: Services, name: str) -> list[dict[str, object]]:
    path = stack.data_dir / "deciders.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if e["event"] == name]


def test_racing_votes_continue_a_worker_run_once(stack: Services) -> None:
    _finance()
    stack.start_worker("w1", concurrency=2)
    gated = flowstone.materialize_all_async("d_booked", "large", requested_by="alice")
    deadline = time.monotonic() + 30
    while not Approval.objects.filter(run_id=gated.run_id).exists():
        assert time.monotonic() < deadline, "no approval was requested"
        time.sleep(0.05)
    approval = Approval.objects.get(run_id=gated.run_id)

    assert _race(approval) == ["completed", "refused", "refused", "voted"]
    assert gated.wait(WAIT).status == RunStatus.SUCCESS
    assert len(_events(stack, "d_quorum")) == 1  # computed once, before the votes
    assert len(_events(stack, "d_booked")) == 1  # continued once
    approval.refresh_from_db()
    assert approval.status == "approved"
    assert approval.decided_by in VOTERS


def test_beat_escalates_a_worker_runs_approval_to_the_group_that_then_decides(
    stack: Services,
) -> None:
    decide = Permission.objects.get(codename="decide_approval")
    bob = User.objects.create_user("bob")
    lea = User.objects.create_user("lea")
    for user in (bob, lea):
        user.user_permissions.add(decide)
    lea.groups.add(Group.objects.create(name="leads"))
    stack.start_worker("w1", concurrency=2)
    stack.start_beat()  # flowstone.expire_approvals every second here
    gated = flowstone.materialize_all_async("d_escalated_booking", "large", requested_by="alice")
    deadline = time.monotonic() + 30
    while not Approval.objects.filter(run_id=gated.run_id).exists():
        assert time.monotonic() < deadline, "no approval was requested"
        time.sleep(0.05)
    approval = Approval.objects.get(run_id=gated.run_id)
    with pytest.raises(ApprovalForbiddenError):
        services.decide_approval(approval.pk, "approve", actor="lea")  # bob's, until it escalates

    while Approval.objects.get(pk=approval.pk).escalations == 0:
        assert time.monotonic() < deadline, "beat did not escalate the approval"
        time.sleep(0.05)
    with pytest.raises(ApprovalForbiddenError):
        services.decide_approval(approval.pk, "approve", actor="bob")  # handed over
    continue_after_decision(services.decide_approval(approval.pk, "approve", actor="lea"))

    assert gated.wait(WAIT).status == RunStatus.SUCCESS
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by, approval.decider_names) == (
        "approved",
        "lea",
        ["group:leads"],
    )
    escalated = AuditEvent.objects.get(action="checkpoint.escalated")
    assert (escalated.actor, escalated.details["approval_id"]) == ("timeout", approval.pk)
    assert len(_events(stack, "d_escalated_booking")) == 1
