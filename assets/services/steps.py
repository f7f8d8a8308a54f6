"""The step state machine: release, claim, renew, complete, fail, retry and recover.

Every transition is one conditional UPDATE that reports whether it won. Transitions that end a
step lock the run's row first, so a run's counters and its dispatch decisions are serialized;
functions that release steps return their ids, and the caller dispatches them after commit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from assets.models import Materialization, Run, StepEdge
from assets.services.locks import lock_assets, lock_run
from flowstone.conf import flowstone_settings
from flowstone.errors import FlowStoneError
from flowstone.registry import get_registry
from flowstone.signals import send_after_commit
from flowstone.status import RunStatus, StepStatus, derive_run_status
from lineage.models import AuditEvent
from lineage.services import record_audit, record_lineage

if TYPE_CHECKING:
    import uuid
    from collections.abc import Collection, Iterable

    from django.db.models import Model

    from flowstone.io.base import StoredOutput

ACTIVE_STATUSES = (StepStatus.QUEUED, StepStatus.RUNNING)
RECOVERY_BATCH = 1000


@dataclass(frozen=True, kw_only=True, slots=True)
class StepEnd:
    """Whether a transition won, the steps it released, and a limited asset that freed a slot.

    Steps of ``freed_asset`` in other runs are released by ``release_for_asset`` after commit,
    in a transaction of its own: taking other runs' locks while holding this run's could deadlock.
    """

    won: bool
    ready: list[int] = field(default_factory=list)
    freed_asset: str | None = None


def transition_step(
    step_id: int, expected: Collection[StepStatus], new: StepStatus, **values: Any
) -> bool:
    """Move a step from one of ``expected`` to ``new``; return whether this call won."""
    updated = Materialization.objects.filter(pk=step_id, status__in=list(expected)).update(
        status=new, **values
    )
    return updated == 1


def release_ready_steps(run_id: uuid.UUID | str) -> list[int]:
    """Move steps whose upstreams all succeeded from ``pending`` to ``queued``.

    At most ``run.max_parallel`` steps of the run are queued or running at once, and at most an
    asset's ``concurrency_limit`` across all runs. Returns the released ids (to dispatch).
    """
    with transaction.atomic():
        return _release_locked(lock_run(run_id))


def _release_locked(run: Run) -> list[int]:
    """``release_ready_steps`` for a run whose row this transaction has locked."""
    if run.cancel_requested_at is not None:
        return []
    eligible = Materialization.objects.filter(
        run_id=run.pk, status=StepStatus.PENDING, remaining_upstreams=0
    ).order_by("id")
    if run.max_parallel is not None:
        active = Materialization.objects.filter(run_id=run.pk, status__in=ACTIVE_STATUSES).count()
        free = run.max_parallel - active
        if free <= 0:
            return []
        eligible = eligible[:free]
    candidates = list(eligible.values_list("pk", "asset"))
    # An in-process run executes one step at a time in its caller; limits govern workers.
    limits = {} if run.is_in_process else get_registry().concurrency_limits
    limited = {asset for _, asset in candidates if asset in limits}
    if limited:
        lock_assets(limited)
        active_by_asset = dict(
            Materialization.objects.filter(asset__in=limited, status__in=ACTIVE_STATUSES)
            .values_list("asset")
            .annotate(n=Count("id"))
            .values_list("asset", "n")
        )
        free_by_asset = {a: limits[a] - active_by_asset.get(a, 0) for a in limited}
        kept = []
        for pk, asset in candidates:
            if asset in free_by_asset:
                if free_by_asset[asset] <= 0:
                    continue
                free_by_asset[asset] -= 1
            kept.append((pk, asset))
        candidates = kept
    ids = [pk for pk, _ in candidates]
    if ids:
        Materialization.objects.filter(pk__in=ids, status=StepStatus.PENDING).update(
            status=StepStatus.QUEUED, queued_at=timezone.now()
        )
    return ids


def release_for_asset(asset: str) -> list[int]:
    """Release waiting steps of a concurrency-limited asset in every run (a slot was freed)."""
    runs = (
        Materialization.objects.filter(
            asset=asset,
            status=StepStatus.PENDING,
            remaining_upstreams=0,
            run__is_in_process=False,
        )
        .values_list("run_id", flat=True)
        .distinct()
    )
    released: list[int] = []
    for run_id in list(runs):
        released += release_ready_steps(run_id)
    return released


def claim_step(step_id: int, owner: str) -> Materialization | None:
    """Start a queued step that is due: ``queued -> running`` with a lease for ``owner``.

    Returns the claimed row (as it is now), or ``None`` if this call did not win. On PostgreSQL
    the conditional UPDATE returns the row itself (``RETURNING``), one statement per claim.
    """
    now = timezone.now()
    lease = dt.timedelta(seconds=flowstone_settings.STEP_LEASE_SECONDS)
    if connection.vendor == "postgresql":
        claimed = list(
            Materialization.objects.raw(
                f"UPDATE {_table(Materialization)} SET status = %s, attempt = attempt + 1, "  # noqa: S608  # table name from the model
                "started_at = %s, lease_owner = %s, lease_expires_at = %s, not_before = NULL "
                "WHERE id = %s AND status = %s AND (not_before IS NULL OR not_before <= %s) "
                "RETURNING *",
                [StepStatus.RUNNING, now, owner, now + lease, step_id, StepStatus.QUEUED, now],
            )
        )
        if not claimed:
            return None
        step = claimed[0]
    else:
        updated = (
            Materialization.objects.filter(pk=step_id, status=StepStatus.QUEUED)
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
            .update(
                status=StepStatus.RUNNING,
                attempt=F("attempt") + 1,
                started_at=now,
                lease_owner=owner,
                lease_expires_at=now + lease,
                not_before=None,
            )
        )
        if not updated:
            return None
        step = Materialization.objects.get(pk=step_id)
    send_after_commit("step_started", **_step_payload(step))
    return step


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)  # noqa: SLF001  # Django's documented model API


def _lock_run_counting_one_ended(run_id: uuid.UUID | str) -> Run:
    """Lock the run's row and count one more ended step on it; return the run as it is now.

    One ``UPDATE … RETURNING`` on PostgreSQL (it takes the same row lock as ``lock_run``); the
    caller rolls the transaction back if its own transition then loses. The run is finished by
    ``finish_run_if_done`` once its steps are all counted.
    """
    if connection.vendor == "postgresql":
        # GREATEST: a caller that has already lost (its step was ended by another) may find
        # every step counted; its transaction is rolled back, but the row must stay valid.
        return next(
            iter(
                Run.objects.raw(
                    f"UPDATE {_table(Run)} SET steps_remaining = GREATEST(steps_remaining - 1, 0), "  # noqa: S608  # table name from the model
                    "status = CASE WHEN steps_remaining > 1 THEN %s ELSE status END "
                    "WHERE id = %s RETURNING *",
                    [RunStatus.RUNNING, run_id],
                )
            )
        )
    run = lock_run(run_id)
    if run.steps_remaining > 0:
        _count_ended(run, 1, finish=False)
    return run


def _step_payload(step: Materialization, **extra: Any) -> dict[str, Any]:
    return {
        "run_id": str(step.run_id),
        "asset": step.asset,
        "partition": step.partition_key,
        "materialization_id": step.pk,
        "attempt": step.attempt,
        **extra,
    }


def renew_lease(step_id: int, owner: str) -> bool:
    """Extend the lease of a step this owner is running; ``False`` if it is no longer ours."""
    lease = dt.timedelta(seconds=flowstone_settings.STEP_LEASE_SECONDS)
    updated = Materialization.objects.filter(
        pk=step_id, status=StepStatus.RUNNING, lease_owner=owner
    ).update(lease_expires_at=timezone.now() + lease)
    return updated == 1


def finish_run_if_done(run_id: uuid.UUID | str) -> RunStatus | None:
    """If no step of the run is left to end, derive and store the run's final status."""
    run = Run.objects.get(pk=run_id)
    if run.steps_remaining > 0 or run.finished_at is not None:
        return None
    statuses = Materialization.objects.filter(run_id=run.pk).values_list("status", flat=True)
    status = derive_run_status(statuses.distinct())
    Run.objects.filter(pk=run.pk).update(status=status, finished_at=timezone.now())
    send_after_commit("run_finished", run_id=str(run.pk), status=str(status))
    return status


