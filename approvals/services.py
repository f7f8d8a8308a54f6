"""The only code that creates or decides approvals.

A decision is one conditional UPDATE from ``pending``: the first decision wins, a second one is an
``ApprovalDecidedError``. The step then returns to ``queued`` and the caller dispatches its
continuation after commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from approvals import notifications
from approvals.models import AUTOMATED, Approval
from approvals.signals import (
    approval_decided,
    approval_escalated,
    approval_expired,
    approval_requested,
)
from assets import services as step_services
from flowstone.conf import flowstone_settings
from flowstone.errors import (
    ApprovalDecidedError,
    ApprovalForbiddenError,
    ApprovalNotFoundError,
    ValidationFailedError,
)
from lineage.models import AuditEvent
from lineage.services import record_audit

if TYPE_CHECKING:
    import datetime as dt
    import uuid
    from collections.abc import Sequence

    from assets.models import Materialization
    from flowstone.step_log import StepLog

DecisionName = Literal["approve", "modify", "reject"]
DECISIONS: Final[dict[str, Approval.Status]] = {
    "approve": Approval.Status.APPROVED,
    "modify": Approval.Status.MODIFIED,
    "reject": Approval.Status.REJECTED,
}
AUDIT_ACTIONS: Final = {
    Approval.Status.APPROVED: AuditEvent.Action.CHECKPOINT_APPROVED,
    Approval.Status.MODIFIED: AuditEvent.Action.CHECKPOINT_MODIFIED,
    Approval.Status.REJECTED: AuditEvent.Action.CHECKPOINT_REJECTED,
    Approval.Status.EXPIRED: AuditEvent.Action.CHECKPOINT_EXPIRED,
}
MAX_REASON_LENGTH: Final = 2000
EXPIRY_BATCH: Final = 500


@dataclass(frozen=True, kw_only=True, slots=True)
class Continuation:
    """A decided approval's step, back in ``queued``, to be dispatched after commit."""

    step_id: int
    run_id: str
    is_in_process: bool


def request_approval(
    step: Materialization,
    *,
    owner: str,
    message: str,
    value: Any,
    consumed: Sequence[int],
    timeout: dt.timedelta | None,
    log: StepLog | None = None,
) -> Approval | None:
    """Record the approval request (once per materialization) and park the step, atomically.

    Returns ``None`` if this process no longer owns the step (nothing is recorded then).
    ``log`` is what the attempt's asset logged while computing the value under review.
    """
    with transaction.atomic():
        if not step_services.park_step(step, owner=owner, log=log).is_parked:
            return None
        now = timezone.now()
        Approval.objects.bulk_create(
            [
                Approval(
                    materialization=step,
                    run_id=step.run_id,
                    asset=step.asset,
                    partition_key=step.partition_key,
                    message=message,
                    proposed_value=value,
                    consumed=list(consumed),
                    requested_by=step.run.requested_by,
                    requested_at=now,
                    expires_at=None if timeout is None else now + timeout,
                )
            ],
            ignore_conflicts=True,
        )
        approval = Approval.objects.select_related("run").get(materialization=step)
        notifications.notify_approval("requested", approval)
        transaction.on_commit(lambda: approval_requested.send(sender=Approval, approval=approval))
    return approval


def get_approval(approval_id: object) -> Approval:
    """Return the approval, or raise ``ApprovalNotFoundError``."""
    try:
        return Approval.objects.select_related("run").get(pk=int(str(approval_id)))
    except (ValueError, Approval.DoesNotExist) as exc:
        raise ApprovalNotFoundError(f"unknown approval {str(approval_id)[:40]!r}") from exc


def approval_for_step(step_id: int) -> Approval | None:
    """The approval of a step, if its checkpoint asked for one."""
    return Approval.objects.filter(materialization_id=step_id).first()


def can_decide(approval: Approval, actor: str) -> bool:
    """Whether ``actor`` may decide this approval (self-approval is off unless configured)."""
    if flowstone_settings.ALLOW_SELF_APPROVAL:
        return True
    return not (actor and approval.requested_by and actor == approval.requested_by)


def _continue(approval: Approval) -> Continuation:
    """Resume the decided step (the engine sends a worker run's step after commit)."""
    step_services.resume_step(approval.materialization_id)
    return Continuation(
        step_id=approval.materialization_id,
        run_id=str(approval.run_id),
        is_in_process=approval.run.is_in_process,
    )


