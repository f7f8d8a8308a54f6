"""The only code that creates or decides approvals.

A decision locks the approval's row and changes it from ``pending``: the first decision wins, a
second one is an ``ApprovalDecidedError``. The step then returns to ``queued`` and the caller
dispatches its continuation after commit; a checkpoint option whose outcome is ``skip`` ends the
step (and its downstream) ``skipped`` instead, in the same transaction.

An approval is bound to the values it reviewed (``ApprovalInput``): a new success of one of
those partitions marks it ``stale`` in the success's own transaction, and a decision checks the
inputs once more under the approval's lock. A stale approval is never approved; it is reviewed
again (``rereview_approval``) or rejected.

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
from django.db.models import Count, Exists, F, IntegerField, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from approvals import notifications
from approvals.models import AUTOMATED, Approval, ApprovalDecider, ApprovalInput, ApprovalVote
from approvals.review_forms import validate_form_value
from approvals.signals import (
    approval_decided,
    approval_escalated,
    approval_expired,
    approval_requested,
)
from assets import services as step_services
from assets.models import Materialization
from flowstone.checkpoints import GROUP_PREFIX, NAME_LENGTH
from flowstone.conf import flowstone_settings
from flowstone.errors import (
    ApprovalDecidedError,
    ApprovalForbiddenError,
    ApprovalNotFoundError,
    ApprovalStaleError,
    FlowStoneError,
    ValidationFailedError,
)
from flowstone.status import StepStatus
from lineage.models import AuditEvent
from lineage.services import record_audit

if TYPE_CHECKING:
    import datetime as dt
    import uuid
    from collections.abc import Sequence

    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser
    from django.db.models import QuerySet

    from flowstone.checkpoints import CheckpointSpec, Option
    from flowstone.step_log import StepLog

DecisionName = Literal["approve", "modify", "reject", "option"]
OPTION: Final = "option"
"""The decision that picks one of the checkpoint's named options (``option=<name>``)."""
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
    Approval.Status.SKIPPED: AuditEvent.Action.CHECKPOINT_SKIPPED,
}
BULK_DECISIONS: Final = ("approve", "reject")
MAX_REASON_LENGTH: Final = 2000
"""The longest reason any console takes; a longer one is refused, never cut."""
STORING: Final = frozenset({Approval.Status.APPROVED, Approval.Status.MODIFIED})
"""The decisions that store the reviewed value: a stale approval never takes them."""
MAX_BULK: Final = 1000
"""The most approvals one bulk decision takes."""
EXPIRY_BATCH: Final = 500
DECIDE_PERMISSION: Final = "approvals.decide_approval"
MAX_APPROVAL_ID: Final = 2**63 - 1
"""The largest id a 64-bit primary key holds."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Continuation:
    """A decided approval's step, back in ``queued``, to be dispatched after commit."""

    step_id: int
    run_id: str
    is_in_process: bool
    is_resumed: bool = True
    """False when the decision ended the step (a ``skip`` option): nothing is left to execute."""


def request_approval(
    step: Materialization,
    *,
    owner: str,
    message: str,
    value: Any,
    consumed: Sequence[Materialization],
    timeout: dt.timedelta | None,
    log: StepLog | None = None,
    deciders: Sequence[str] = (),
    quorum: int = 1,
) -> Approval | None:
    """Record the approval request and the inputs it reviewed, and park the step, atomically.

    Returns ``None`` if this process no longer owns the step (nothing is recorded then).
    ``log`` is what the attempt's asset logged while computing the value under review. Parking
    wins once per attempt, so each attempt that asks records one approval. ``deciders`` are the
    checked names of who may decide (none: anyone with the permission).
    """
    with transaction.atomic():
        if not step_services.park_step(step, owner=owner, log=log).is_parked:
            return None
        now = timezone.now()
        approval = Approval.objects.create(
            materialization=step,
            run=step.run,  # loaded with the step: the notice reads it without a query
            asset=step.asset,
            partition_key=step.partition_key,
            message=message,
            proposed_value=value,
            consumed=[m.pk for m in consumed],
            inputs_read_at=step.started_at,
            requested_by=step.run.requested_by,
            requested_at=now,
            expires_at=None if timeout is None else now + timeout,
            quorum=quorum,
        )
        ApprovalDecider.objects.bulk_create(
            ApprovalDecider(approval=approval, name=name) for name in dict.fromkeys(deciders)
        )
        ApprovalInput.objects.bulk_create(
            ApprovalInput(
                approval=approval,
                materialization_id=m.pk,
                asset=m.asset,
                partition_key=m.partition_key,
                version=step_services.recorded_version(m),
            )
            for m in consumed
        )
        notifications.notify_approval("requested", approval)
        transaction.on_commit(lambda: approval_requested.send(sender=Approval, approval=approval))
    return approval