def _count_ended(run: Run, ended: int, *, finish: bool = True) -> None:
    """Count steps that ended, on a run row this transaction has locked; finish the run at 0."""
    run.steps_remaining -= ended
    if run.steps_remaining > 0:
        Run.objects.filter(pk=run.pk).update(
            steps_remaining=F("steps_remaining") - ended, status=RunStatus.RUNNING
        )
        return
    Run.objects.filter(pk=run.pk).update(steps_remaining=F("steps_remaining") - ended)
    if finish:
        finish_run_if_done(run.pk)


def _end(step: Materialization, run: Run, *, release: bool = True) -> StepEnd:
    """The outcome of a won terminal transition: release the run's next steps.

    ``release=False`` when no step of the run can have become ready (see ``complete_step``);
    a step of a limited asset always releases, since its slot may admit a waiting step.
    """
    freed = step.asset if step.asset in get_registry().concurrency_limits else None
    ready = _release_locked(run) if release or freed else []
    return StepEnd(won=True, ready=ready, freed_asset=freed)


def complete_step(
    step: Materialization, stored: StoredOutput, consumed: Iterable[Materialization], *, owner: str
) -> StepEnd:
    """Mark a running step successful, with lineage, audit and downstream release, atomically.

    A run without step edges (a backfill, a single step) has no counters to decrement; and
    unless a counter reached a step, the run caps its parallelism or the asset has a concurrency
    limit, the ending cannot make another step of the run ready, so the release query is skipped:
    a backfill step costs three statements here.
    """
    with transaction.atomic():
        run = _lock_run_counting_one_ended(step.run_id)
        won = Materialization.objects.filter(
            pk=step.pk, status=StepStatus.RUNNING, lease_owner=owner
        ).update(
            status=StepStatus.SUCCESS,
            finished_at=timezone.now(),
            metadata={**step.metadata, **stored.as_metadata()},
            error=None,
            lease_expires_at=None,
        )
        if not won:
            transaction.set_rollback(True)  # undo the count: this ending was someone else's
            return StepEnd(won=False)
        record_lineage(step, consumed)
        duration = (timezone.now() - step.started_at).total_seconds() if step.started_at else None
        send_after_commit("step_succeeded", **_step_payload(step, duration=duration))
        record_audit(
            AuditEvent.Action.ASSET_MATERIALIZED,
            run_id=step.run_id,
            asset=step.asset,
            partition_key=step.partition_key,
            details={"materialization_id": step.pk, "uri": stored.uri},
        )
        decremented = 0
        if run.has_step_edges:
            downstream = StepEdge.objects.filter(upstream_id=step.pk).values_list("downstream_id")
            decremented = Materialization.objects.filter(pk__in=downstream).update(
                remaining_upstreams=F("remaining_upstreams") - 1
            )
        if run.steps_remaining <= 0:
            finish_run_if_done(run.pk)
        return _end(step, run, release=decremented > 0 or run.max_parallel is not None)