def _checked_value(approval: Approval, decision: str, value: Any) -> Any:
    """The value a ``modify`` stores: checked as JSON input, then by the checkpoint's validator.

    Anything the validator raises that is not a ``FlowStoneError`` is the reviewer's bad value as
    far as the caller can tell, so it becomes a ``ValidationFailedError`` (a 400 in the API, a
    form error in the admin) with the original attached as ``__cause__``.
    """
    if decision != "modify":
        return None
    from flowstone.checkpoints import Review  # noqa: PLC0415  # keeps the model import light
    from flowstone.errors import FlowStoneError  # noqa: PLC0415
    from flowstone.inputs import validate_json_value  # noqa: PLC0415
    from flowstone.partitions import decode_partition_key  # noqa: PLC0415
    from flowstone.registry import get_registry  # noqa: PLC0415

    value = validate_json_value(value, what="the modified value")
    spec = get_registry().get(approval.asset).checkpoint
    review = Review(
        asset=approval.asset,
        partition=decode_partition_key(approval.partition_key),
        partition_key=approval.partition_key,
        run_id=str(approval.run_id),
        value=approval.proposed_value,
    )
    if spec is None:
        raise ValidationFailedError(f"asset {approval.asset!r} no longer has a checkpoint")
    try:
        checked = spec.modified_value(review, value)
    except FlowStoneError:
        raise
    except Exception as exc:  # the checkpoint's validator is user code
        cause = f"{type(exc).__name__}: {exc}".replace("\x00", "\\x00")[:1000]
        raise ValidationFailedError(
            f"the checkpoint refused the modified value: {cause}",
            asset=approval.asset,
            partition=approval.partition_key,
            run_id=str(approval.run_id),
        ) from exc
    return validate_json_value(checked, what="the value the checkpoint's validator returned")


def decide_approval(
    approval_id: object,
    decision: str,
    *,
    actor: str,
    actor_type: str = Approval.ActorType.USER,
    reason: str = "",
    value: Any = None,
) -> Continuation:
    """Approve, modify or reject a pending approval; the first decision wins.

    ``reject`` needs a reason, ``modify`` a JSON value that the checkpoint's validator accepts.
    """
    if decision not in DECISIONS:
        raise ValidationFailedError(
            f"decision must be one of {sorted(DECISIONS)}, got {decision!r}"
        )
    reason = (reason or "").strip()[:MAX_REASON_LENGTH]
    if decision == "reject" and not reason:
        raise ValidationFailedError("a rejection needs a reason")
    approval = get_approval(approval_id)
    if not can_decide(approval, actor):
        raise ApprovalForbiddenError(
            f"{actor!r} requested run {approval.run_id} and may not decide its approval",
            run_id=str(approval.run_id),
        )
    decided_value = _checked_value(approval, decision, value)
    status = DECISIONS[decision]
    with transaction.atomic():
        step_services.lock_run(approval.run_id)  # lock order: run, steps, approvals
        won = Approval.objects.filter(pk=approval.pk, status=Approval.Status.PENDING).update(
            status=status,
            decided_value=decided_value,
            decided_at=timezone.now(),
            decided_by=actor[:150],
            decided_by_type=actor_type,
            reason=reason,
        )
        if not won:
            current = Approval.objects.get(pk=approval.pk)
            raise ApprovalDecidedError(
                f"approval {approval.pk} is already {current.status}"
                + (f" by {current.decided_by}" if current.decided_by else ""),
                asset=approval.asset,
                partition=approval.partition_key,
                run_id=str(approval.run_id),
            )
        approval.refresh_from_db()
        record_audit(
            AUDIT_ACTIONS[status],
            actor_type=actor_type,
            actor=actor,
            run_id=approval.run_id,
            asset=approval.asset,
            partition_key=approval.partition_key,
            details={"approval_id": approval.pk, "reason": reason},
        )
        continuation = _continue(approval)
        notifications.notify_approval("decided", approval)
        transaction.on_commit(
            lambda: approval_decided.send(sender=Approval, approval=approval, decision=status)
        )
    return continuation


def _expire_one(approval: Approval, now: dt.datetime) -> Continuation | None:
    """Apply the checkpoint's on-timeout policy to one overdue approval, exactly once."""
    from flowstone.registry import get_registry  # noqa: PLC0415

    definition = get_registry().assets.get(approval.asset)
    spec = definition.checkpoint if definition is not None else None
    policy = spec.on_timeout if spec is not None else "auto_reject"
    overdue = Approval.objects.filter(
        pk=approval.pk, status=Approval.Status.PENDING, expires_at=approval.expires_at
    )
    with transaction.atomic():
        step_services.lock_run(approval.run_id)  # lock order: run, steps, approvals
        if spec is not None and spec.timeout is not None:
            if policy == "escalate" and approval.escalations == 0:
                if overdue.update(
                    assignee=str(spec.escalate_to or "")[:150],
                    escalations=F("escalations") + 1,
                    expires_at=now + spec.timeout,
                ):
                    _audit_system(
                        approval, AuditEvent.Action.CHECKPOINT_ESCALATED, spec.escalate_to
                    )
                    approval.refresh_from_db()
                    notifications.notify_approval("escalated", approval)
                    transaction.on_commit(
                        lambda: approval_escalated.send(sender=Approval, approval=approval)
                    )
                return None
            if policy == "extend" and approval.extensions == 0 and spec.extend_by is not None:
                overdue.update(
                    extensions=F("extensions") + 1, expires_at=F("expires_at") + spec.extend_by
                )
                return None
        status = Approval.Status.APPROVED if policy == "auto_approve" else Approval.Status.EXPIRED
        if not overdue.update(
            status=status,
            decided_at=now,
            decided_by="timeout",
            decided_by_type=Approval.ActorType.SYSTEM,
            reason=f"no decision before {approval.expires_at:%Y-%m-%d %H:%M:%S %Z} ({policy})",
        ):
            return None
        approval.refresh_from_db()
        _audit_system(approval, AUDIT_ACTIONS[status], policy)
        signal = approval_decided if status == Approval.Status.APPROVED else approval_expired
        notifications.notify_approval(
            "decided" if status == Approval.Status.APPROVED else "expired", approval
        )
        transaction.on_commit(
            lambda: signal.send(sender=Approval, approval=approval, decision=status)
        )
        return _continue(approval)