def approval_number(approval_id: object) -> int | None:
    """The id as a number, or ``None`` if no approval could have it.

    An id is ASCII digits within the database's 64-bit range: ``int()`` also reads ``"٣"`` or
    ``" 3_0 "``, and a larger number overflows SQLite's driver instead of matching nothing.
    """
    text = str(approval_id)
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_APPROVAL_ID)):
        return None
    number = int(text)
    return number if number <= MAX_APPROVAL_ID else None


def get_approval(approval_id: object) -> Approval:
    """Return the approval, or raise ``ApprovalNotFoundError`` (see ``approval_number``)."""
    number = approval_number(approval_id)
    approval = None
    if number is not None:
        approval = Approval.objects.select_related("run").filter(pk=number).first()
    if approval is None:
        raise ApprovalNotFoundError(f"unknown approval {str(approval_id)[:40]!r}")
    return approval


def approval_for_step(step_id: int) -> Approval | None:
    """The step's latest approval, if its checkpoint asked (a re-review asks once more)."""
    return Approval.objects.filter(materialization_id=step_id).order_by("-id").first()


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


def checkpoint_of(approval: Approval) -> CheckpointSpec | None:
    """The checkpoint of the approval's asset as defined now (``None`` if it has none)."""
    from flowstone.registry import get_registry  # noqa: PLC0415  # keeps the model import light

    definition = get_registry().assets.get(approval.asset)
    return definition.checkpoint if definition is not None else None


def option_json(option: Option) -> dict[str, str]:
    """An option as every console lists it: ``name``, ``label`` and ``outcome``."""
    return {"name": option.name, "label": option.label, "outcome": option.outcome}


def approval_choices(approval: Approval) -> dict[str, Any]:
    """The checkpoint's ``form`` and ``options`` as every console shows them, and the chosen one."""
    spec = checkpoint_of(approval)
    return {
        "form": dict(spec.form) if spec is not None and spec.form is not None else None,
        "options": [option_json(o) for o in spec.options] if spec is not None else [],
        "option": approval.option,
    }


def _continue(approval: Approval) -> Continuation:
    """Resume the decided step (the engine sends a worker run's step after commit)."""
    step_services.resume_step(approval.materialization_id)
    return _continuation(approval, is_resumed=True)


def _skip(approval: Approval) -> Continuation:
    """End the decided step and its downstream ``skipped``: nothing is left to execute."""
    step_services.skip_step(approval.materialization_id)
    return _continuation(approval, is_resumed=False)


def _continuation(approval: Approval, *, is_resumed: bool) -> Continuation:
    return Continuation(
        step_id=approval.materialization_id,
        run_id=str(approval.run_id),
        is_in_process=approval.run.is_in_process,
        is_resumed=is_resumed,
    )


def _checked_value(approval: Approval, decision: str, value: Any) -> Any:
    """The value a ``modify`` stores: checked as JSON, against the form, then by the validator.

    Anything the validator raises that is not a ``FlowStoneError`` is the reviewer's bad value as
    far as the caller can tell, so it becomes a ``ValidationFailedError`` (a 400 in the API, a
    form error in the admin) with the original attached as ``__cause__``.
    """
    if decision != "modify":
        return None
    from flowstone.checkpoints import Review  # noqa: PLC0415  # keeps the model import light
    from flowstone.inputs import validate_json_value  # noqa: PLC0415
    from flowstone.partitions import decode_partition_key  # noqa: PLC0415

    value = validate_json_value(value, what="the modified value")
    spec = checkpoint_of(approval)
    if spec is not None and spec.form is not None:
        validate_form_value(spec.form, value)
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