def _fail_downstream(step: Materialization) -> int:
    """Mark every step that waits, directly or not, on ``step`` as ``upstream_failed``."""
    ended = 0
    frontier = [step.pk]
    error = {
        "type": "DependencyFailedError",
        "kind": "dependency_failed",
        "message": f"upstream step {step.asset}[{step.partition_key}] failed",
        "retryable": False,
        "asset": None,
        "partition": None,
        "run_id": str(step.run_id),
        "details": {"failed_step": step.pk},
        "cause": None,
    }
    while frontier:
        downstream = list(
            StepEdge.objects.filter(upstream_id__in=frontier).values_list(
                "downstream_id", flat=True
            )
        )
        failed = list(
            Materialization.objects.filter(
                pk__in=downstream, status__in=(StepStatus.PENDING, StepStatus.QUEUED)
            ).values_list("pk", flat=True)
        )
        ended += Materialization.objects.filter(
            pk__in=failed, status__in=(StepStatus.PENDING, StepStatus.QUEUED)
        ).update(status=StepStatus.UPSTREAM_FAILED, finished_at=timezone.now(), error=error)
        frontier = failed
    return ended


def fail_step(step: Materialization, error: FlowStoneError, *, owner: str | None) -> StepEnd:
    """Mark a running step failed with its structured error, once, and fail its downstream."""
    with transaction.atomic():
        run = lock_run(step.run_id)
        running = Materialization.objects.filter(pk=step.pk, status=StepStatus.RUNNING)
        if owner is not None:
            running = running.filter(lease_owner=owner)
        won = running.update(
            status=StepStatus.FAILED,
            finished_at=timezone.now(),
            error=error.to_dict(),
            lease_expires_at=None,
        )
        if not won:
            return StepEnd(won=False)
        send_after_commit("step_failed", **_step_payload(step, error=error.to_dict()))
        _count_ended(run, 1 + _fail_downstream(step))
        return _end(step, run)


