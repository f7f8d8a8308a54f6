"""The only code that creates or decides approvals.

A decision is one conditional UPDATE from ``pending``: the first decision wins, a second one is an
``ApprovalDecidedError``. The step then returns to ``queued`` and the caller dispatches its
continuation after commit.

Who may decide is checked here, for every console: the approval's deciders (the checkpoint's
``assignees``, or its ``escalate_to`` once escalated) when it has any, never the run's requester
unless ``ALLOW_SELF_APPROVAL``. Under a quorum an approve is a vote; the vote that completes the
quorum decides, under the run's and the approval's row locks, so exactly one vote completes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from django.contrib.auth import get_user_model
from django.contrib.auth.models import PermissionsMixin
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, F, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from approvals.models import AUTOMATED, Approval, ApprovalDecider, ApprovalVote
from approvals.signals import (
    approval_decided,
    approval_escalated,
    approval_expired,
    approval_requested,
)
from assets import services as step_services
from flowstone.checkpoints import GROUP_PREFIX, NAME_LENGTH
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

    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser

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
DECIDE_PERMISSION: Final = "approvals.decide_approval"


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
    deciders: Sequence[str] = (),
    quorum: int = 1,
) -> Approval | None:
    """Record the approval request (once per materialization) and park the step, atomically.

    Returns ``None`` if this process no longer owns the step (nothing is recorded then).
    ``log`` is what the attempt's asset logged while computing the value under review.
    ``deciders`` are the checked names of who may decide (none: anyone with the permission).
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
                    quorum=quorum,
                )
            ],
            ignore_conflicts=True,
        )
        approval = Approval.objects.get(materialization=step)
        ApprovalDecider.objects.bulk_create(
            [ApprovalDecider(approval=approval, name=name) for name in deciders],
            ignore_conflicts=True,  # a second delivery of the step records nothing new
        )
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
    """Whether ``actor`` may decide this approval now (see ``decision_refusal``)."""
    return decision_refusal(approval, actor) is None


def decision_refusal(approval: Approval, actor: str) -> str | None:
    """Why ``actor`` may not decide this approval, or ``None`` if they may.

    Without deciders anyone the console lets in may (the consoles check the permission); with
    deciders only an active user named there, or in a group named there, who still holds the
    permission. The run's requester never may, unless ``ALLOW_SELF_APPROVAL``.
    """
    shown = repr(actor[:NAME_LENGTH])
    if not flowstone_settings.ALLOW_SELF_APPROVAL and actor and actor == approval.requested_by:
        return f"{shown} requested run {approval.run_id} and may not decide its approval"
    names = approval.decider_names
    if not names or _is_decider(actor, names):
        return None
    return f"{shown} may not decide approval {approval.pk}: it is for {', '.join(names)}"


def _is_decider(actor: str, names: Sequence[str]) -> bool:
    """Whether the active user ``actor`` holds the permission and is named, or in a named group."""
    if "\x00" in actor:  # no user name holds one (and PostgreSQL refuses it in a query)
        return False
    model = get_user_model()
    user = model.objects.filter(**{model.USERNAME_FIELD: actor[:NAME_LENGTH]}).first()
    if user is None or not user.is_active or not user.has_perm(DECIDE_PERMISSION):
        return False
    groups = [name.removeprefix(GROUP_PREFIX) for name in names if name.startswith(GROUP_PREFIX)]
    return actor in names or user.groups.filter(name__in=groups).exists()