def _chosen_option(approval: Approval, name: str) -> Option:
    """The checkpoint option called ``name``, or a ``ValidationFailedError`` naming the choices."""
    spec = checkpoint_of(approval)
    chosen = spec.option(name) if spec is not None and isinstance(name, str) else None
    if chosen is None:
        offered = ", ".join(o.name for o in spec.options) if spec is not None else ""
        raise ValidationFailedError(
            f"unknown option {str(name)[:40]!r} for approval {approval.pk}; "
            + (f"this checkpoint offers: {offered}" if offered else "this checkpoint has none"),
            asset=approval.asset,
            run_id=str(approval.run_id),
        )
    return chosen


def _option_decision(
    approval: Approval, chosen: Option, *, reason: str, value: Any
) -> tuple[Any, str]:
    """What choosing option ``chosen`` records besides its status: a decided value and a reason.

    ``continue`` approves (or, with a value, modifies: the value is checked as a modification
    is); ``fail`` rejects (the option's label is the reason unless one is given); ``skip``
    skips. Only ``continue`` takes a value.
    """
    if chosen.outcome != "continue" and value is not None:
        raise ValidationFailedError(
            f"option {chosen.name!r} ends the step ({chosen.outcome}) and takes no value"
        )
    if chosen.outcome == "continue":
        if value is None:
            return None, reason
        return _checked_value(approval, "modify", value), reason
    return None, reason or f"option {chosen.name!r}: {chosen.label}"[:MAX_REASON_LENGTH]


def _option_status(chosen: Option, value: Any) -> Approval.Status:
    """The status choosing ``chosen`` records: a ``continue`` with a value is a modification."""
    if chosen.outcome == "continue":
        return Approval.Status.APPROVED if value is None else Approval.Status.MODIFIED
    return Approval.Status.SKIPPED if chosen.outcome == "skip" else Approval.Status.REJECTED


def _refuse_early(approval: Approval, status: Approval.Status) -> None:
    """The refusals that need no value check: decided, stale, a modification under a quorum.

    They come before the form and the checkpoint's validator (user code) run, so a stale
    approval is a 409 and a quorum refusal is one whatever the value; ``_decide`` checks the
    approval again under its lock.
    """
    _refuse_unless_open(approval, stores_value=status in STORING)
    if status == Approval.Status.MODIFIED and approval.quorum > 1:
        raise ValidationFailedError(
            f"approval {approval.pk} needs {approval.quorum} approvals: approve or reject it "
            "(a modified value cannot be voted on)"
        )


def checked_reason(decision: str, reason: str | None) -> str:
    """The reason, stripped; refused (never cut) if too long, and required to reject.

    Every console calls this before anything is recorded, so each shows the same message.
    """
    reason = (reason or "").strip()
    if len(reason) > MAX_REASON_LENGTH:
        raise ValidationFailedError(
            f"the reason is {len(reason)} characters long; at most {MAX_REASON_LENGTH} are allowed"
        )
    if "\x00" in reason:
        raise ValidationFailedError("the reason may not contain NUL characters")
    if decision == "reject" and not reason:
        raise ValidationFailedError("a rejection needs a reason")
    return reason


def _checked_decision(decision: str, allowed: Sequence[str]) -> None:
    if decision not in allowed:
        raise ValidationFailedError(f"decision must be one of {sorted(allowed)}, got {decision!r}")


