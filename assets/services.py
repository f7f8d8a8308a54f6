"""The only code that creates or changes runs and materializations.

Every status change is one conditional UPDATE (``WHERE status IN expected``) that reports whether
it won, so two processes can never both move the same step.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from assets.models import DynamicPartitionKey, Materialization, Run, RunConfig
from flowstone.errors import FlowStoneError, RunNotFoundError
from flowstone.status import RunKind, RunStatus, StepStatus, derive_run_status
from lineage.models import AuditEvent
from lineage.services import record_audit, record_lineage

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping, Sequence

    from flowstone.io.base import StoredOutput


@dataclass(frozen=True, kw_only=True, slots=True)
class StepRequest:
    """A step to create in a new run."""

    asset: str
    partition_key: str
    code_version: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunRequest:
    """Everything needed to create a run and its durable config."""

    kind: RunKind
    selection: Sequence[str]
    steps: Sequence[StepRequest]
    options: Mapping[str, Any] = field(default_factory=dict)
    io_overrides: Mapping[str, Any] = field(default_factory=dict)
    resource_overrides: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, Any] = field(default_factory=dict)
    requested_by: str = ""
    actor_type: str = AuditEvent.ActorType.SYSTEM


def create_run(request: RunRequest) -> Run:
    """Create the run, its config and all its step rows in one transaction."""
    with transaction.atomic():
        run = Run.objects.create(
            kind=request.kind, selection=list(request.selection), requested_by=request.requested_by
        )
        RunConfig.objects.create(
            run=run,
            options=dict(request.options),
            io_overrides=dict(request.io_overrides),
            resource_overrides=dict(request.resource_overrides),
            tags=dict(request.tags),
            requested_by=request.requested_by,
        )
        Materialization.objects.bulk_create(
            [
                Materialization(
                    run=run,
                    asset=step.asset,
                    partition_key=step.partition_key,
                    code_version=step.code_version,
                )
                for step in request.steps
            ],
            batch_size=1000,
        )
        record_audit(
            AuditEvent.Action.RUN_REQUESTED,
            actor_type=request.actor_type,
            actor=request.requested_by,
            run_id=run.id,
            details={
                "kind": str(request.kind),
                "selection": list(request.selection),
                "steps": len(request.steps),
                "options": dict(request.options),
                "tags": dict(request.tags),
            },
        )
    return run


def get_run(run_id: uuid.UUID | str) -> Run:
    """Return the run, or raise ``RunNotFoundError`` for an unknown or malformed id."""
    try:
        return Run.objects.select_related("config").get(pk=uuid.UUID(str(run_id)))
    except (ValueError, Run.DoesNotExist) as exc:
        raise RunNotFoundError(f"unknown run id {str(run_id)[:64]!r}") from exc


def upsert_materialization(
    *, run_id: uuid.UUID | str, asset: str, partition_key: str, **values: Any
) -> Materialization:
    """Insert or update the row of one step (``INSERT ... ON CONFLICT DO UPDATE``)."""
    row = Materialization(run_id=run_id, asset=asset, partition_key=partition_key, **values)
    Materialization.objects.bulk_create(
        [row],
        update_conflicts=True,
        unique_fields=("asset", "partition_key", "run"),
        update_fields=sorted(values) or ["status"],
    )
    return Materialization.objects.get(run_id=run_id, asset=asset, partition_key=partition_key)


def transition_step(
    step_id: int, expected: Collection[StepStatus], new: StepStatus, **values: Any
) -> bool:
    """Move a step from one of ``expected`` to ``new``; return whether this call won."""
    updated = Materialization.objects.filter(pk=step_id, status__in=list(expected)).update(
        status=new, **values
    )
    return updated == 1


def claim_step(step_id: int) -> bool:
    """Start a queued step: ``queued -> running``, counting the attempt."""
    return transition_step(
        step_id,
        (StepStatus.QUEUED,),
        StepStatus.RUNNING,
        attempt=F("attempt") + 1,
        started_at=timezone.now(),
    )


def complete_step(
    step: Materialization, stored: StoredOutput, consumed: Iterable[Materialization]
) -> bool:
    """Mark a running step successful, with its lineage and audit rows, in one transaction."""
    with transaction.atomic():
        metadata = {**step.metadata, **stored.as_metadata()}
        won = transition_step(
            step.pk,
            (StepStatus.RUNNING,),
            StepStatus.SUCCESS,
            finished_at=timezone.now(),
            metadata=metadata,
            error=None,
        )
        if not won:
            return False
        record_lineage(step, consumed)
        record_audit(
            AuditEvent.Action.ASSET_MATERIALIZED,
            run_id=step.run_id,
            asset=step.asset,
            partition_key=step.partition_key,
            details={"materialization_id": step.pk, "uri": stored.uri},
        )
    return True


def fail_step(step: Materialization, error: FlowStoneError) -> bool:
    """Mark a running step failed and record its structured error, once."""
    return transition_step(
        step.pk,
        (StepStatus.RUNNING,),
        StepStatus.FAILED,
        finished_at=timezone.now(),
        error=error.to_dict(),
    )


def requeue_step(step: Materialization, error: FlowStoneError) -> bool:
    """Return a running step to the queue after a retryable error, keeping the last error."""
    return transition_step(step.pk, (StepStatus.RUNNING,), StepStatus.QUEUED, error=error.to_dict())


def mark_upstream_failed(step: Materialization, failed_upstreams: Sequence[str]) -> bool:
    """A step whose upstream failed can never run: ``pending|queued -> upstream_failed``."""
    return transition_step(
        step.pk,
        (StepStatus.PENDING, StepStatus.QUEUED),
        StepStatus.UPSTREAM_FAILED,
        finished_at=timezone.now(),
        error={
            "type": "DependencyFailedError",
            "kind": "dependency_failed",
            "message": "upstream step(s) failed: " + ", ".join(failed_upstreams),
            "retryable": False,
            "asset": step.asset,
            "partition": step.partition_key,
            "run_id": str(step.run_id),
            "details": {"upstreams": list(failed_upstreams)},
            "cause": None,
        },
    )


def start_run(run: Run) -> bool:
    """Mark a pending run as running."""
    updated = Run.objects.filter(pk=run.pk, status=RunStatus.PENDING).update(
        status=RunStatus.RUNNING, started_at=timezone.now()
    )
    return updated == 1


def refresh_run_status(run_id: uuid.UUID | str) -> RunStatus:
    """Derive the run's status from its steps and store it (with the finish time if terminal)."""
    statuses = Materialization.objects.filter(run_id=run_id).values_list("status", flat=True)
    status = derive_run_status(statuses.distinct())
    finished = status in (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELED)
    Run.objects.filter(pk=run_id).update(
        status=status, finished_at=timezone.now() if finished else None
    )
    return status