def pending_for(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Approval]:
    """The pending approvals ``user`` may decide, oldest first, in one query.

    Assigned to them or to one of their groups, or unassigned (they hold the permission), never
    their own run's unless ``ALLOW_SELF_APPROVAL``. Each row carries ``votes_so_far`` (the votes
    that count now) and ``voted`` (whether the user's own vote is among them).
    """
    if not isinstance(user, PermissionsMixin) or not user.is_active:
        return Approval.objects.none()
    if not user.has_perm(DECIDE_PERMISSION):
        return Approval.objects.none()
    username = user.get_username()
    groups = user.groups.values_list("name", flat=True)
    names = [username, *(GROUP_PREFIX + name for name in groups)]
    assigned = ApprovalDecider.objects.filter(approval=OuterRef("pk"))
    counting = ApprovalVote.objects.filter(
        approval=OuterRef("pk"), escalation=OuterRef("escalations")
    )
    tally = counting.order_by().values("approval").annotate(n=Count("pk")).values("n")
    pending = Approval.objects.filter(status=Approval.Status.PENDING).filter(
        ~Exists(assigned) | Exists(assigned.filter(name__in=names))
    )
    if not flowstone_settings.ALLOW_SELF_APPROVAL:
        pending = pending.exclude(requested_by=username)
    return pending.annotate(
        votes_so_far=Coalesce(Subquery(tally, output_field=IntegerField()), 0),
        voted=Exists(counting.filter(voter=username)),
    ).order_by("requested_at", "id")


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
) -> Continuation | None:
    """Approve, modify or reject a pending approval; the first decision wins.

    ``reject`` needs a reason, ``modify`` a JSON value that the checkpoint's validator accepts.
    Under a quorum an ``approve`` is ``actor``'s vote: ``None`` while the quorum is incomplete,
    the continuation when this vote completes it. One eligible ``reject`` rejects at once;
    ``modify`` is refused (the reviewers would each approve a different value).
    """
    if decision not in DECISIONS:
        raise ValidationFailedError(
            f"decision must be one of {sorted(DECISIONS)}, got {decision!r}"
        )
    reason = (reason or "").strip()[:MAX_REASON_LENGTH]
    if decision == "reject" and not reason:
        raise ValidationFailedError("a rejection needs a reason")
    approval = get_approval(approval_id)
    _require_decider(approval, actor)
    if decision == "modify" and approval.quorum > 1:
        raise ValidationFailedError(
            f"approval {approval.pk} needs {approval.quorum} approvals: approve or reject it "
            "(a modified value cannot be voted on)"
        )
    decided_value = _checked_value(approval, decision, value)
    status = DECISIONS[decision]
    with transaction.atomic():
        step_services.lock_run(approval.run_id)  # lock order: run, steps, approvals
        approval = _locked_pending(approval.pk)
        _require_decider(approval, actor)  # an escalation may have handed it over meanwhile
        audit: dict[str, Any] = {"approval_id": approval.pk, "reason": reason}
        if decision == "approve" and approval.quorum > 1:
            votes = _vote(approval, actor, actor_type, reason)
            audit |= {"votes": votes, "quorum": approval.quorum}
            if votes < approval.quorum:
                _audit(approval, AUDIT_ACTIONS[status], actor, actor_type, audit)
                return None
        Approval.objects.filter(pk=approval.pk, status=Approval.Status.PENDING).update(
            status=status,
            decided_value=decided_value,
            decided_at=timezone.now(),
            decided_by=actor[:NAME_LENGTH],
            decided_by_type=actor_type,
            reason=reason,
        )
        approval.refresh_from_db()
        _audit(approval, AUDIT_ACTIONS[status], actor, actor_type, audit)
        continuation = _continue(approval)
        transaction.on_commit(
            lambda: approval_decided.send(sender=Approval, approval=approval, decision=status)
        )
    return continuation


def _require_decider(approval: Approval, actor: str) -> None:
    """Raise ``ApprovalForbiddenError`` unless ``actor`` may decide the approval."""
    refusal = decision_refusal(approval, actor)
    if refusal is not None:
        raise ApprovalForbiddenError(refusal, run_id=str(approval.run_id))


def _locked_pending(approval_id: int) -> Approval:
    """Lock the approval's row; raise ``ApprovalDecidedError`` unless it is still pending."""
    approval = (
        Approval.objects.select_for_update(of=("self",)).select_related("run").get(pk=approval_id)
    )
    if not approval.is_pending:
        raise ApprovalDecidedError(
            f"approval {approval.pk} is already {approval.status}"
            + (f" by {approval.decided_by}" if approval.decided_by else ""),
            asset=approval.asset,
            partition=approval.partition_key,
            run_id=str(approval.run_id),
        )
    return approval


def _vote(approval: Approval, actor: str, actor_type: str, reason: str) -> int:
    """Record ``actor``'s approve vote on the locked approval; return the votes that count now.

    A reviewer counts once: a second vote is an ``ApprovalDecidedError`` (409, exit 1).
    """
    vote = ApprovalVote(
        approval=approval,
        escalation=approval.escalations,
        voter=actor[:NAME_LENGTH],
        voter_type=actor_type,
        reason=reason,
    )
    try:
        with transaction.atomic():  # a savepoint: the duplicate leaves the transaction usable
            vote.save()
    except IntegrityError as exc:
        raise ApprovalDecidedError(
            f"{actor[:NAME_LENGTH]!r} already voted to approve approval {approval.pk}",
            asset=approval.asset,
            partition=approval.partition_key,
            run_id=str(approval.run_id),
        ) from exc
    return approval.votes.filter(escalation=approval.escalations).count()


def _audit(
    approval: Approval, action: str, actor: str, actor_type: str, details: dict[str, Any]
) -> None:
    record_audit(
        action,
        actor_type=actor_type,
        actor=actor,
        run_id=approval.run_id,
        asset=approval.asset,
        partition_key=approval.partition_key,
        details=details,
    )


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
                    quorum=1,
                ):
                    _hand_over(approval, str(spec.escalate_to))
                    _audit_system(
                        approval, AuditEvent.Action.CHECKPOINT_ESCALATED, spec.escalate_to
                    )
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
        transaction.on_commit(
            lambda: signal.send(sender=Approval, approval=approval, decision=status)
        )
        return _continue(approval)


def _hand_over(approval: Approval, escalate_to: str) -> None:
    """Make ``escalate_to`` the approval's only decider (the original assignees no longer are)."""
    approval.deciders.all().delete()
    ApprovalDecider.objects.create(approval=approval, name=escalate_to)


def _audit_system(approval: Approval, action: str, detail: object) -> None:
    details = {"approval_id": approval.pk, "policy": str(detail)}
    _audit(approval, action, "timeout", AuditEvent.ActorType.SYSTEM, details)


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