def decide_approval(
    approval_id: object,
    decision: str,
    *,
    actor: str,
    actor_type: str = Approval.ActorType.USER,
    reason: str = "",
    value: Any = None,
    option: str = "",
) -> Continuation | None:
    """Approve, modify, reject or pick an option of a pending approval; the first decision wins.

    ``reject`` needs a reason, ``modify`` a JSON value that the checkpoint's form and validator
    accept, ``option`` the name of one of the checkpoint's options (``_option_decision``).
    A stale approval may still be rejected (or skipped); storing its value is
    ``ApprovalStaleError``. Under a quorum an approval (``approve``, or a ``continue`` option
    without a value) is ``actor``'s vote: ``None`` while the quorum is incomplete, the
    continuation when this vote completes it. One eligible rejection (or skip, or failing
    option) decides at once; a modified value is refused (each reviewer would approve another).
    These cheap refusals (forbidden, decided, stale, quorum) come before the value is checked.
    """
    _checked_decision(decision, [*DECISIONS, OPTION])
    reason = checked_reason(decision, reason)
    approval = get_approval(approval_id)
    _require_decider(approval, actor)
    chosen = _chosen_option(approval, option) if decision == OPTION else None
    status = DECISIONS[decision] if chosen is None else _option_status(chosen, value)
    _refuse_early(approval, status)
    if chosen is None:
        decided_value = _checked_value(approval, decision, value)
    else:
        decided_value, reason = _option_decision(approval, chosen, reason=reason, value=value)
    return _decide(
        approval,
        status,
        actor=actor,
        actor_type=actor_type,
        reason=reason,
        decided_value=decided_value,
        chosen=chosen,
    )


def _decide(
    approval: Approval,
    status: Approval.Status,
    *,
    actor: str,
    actor_type: str,
    reason: str,
    decided_value: Any = None,
    chosen: Option | None = None,
) -> Continuation | None:
    """Decide one approval (or vote on it) in its own transaction; raise the refusal, if any.

    The approval's row is locked before its inputs are checked, and a new success of an input
    locks the same row to mark it stale: whichever comes second sees the other's outcome. Who
    may decide is checked under the lock (an escalation may have handed it over meanwhile).
    """
    stores_value = status in STORING
    with transaction.atomic():
        step_services.lock_run(approval.run_id)  # lock order: run, then approval, then step
        current = (
            Approval.objects.select_for_update(of=("self",))
            .prefetch_related("deciders")
            .get(pk=approval.pk)
        )
        _refuse_unless_open(current, stores_value=stores_value)
        _require_decider(current, actor)
        went_stale = stores_value and current.is_pending and _inputs_changed(current)
        if went_stale:
            _mark_stale(Approval.objects.filter(pk=current.pk))  # kept: the refusal commits it
        else:
            audit: dict[str, Any] = {
                "approval_id": approval.pk,
                "reason": reason,
                "was": current.status,
            }
            if chosen is not None:
                audit |= {"option": chosen.name, "outcome": chosen.outcome}
            if status == Approval.Status.APPROVED and current.quorum > 1:
                votes = _vote(current, actor, actor_type, reason)
                audit |= {"votes": votes, "quorum": current.quorum}
                if votes < current.quorum:
                    _audit(current, AUDIT_ACTIONS[status], actor, actor_type, audit)
                    return None
            decision_fields = {
                "status": status,
                "decided_value": decided_value,
                "decided_at": timezone.now(),
                "decided_by": actor[:NAME_LENGTH],
                "decided_by_type": actor_type,
                "reason": reason,
                "option": chosen.name if chosen is not None else "",
            }
            Approval.objects.filter(pk=current.pk).update(**decision_fields)
            _set(approval, decision_fields)
            _audit(approval, AUDIT_ACTIONS[status], actor, actor_type, audit)
            notifications.notify_approval("decided", approval)
            transaction.on_commit(
                lambda: approval_decided.send(sender=Approval, approval=approval, decision=status)
            )
            return _skip(approval) if status == Approval.Status.SKIPPED else _continue(approval)
    raise _stale_error(approval)


def _refuse_unless_open(current: Approval, *, stores_value: bool) -> None:
    """Raise unless ``current`` (locked) takes the decision: pending, or stale to end it."""
    if current.is_pending:
        return
    if current.is_stale and current.rereviewed_at is None:
        if not stores_value:
            return
        raise _stale_error(current)
    raise ApprovalDecidedError(
        f"approval {current.pk} is already {current.status}"
        + (f" by {current.decided_by}" if current.decided_by else "")
        + (f" (reviewed again by {current.rereviewed_by})" if current.rereviewed_at else ""),
        asset=current.asset,
        partition=current.partition_key,
        run_id=str(current.run_id),
    )