def latest_successful(asset: str, partition_key: str) -> Materialization | None:
    """The latest successful materialization: newest completion time, then highest id."""
    return (
        Materialization.objects.filter(
            asset=asset, partition_key=partition_key, status=StepStatus.SUCCESS
        )
        .order_by("-finished_at", "-id")
        .first()
    )


def steps_of_run(run_id: uuid.UUID | str) -> list[Materialization]:
    """All steps of a run, oldest first."""
    return list(Materialization.objects.filter(run_id=run_id).order_by("id"))


def steps_by_key(
    run_id: uuid.UUID | str, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Materialization]:
    """The steps of a run for the given ``(asset, partition_key)`` pairs."""
    wanted = list(keys)
    if not wanted:
        return {}
    condition = Q()
    for asset, partition_key in wanted:
        condition |= Q(asset=asset, partition_key=partition_key)
    rows = Materialization.objects.filter(condition, run_id=run_id)
    return {(row.asset, row.partition_key): row for row in rows}


class DatabaseDynamicKeyStore:
    """Keys of ``DynamicPartitions`` definitions, stored in ``DynamicPartitionKey`` rows."""

    def get_keys(self, name: str) -> list[str]:
        """Return the keys added to ``name``, oldest first."""
        return list(
            DynamicPartitionKey.objects.filter(partitions_name=name).values_list("key", flat=True)
        )

    def add_keys(self, name: str, keys: Sequence[str]) -> None:
        """Add keys to ``name``; keys already present are left alone."""
        DynamicPartitionKey.objects.bulk_create(
            [DynamicPartitionKey(partitions_name=name, key=key) for key in keys],
            ignore_conflicts=True,
        )