def _audit_system(approval: Approval, action: str, detail: object) -> None:
    record_audit(
        action,
        actor_type=AuditEvent.ActorType.SYSTEM,
        actor="timeout",
        run_id=approval.run_id,
        asset=approval.asset,
        partition_key=approval.partition_key,
        details={"approval_id": approval.pk, "policy": str(detail)},
    )


def expire_overdue(*, now: dt.datetime | None = None) -> list[Continuation]:
    """Apply the on-timeout policy to every overdue pending approval; return continuations."""
    now = now or timezone.now()
    overdue = Approval.objects.select_related("run").filter(
        status=Approval.Status.PENDING, expires_at__lt=now
    )[:EXPIRY_BATCH]
    continuations = [_expire_one(approval, now) for approval in overdue]
    return [c for c in continuations if c is not None]


def cancel_approvals_of_steps(
    sender: object,  # noqa: ARG001  # a signal receiver
    *,
    run_id: uuid.UUID,
    step_ids: Sequence[int],
    actor: str,
    actor_type: str,
    **kwargs: Any,  # noqa: ARG001
) -> int:
    """The run of these waiting steps is being canceled: cancel their undecided approvals.

    Runs inside the cancelling transaction (``assets.services.waiting_steps_canceled``), so a
    decision that comes later finds the approval ``canceled`` (``ApprovalDecidedError``, 409).
    Each canceled approval is audited with the actor who canceled the run.
    """
    undecided = Approval.objects.filter(
        materialization_id__in=list(step_ids),
        status__in=(Approval.Status.PENDING, Approval.Status.ESCALATED),
    )
    canceled = list(undecided.values_list("pk", "asset", "partition_key"))
    undecided.update(
        status=Approval.Status.CANCELED,
        decided_at=timezone.now(),
        decided_by=actor[:150],
        decided_by_type=actor_type if actor_type in Approval.ActorType.values else "system",
        reason=f"run {run_id} was canceled",
    )
    for approval_id, asset, partition_key in canceled:
        record_audit(
            AuditEvent.Action.CHECKPOINT_CANCELED,
            actor_type=actor_type,
            actor=actor,
            run_id=run_id,
            asset=asset,
            partition_key=partition_key,
            details={"approval_id": approval_id, "reason": "run canceled"},
        )
    return len(canceled)


def record_automated_decision(
    step: Materialization,
    *,
    owner: str,
    message: str,
    value: Any,
    decided_value: Any,
    status: str,
    reason: str,
) -> Approval | None:
    """Record an automated gate's decision (``decided_by='automated'``) for this attempt.

    ``None`` if the attempt no longer holds the step (its decision is not recorded). A later
    attempt decides again and replaces the record; every decision is audited.
    """
    with transaction.atomic():
        if not step_services.lock_attempt(step, owner):
            return None
        approval, _created = Approval.objects.update_or_create(
            materialization=step,
            defaults={
                "run_id": step.run_id,
                "asset": step.asset,
                "partition_key": step.partition_key,
                "message": message,
                "proposed_value": value,
                "decided_value": decided_value,
                "requested_by": step.run.requested_by,
                "status": status,
                "decided_at": timezone.now(),
                "decided_by": AUTOMATED,
                "decided_by_type": Approval.ActorType.SYSTEM,
                "reason": reason,
            },
        )
        record_audit(
            AUDIT_ACTIONS[Approval.Status(status)],
            actor_type=AuditEvent.ActorType.SYSTEM,
            actor=AUTOMATED,
            run_id=step.run_id,
            asset=step.asset,
            partition_key=step.partition_key,
            details={"approval_id": approval.pk, "reason": reason, "attempt": step.attempt},
        )
    return approval