def _stale_error(approval: Approval) -> ApprovalStaleError:
    return ApprovalStaleError(
        f"approval {approval.pk} is stale: an input it reviewed was materialized again; "
        "review it again (the step computes from the new value) or reject it",
        asset=approval.asset,
        partition=approval.partition_key,
        run_id=str(approval.run_id),
    )


def _inputs_changed(approval: Approval) -> bool:
    """Whether an input partition succeeded again since the step read it (one query)."""
    if approval.inputs_read_at is None or not approval.consumed:
        return False
    newer = Materialization.objects.filter(
        asset=OuterRef("asset"),
        partition_key=OuterRef("partition_key"),
        status=StepStatus.SUCCESS,
        finished_at__gte=approval.inputs_read_at,
    ).exclude(pk=OuterRef("materialization_id"))
    return ApprovalInput.objects.filter(approval_id=approval.pk).filter(Exists(newer)).exists()


def _mark_stale(pending: QuerySet[Approval], *, by: Materialization | None = None) -> int:
    """Mark these pending approvals stale, each audited; return how many.

    The rows are locked first (``FOR UPDATE``), so a decision taking one at the same moment is
    either seen as made (the row is no longer pending) or waits and then sees it stale. They are
    locked in id order: two successes marking the same approvals never wait on each other in a
    circle.
    """
    rows = list(
        pending.filter(status=Approval.Status.PENDING)
        .order_by("pk")
        .select_for_update()
        .values_list("pk", "run_id", "asset", "partition_key")
    )
    if not rows:
        return 0
    Approval.objects.filter(pk__in=[row[0] for row in rows]).update(
        status=Approval.Status.STALE, stale_at=timezone.now()
    )
    cause = {} if by is None else {"asset": by.asset, "partition_key": by.partition_key}
    for approval_id, run_id, asset, partition_key in rows:
        record_audit(
            AuditEvent.Action.CHECKPOINT_STALE,
            actor_type=AuditEvent.ActorType.SYSTEM,
            run_id=run_id,
            asset=asset,
            partition_key=partition_key,
            details={
                "approval_id": approval_id,
                "rematerialized": cause,
                "materialization_id": None if by is None else by.pk,
            },
        )
    return len(rows)


def mark_readers_stale(
    sender: object,  # noqa: ARG001  # a signal receiver
    *,
    step: Materialization,
    **kwargs: Any,  # noqa: ARG001
) -> int:
    """A new success of ``step``'s partition: pending approvals that read another value go stale.

    Runs in the success's transaction (``assets.services.success_recorded``): one index lookup
    on ``ApprovalInput`` by (asset, partition), whatever the number of approvals, and none at all
    for an asset no checkpoint reads (most steps: the step path stays as lean as it was).
    """
    from flowstone.registry import get_registry  # noqa: PLC0415  # keeps the model import light

    if step.asset not in get_registry().checkpoint_inputs:
        return 0
    readers = ApprovalInput.objects.filter(
        asset=step.asset, partition_key=step.partition_key
    ).exclude(materialization_id=step.pk)
    return _mark_stale(Approval.objects.filter(pk__in=readers.values("approval_id")), by=step)


def rereview_approval(approval_id: object, *, actor: str, actor_type: str) -> Continuation:
    """Send a stale approval's step to compute again from the newest inputs and ask anew.

    The stale approval is kept (``rereviewed_at``/``rereviewed_by``, audited); its step returns
    to ``queued`` like a decided one, recomputes, and its checkpoint requests a fresh approval
    (or passes the value if its condition no longer holds). Only once per stale approval.
    """
    approval = get_approval(approval_id)
    _require_decider(approval, actor)
    with transaction.atomic():
        step_services.lock_run(approval.run_id)  # lock order: run, then approval, then step
        current = Approval.objects.select_for_update().get(pk=approval.pk)
        if not current.is_stale or current.rereviewed_at is not None:
            raise ApprovalDecidedError(
                f"approval {current.pk} is {current.status}"
                + (" and was already reviewed again" if current.rereviewed_at else "")
                + "; only a stale approval is reviewed again",
                asset=current.asset,
                partition=current.partition_key,
                run_id=str(current.run_id),
            )
        Approval.objects.filter(pk=current.pk).update(
            rereviewed_at=timezone.now(), rereviewed_by=actor[:NAME_LENGTH]
        )
        _audit(
            approval,
            AuditEvent.Action.CHECKPOINT_REREVIEWED,
            actor,
            actor_type,
            {"approval_id": approval.pk},
        )
        return _continue(approval)


