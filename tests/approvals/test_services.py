"""Checkpoints and approvals on in-process runs: the state machine, decisions, timeouts, mail."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone
from pytest_django import Settings

import flowstone
from approvals import services
from approvals.models import Approval
from approvals.signals import approval_decided, approval_requested
from assets.models import Materialization
from flowstone import asset
from flowstone.checkpoints import checkpoint
from flowstone.errors import (
    ApprovalDecidedError,
    ApprovalForbiddenError,
    ApprovalNotFoundError,
    DefinitionError,
    ValidationFailedError,
)
from flowstone.execution.resume import continue_after_decision
from flowstone.status import RunStatus, StepStatus
from lineage.models import AuditEvent, LineageEdge
from tests.conftest import UseDefinitions
from tests.pipelines import gates

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


@pytest.fixture(autouse=True)
def _gates(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.gates", resources={})
    gates.HANDLED.clear()


def _waiting(partition: str = "large", asset: str = "g_ledger") -> tuple[str, Approval]:
    result = flowstone.materialize_all(asset, partition, requested_by="alice")
    assert result.status == RunStatus.WAITING_APPROVAL
    return result.run_id, Approval.objects.get(run_id=result.run_id)


def _decide(approval: Approval, decision: str, **kwargs: object) -> flowstone.RunResult:
    continuation = services.decide_approval(approval.pk, decision, actor="bob", **kwargs)  # type: ignore[arg-type]
    assert continuation is not None  # no quorum here: every approve decides
    continue_after_decision(continuation)
    return flowstone.RunHandle(continuation.run_id).result()


def test_a_gated_step_waits_with_one_approval_and_its_downstream_waits_too() -> None:
    run_id, approval = _waiting()
    steps = {m.asset: m.status for m in Materialization.objects.filter(run_id=run_id)}
    assert steps == {"g_invoice": "success", "g_payout": "waiting_approval", "g_ledger": "pending"}
    assert approval.status == "pending"
    assert approval.message == "Pay 500 EUR to large? (invoice says 500)"
    assert approval.proposed_value == {"account": "large", "amount": 500}
    assert approval.requested_by == "alice"
    assert approval.materialization.lease_owner == ""
    assert approval.expires_at is None


def test_condition_false_passes_straight_through() -> None:
    result = flowstone.materialize_all("g_ledger", "small", include_values=True)
    assert result.status == RunStatus.SUCCESS
    assert result.value("g_ledger", "small") == {"booked": 50}
    assert not Approval.objects.exists()


def test_approve_stores_the_value_and_downstream_continues() -> None:
    run_id, approval = _waiting("a|b")
    assert Approval.objects.get(run_id=run_id) == approval
    result = _decide(approval, "approve")

    assert result.status == RunStatus.SUCCESS
    assert [s.status for s in result.steps] == [StepStatus.SUCCESS] * 3
    assert gates.HANDLED == ["approved:a|b:700"]
    payout = Materialization.objects.get(run_id=run_id, asset="g_payout")
    assert payout.metadata["uri"]
    assert LineageEdge.objects.filter(downstream=payout, upstream_asset="g_invoice").count() == 1
    audit = AuditEvent.objects.get(action="checkpoint.approved")
    assert (audit.actor_type, audit.actor, audit.run_id) == ("user", "bob", approval.run_id)


def test_modify_passes_the_edited_value_downstream() -> None:
    _, approval = _waiting()
    with pytest.raises(ValidationFailedError, match="non-negative integer"):
        services.decide_approval(approval.pk, "modify", actor="bob", value={"amount": -1})
    with pytest.raises(ValidationFailedError, match="is not a JSON value"):
        services.decide_approval(approval.pk, "modify", actor="bob", value={"amount": {1, 2}})
    result = _decide(approval, "modify", value={"account": "large", "amount": 450})

    assert result.status == RunStatus.SUCCESS
    assert _stored("g_payout", "large") == {"account": "large", "amount": 450}
    assert _stored("g_ledger", "large") == {"booked": 450}
    assert Approval.objects.get(pk=approval.pk).status == "modified"
    assert Approval.objects.get(pk=approval.pk).proposed_value == {
        "account": "large",
        "amount": 500,
    }


def _stored(asset: str, partition: str) -> object:
    return flowstone.load_value(asset, partition)


def test_reject_fails_the_step_and_downstream_is_upstream_failed() -> None:
    _, approval = _waiting()
    with pytest.raises(ValidationFailedError, match="needs a reason"):
        services.decide_approval(approval.pk, "reject", actor="bob", reason="  ")
    result = _decide(approval, "reject", reason="duplicate invoice")

    assert result.status == RunStatus.FAILED
    payout = result.step("g_payout", "large")
    assert payout.status == StepStatus.FAILED
    assert payout.error is not None
    assert payout.error.kind == "checkpoint_rejected"
    assert (
        str(payout.error) == "[checkpoint_rejected] checkpoint rejected by bob: duplicate invoice"
    )
    assert result.step("g_ledger", "large").status == StepStatus.UPSTREAM_FAILED
    assert gates.HANDLED == ["rejected:large:duplicate invoice"]
    assert not Materialization.objects.filter(asset="g_payout", status="success").exists()


def test_a_second_decision_is_refused_and_changes_nothing() -> None:
    _, approval = _waiting()
    _decide(approval, "approve")
    for decision, extra in [
        ("approve", {}),
        ("reject", {"reason": "late"}),
        ("modify", {"value": {"amount": 1}}),
    ]:
        with pytest.raises(
            ApprovalDecidedError, match=rf"approval {approval.pk} is already approved by bob"
        ):
            services.decide_approval(approval.pk, decision, actor="carol", **extra)  # type: ignore[arg-type]
    assert AuditEvent.objects.filter(action__startswith="checkpoint.").count() == 1


def test_unknown_decisions_and_approvals_are_clear_errors() -> None:
    _, approval = _waiting()
    with pytest.raises(ValidationFailedError, match="decision must be one of"):
        services.decide_approval(approval.pk, "maybe", actor="bob")
    with pytest.raises(ApprovalNotFoundError):
        services.decide_approval(10**9, "approve", actor="bob")
    with pytest.raises(ApprovalNotFoundError):
        services.decide_approval("1; drop table", "approve", actor="bob")


def test_the_requester_may_not_approve_their_own_run(settings: Settings) -> None:
    _, approval = _waiting()
    with pytest.raises(ApprovalForbiddenError, match="'alice' requested run"):
        services.decide_approval(approval.pk, "approve", actor="alice")
    assert Approval.objects.get(pk=approval.pk).status == "pending"
    settings.FLOWSTONE = {**settings.FLOWSTONE, "ALLOW_SELF_APPROVAL": True}
    services.decide_approval(approval.pk, "approve", actor="alice")


@pytest.mark.parametrize(
    ("partition", "status", "stored"),
    [("small", "approved", 50), ("huge", "modified", 1000), ("negative", "rejected", None)],
)
def test_automated_gates_decide_at_once(partition: str, status: str, stored: int | None) -> None:
    result = flowstone.materialize_all("g_auto", partition, include_values=True)
    approval = Approval.objects.get(asset="g_auto")
    assert (approval.status, approval.decided_by) == (status, "automated")
    if stored is None:
        assert result.status == RunStatus.FAILED
        error = result.step("g_auto", partition).error
        assert error is not None
        assert error.kind == "checkpoint_rejected"
        assert "negative amounts are never paid" in error.message
    else:
        assert result.status == RunStatus.SUCCESS
        assert result.value("g_auto", partition)["amount"] == stored


def _overdue(asset: str) -> Approval:
    flowstone.materialize_all(asset, "large", requested_by="alice")
    approval = Approval.objects.get(asset=asset)
    assert approval.expires_at is not None
    return approval


def _expire(hours: float) -> None:
    for continuation in services.expire_overdue(now=timezone.now() + dt.timedelta(hours=hours)):
        continue_after_decision(continuation)


def test_timeout_auto_approve() -> None:
    approval = _overdue("g_timeout_approve")
    _expire(0.5)
    assert Approval.objects.get(pk=approval.pk).status == "pending"
    _expire(1.5)
    _expire(1.5)  # exactly once
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by) == ("approved", "timeout")
    assert approval.materialization.status == "success"
    assert AuditEvent.objects.filter(action="checkpoint.approved", actor="timeout").count() == 1


def test_timeout_auto_reject_expires_and_fails_the_step() -> None:
    approval = _overdue("g_timeout_reject")
    _expire(1.5)
    approval.refresh_from_db()
    assert approval.status == "expired"
    step = approval.materialization
    assert step.status == "failed"
    assert step.error is not None
    assert step.error["kind"] == "checkpoint_rejected"
    assert AuditEvent.objects.filter(action="checkpoint.expired").count() == 1


def test_timeout_escalate_returns_to_pending_for_the_target_then_expires() -> None:
    approval = _overdue("g_timeout_escalate")
    _expire(1.5)
    approval.refresh_from_db()
    assert (approval.status, approval.assignee, approval.escalations) == (
        "pending",
        "finance-leads",
        1,
    )
    assert AuditEvent.objects.filter(action="checkpoint.escalated").count() == 1
    _expire(1.6)  # the new deadline is now + 1 h, counted from the escalation
    assert Approval.objects.get(pk=approval.pk).status == "pending"
    _expire(3)
    assert Approval.objects.get(pk=approval.pk).status == "expired"


def test_timeout_extend_moves_the_deadline_once() -> None:
    approval = _overdue("g_timeout_extend")
    deadline = approval.expires_at
    assert deadline is not None
    _expire(1.5)
    approval.refresh_from_db()
    assert (approval.status, approval.extensions) == ("pending", 1)
    assert approval.expires_at == deadline + dt.timedelta(hours=2)
    _expire(3.5)
    assert Approval.objects.get(pk=approval.pk).status == "expired"


def test_signals_fire_after_commit_and_email_goes_to_recipients(
    settings: Settings, django_capture_on_commit_callbacks: Any
) -> None:
    settings.FLOWSTONE = {**settings.FLOWSTONE, "APPROVAL_EMAIL_RECIPIENTS": ["ops@example.com"]}
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    seen: list[str] = []

    def requested(**kwargs: object) -> None:
        seen.append("requested")

    def decided(**kwargs: object) -> None:
        seen.append(f"decided:{kwargs['decision']}")

    approval_requested.connect(requested, dispatch_uid="test.requested")
    approval_decided.connect(decided, dispatch_uid="test.decided")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            _, approval = _waiting()
        assert seen == ["requested"]
        with django_capture_on_commit_callbacks(execute=True):
            _decide(approval, "approve")
    finally:
        approval_requested.disconnect(dispatch_uid="test.requested")
        approval_decided.disconnect(dispatch_uid="test.decided")
    assert seen == ["requested", "decided:approved"]
    assert [m.subject for m in mail.outbox] == [
        "Approval needed: g_payout [s:large]",
        "Approval approved: g_payout [s:large]",
    ]
    assert mail.outbox[0].to == ["ops@example.com"]


def test_checkpoint_definition_errors() -> None:
    with pytest.raises(DefinitionError, match="above @asset"):
        checkpoint()(lambda: 1)
    with pytest.raises(DefinitionError, match="needs escalate_to"):
        checkpoint(timeout=dt.timedelta(hours=1), on_timeout="escalate")
    with pytest.raises(DefinitionError, match="needs a positive extend_by"):
        checkpoint(timeout=dt.timedelta(hours=1), on_timeout="extend")
    with pytest.raises(DefinitionError, match="needs a timeout"):
        checkpoint(on_timeout="auto_approve")
    with pytest.raises(DefinitionError, match="on_timeout must be one of"):
        checkpoint(timeout=dt.timedelta(hours=1), on_timeout="ignore")  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="already has a checkpoint"):
        checkpoint()(checkpoint()(asset(name="twice")(lambda: 1)))