def requeue_step(
    step: Materialization, error: FlowStoneError, *, owner: str, not_before: dt.datetime
) -> bool:
    """Return a running step to ``queued`` for another attempt no earlier than ``not_before``."""
    return (
        Materialization.objects.filter(
            pk=step.pk, status=StepStatus.RUNNING, lease_owner=owner
        ).update(
            status=StepStatus.QUEUED,
            error=error.to_dict(),
            not_before=not_before,
            queued_at=None,
            lease_owner="",
            lease_expires_at=None,
        )
        == 1
    )


def mark_dispatched(step_ids: Collection[int], *, at: dt.datetime | None = None) -> None:
    """Record when the messages of queued steps were handed to the broker."""
    Materialization.objects.filter(pk__in=list(step_ids), status=StepStatus.QUEUED).update(
        queued_at=at or timezone.now()
    )


def recover_stale_steps(*, now: dt.datetime | None = None) -> StepEnd:
    """Take back steps whose worker's lease expired, and re-offer queued steps that went quiet.

    A step recovered more than ``MAX_RECOVERIES`` times fails (a poison step). Returns the ids to
    dispatch again.
    """
    now = now or timezone.now()
    ready: list[int] = []
    freed: set[str] = set()
    expired = Materialization.objects.filter(
        status=StepStatus.RUNNING, lease_expires_at__lt=now
    ).values_list("pk", flat=True)
    for step_id in list(expired[:RECOVERY_BATCH]):
        end = _recover(step_id, now)
        ready += end.ready
        if end.freed_asset:
            freed.add(end.freed_asset)
    for asset in sorted(freed):
        ready += release_for_asset(asset)
    quiet = dt.timedelta(seconds=flowstone_settings.REQUEUE_AFTER_SECONDS)
    due = (
        Materialization.objects.filter(status=StepStatus.QUEUED, run__is_in_process=False)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .filter(Q(queued_at__isnull=True) | Q(queued_at__lt=now - quiet))
        .values_list("pk", flat=True)
    )
    ready = list(dict.fromkeys([*ready, *due[:RECOVERY_BATCH]]))
    return StepEnd(won=bool(ready), ready=ready)


def _recover(step_id: int, now: dt.datetime) -> StepEnd:
    """Requeue one step whose lease expired, or fail it (poison step, or an in-process run)."""
    step = Materialization.objects.select_related("run").get(pk=step_id)
    with transaction.atomic():
        run = lock_run(step.run_id)
        stale = Materialization.objects.filter(
            pk=step.pk, status=StepStatus.RUNNING, lease_expires_at__lt=now
        )
        if step.run.is_in_process or step.recoveries >= flowstone_settings.MAX_RECOVERIES:
            reason = (
                "the process that ran this step stopped renewing its lease"
                if step.run.is_in_process
                else f"step was taken back from {step.recoveries + 1} workers that stopped "
                "renewing their lease; giving up (a poison step?)"
            )
            error = FlowStoneError(
                reason,
                asset=step.asset,
                partition=step.partition_key,
                run_id=str(step.run_id),
            )
            won = stale.update(
                status=StepStatus.FAILED,
                finished_at=now,
                error=error.to_dict(),
                recoveries=F("recoveries") + 1,
            )
            if not won:
                return StepEnd(won=False)
            _count_ended(run, 1 + _fail_downstream(step))
            return _end(step, run)
        won = stale.update(
            status=StepStatus.QUEUED,
            recoveries=F("recoveries") + 1,
            lease_owner="",
            lease_expires_at=None,
            queued_at=None,
        )
        return StepEnd(won=bool(won), ready=[step.pk] if won else [])


def wait_for_approval(step: Materialization, *, owner: str) -> bool:
    """Park a running step: ``running -> waiting_approval``; its worker is free to go."""
    won = Materialization.objects.filter(
        pk=step.pk, status=StepStatus.RUNNING, lease_owner=owner
    ).update(status=StepStatus.WAITING_APPROVAL, lease_owner="", lease_expires_at=None)
    if won:
        Run.objects.filter(pk=step.run_id).update(status=RunStatus.WAITING_APPROVAL)
    return won == 1


def resume_step(step_id: int) -> bool:
    """A decision was made: ``waiting_approval -> queued``, ready for its continuation."""
    step = Materialization.objects.get(pk=step_id)
    won = Materialization.objects.filter(pk=step_id, status=StepStatus.WAITING_APPROVAL).update(
        status=StepStatus.QUEUED, queued_at=None, not_before=None
    )
    if won:
        Run.objects.filter(pk=step.run_id, finished_at__isnull=True).update(
            status=RunStatus.RUNNING
        )
    return won == 1