@dataclass(frozen=True, kw_only=True, slots=True)
class BulkOutcome:
    """What a bulk decision did to one approval: its new status, or why it was refused."""

    approval_id: int
    status: str = ""
    refused: str = ""
    message: str = ""
    continuation: Continuation | None = None

    @property
    def is_vote(self) -> bool:
        """Whether this was a vote short of the approval's quorum: recorded, still pending."""
        return not self.refused and self.continuation is None


REFUSALS: Final[tuple[tuple[type[FlowStoneError], str], ...]] = (
    (ApprovalStaleError, "stale"),
    (ApprovalDecidedError, "already_decided"),
    (ApprovalForbiddenError, "forbidden"),
    (ApprovalNotFoundError, "not_found"),
    (FlowStoneError, "invalid"),
)


def _refusal(error: FlowStoneError) -> str:
    return next(name for cls, name in REFUSALS if isinstance(error, cls))


def pending_of(asset: str, partition_keys: Sequence[str] | None = None) -> list[int]:
    """Ids of the asset's pending approvals (of these partitions), oldest first.

    More than ``MAX_BULK`` is a ``ValidationFailedError``: narrow the filter.
    """
    pending = Approval.objects.filter(asset=asset, status=Approval.Status.PENDING)
    if partition_keys is not None:
        pending = pending.filter(partition_key__in=list(partition_keys))
    ids = list(pending.order_by("requested_at", "id").values_list("pk", flat=True)[: MAX_BULK + 1])
    if len(ids) > MAX_BULK:
        raise ValidationFailedError(
            f"more than {MAX_BULK} pending approvals of {asset!r} match; narrow the partitions"
        )
    return ids


def decide_many(
    approval_ids: Sequence[int],
    decision: str,
    *,
    actor: str,
    actor_type: str = Approval.ActorType.USER,
    reason: str = "",
) -> list[BulkOutcome]:
    """Approve or reject many approvals with one reason; one outcome per id, in order.

    Each approval is decided in its own transaction, audited on its own, and the first decision
    wins per approval (under a quorum an approve is the actor's vote: status ``pending``); a
    refusal (already decided, stale, forbidden, unknown) is reported and the others go on.
    Invalid input (the decision, the reason, too many ids) records nothing.
    """
    _checked_decision(decision, BULK_DECISIONS)
    reason = checked_reason(decision, reason)
    ids = list(dict.fromkeys(approval_ids))
    if len(ids) > MAX_BULK:
        raise ValidationFailedError(f"at most {MAX_BULK} approvals at once, got {len(ids)}")
    out_of_range = [pk for pk in ids if not 1 <= pk <= MAX_APPROVAL_ID]
    if out_of_range:
        raise ValidationFailedError(f"no approval has the id {str(out_of_range[0])[:40]}")
    found = Approval.objects.select_related("run").prefetch_related("deciders").in_bulk(ids)
    outcomes = []
    for approval_id in ids:
        try:
            approval = found.get(approval_id)
            if approval is None:
                raise ApprovalNotFoundError(f"unknown approval {approval_id}")
            continuation = _decide(
                approval, DECISIONS[decision], actor=actor, actor_type=actor_type, reason=reason
            )
        except FlowStoneError as exc:
            outcomes.append(
                BulkOutcome(approval_id=approval_id, refused=_refusal(exc), message=exc.message)
            )
        else:
            voted = continuation is None  # a vote short of its approval's quorum
            outcomes.append(
                BulkOutcome(
                    approval_id=approval_id,
                    status=Approval.Status.PENDING if voted else DECISIONS[decision],
                    message="vote recorded; the quorum is not complete yet" if voted else "",
                    continuation=continuation,
                )
            )
    return outcomes


def _require_decider(approval: Approval, actor: str) -> None:
    """Raise ``ApprovalForbiddenError`` unless ``actor`` may decide the approval."""
    refusal = decision_refusal(approval, actor)
    if refusal is not None:
        raise ApprovalForbiddenError(refusal, run_id=str(approval.run_id))


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
    spec = checkpoint_of(approval)
    policy = spec.on_timeout if spec is not None else "auto_reject"
    overdue = Approval.objects.filter(
        pk=approval.pk, status=Approval.Status.PENDING, expires_at=approval.expires_at
    )
    with transaction.atomic():
        step_services.lock_run(approval.run_id)  # lock order: run, then approval, then step
        if spec is not None and spec.timeout is not None:
            if policy == "escalate" and approval.escalations == 0:
                escalated = {
                    "assignee": str(spec.escalate_to or "")[:NAME_LENGTH],
                    "escalations": approval.escalations + 1,  # the row is as loaded: it matched
                    "expires_at": now + spec.timeout,
                    "quorum": 1,
                }
                if overdue.update(**escalated):
                    _set(approval, escalated)
                    _hand_over(approval, str(spec.escalate_to))
                    _audit_system(
                        approval, AuditEvent.Action.CHECKPOINT_ESCALATED, spec.escalate_to
                    )
                    notifications.notify_approval("escalated", approval)
                    transaction.on_commit(
                        lambda: approval_escalated.send(sender=Approval, approval=approval)
                    )
                return None
            if policy == "extend" and approval.extensions == 0 and spec.extend_by is not None:
                if overdue.update(
                    extensions=F("extensions") + 1, expires_at=F("expires_at") + spec.extend_by
                ):
                    _audit_system(approval, AuditEvent.Action.CHECKPOINT_EXTENDED, policy)
                return None
        status = Approval.Status.APPROVED if policy == "auto_approve" else Approval.Status.EXPIRED
        if status == Approval.Status.APPROVED and _inputs_changed(approval):
            _mark_stale(overdue)  # a timeout approves no numbers nobody saw either
            return None
        ended = {
            "status": status,
            "decided_at": now,
            "decided_by": "timeout",
            "decided_by_type": Approval.ActorType.SYSTEM,
            "reason": f"no decision before {approval.expires_at:%Y-%m-%d %H:%M:%S %Z} ({policy})",
        }
        if not overdue.update(**ended):
            return None
        _set(approval, ended)  # the run loaded with it stays: the notice and the resume use it
        _audit_system(approval, AUDIT_ACTIONS[status], policy)
        signal = approval_decided if status == Approval.Status.APPROVED else approval_expired
        notifications.notify_approval(
            "decided" if status == Approval.Status.APPROVED else "expired", approval
        )
        transaction.on_commit(
            lambda: signal.send(sender=Approval, approval=approval, decision=status)
        )
        return _continue(approval)


def _set(approval: Approval, fields: dict[str, Any]) -> None:
    """Give the loaded approval the values an ``UPDATE`` just wrote (no reload, no lost joins)."""
    for name, value in fields.items():
        setattr(approval, name, value)


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
    The rows are locked in id order first, as ``_mark_stale`` locks them: a cancel and a
    success marking the same approvals stale never wait on each other in a circle.
    Each canceled approval is audited with the actor who canceled the run.
    """
    undecided = Approval.objects.filter(
        Q(status__in=(Approval.Status.PENDING, Approval.Status.ESCALATED))
        | Q(status=Approval.Status.STALE, rereviewed_at__isnull=True),
        materialization_id__in=list(step_ids),
    )
    canceled = list(
        undecided.select_for_update().order_by("pk").values_list("pk", "asset", "partition_key")
    )
    Approval.objects.filter(pk__in=[row[0] for row in canceled]).update(
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
            decided_by=AUTOMATED,
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
