"""Running a whole run in the calling process, step by step in DAG order."""

from __future__ import annotations

import logging
import random
import time
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from assets import services
from flowstone.errors import FlowStoneError
from flowstone.execution.step import StepOutcome, execute_step
from flowstone.partitions import decode_partition_key
from flowstone.results import RunResult, StepResult
from flowstone.status import FAILED_STEP_STATUSES, RunStatus, StepStatus

if TYPE_CHECKING:
    import uuid
    from collections.abc import Sequence

    from assets.models import Materialization, RunConfig
    from flowstone.execution.plan import PlannedStep
    from flowstone.registry import Registry

logger = logging.getLogger(__name__)


def _retry_delay(registry: Registry, asset: str, attempt: int) -> float:
    policy = registry.get(asset).spec.retry_policy
    delay = policy.delay_for(attempt)
    if policy.jitter:
        delay *= random.uniform(0.5, 1.0)  # noqa: S311  # jitter, not secrets
    return delay


def _run_one(registry: Registry, step: Materialization, config: RunConfig) -> StepOutcome | None:
    """Claim and execute one queued step until it ends; ``None`` if another process has it."""
    while True:
        if not services.claim_step(step.pk):
            return None
        step.refresh_from_db()
        outcome = execute_step(registry, step, config)
        if outcome.status != StepStatus.QUEUED:
            return outcome
        # A retryable failure: back off in this process, then try again.
        time.sleep(_retry_delay(registry, step.asset, step.attempt))


def run_in_process(
    registry: Registry, run_id: uuid.UUID, plan: Sequence[PlannedStep], *, include_values: bool
) -> RunResult:
    """Execute every step of a run in ``plan`` order and return the recorded result."""
    run = services.get_run(run_id)
    services.start_run(run)
    config = run.config
    rows = {(s.asset, s.partition_key): s for s in services.steps_of_run(run_id)}
    values: dict[tuple[str, str], Any] = {}
    for planned in plan:
        step = rows[planned.key]
        failed = [
            f"{i.asset}[{key}]"
            for i in planned.inputs
            for key in i.partition_keys
            if (i.asset, key) in rows and rows[(i.asset, key)].status in FAILED_STEP_STATUSES
        ]
        if failed:
            services.mark_upstream_failed(step, failed)
        elif services.transition_step(step.pk, (StepStatus.PENDING,), StepStatus.QUEUED):
            outcome = _run_one(registry, step, config)
            if include_values and outcome is not None and outcome.status == StepStatus.SUCCESS:
                values[planned.key] = outcome.value
        step.refresh_from_db()
    services.refresh_run_status(run_id)
    return load_run_result(run_id, values=values)


def load_run_result(
    run_id: uuid.UUID | str, *, values: dict[tuple[str, str], Any] | None = None
) -> RunResult:
    """Build the ``RunResult`` of a run from its recorded rows."""
    run = services.get_run(run_id)
    steps = tuple(
        StepResult(
            materialization_id=row.pk,
            asset=row.asset,
            partition=decode_partition_key(row.partition_key),
            partition_key=row.partition_key,
            status=StepStatus(row.status),
            attempt=row.attempt,
            error=FlowStoneError.from_dict(row.error)
            if row.error and row.status != StepStatus.SUCCESS
            else None,
            metadata=MappingProxyType(dict(row.metadata or {})),
        )
        for row in services.steps_of_run(run_id)
    )
    return RunResult(
        run_id=str(run.id),
        status=RunStatus(run.status),
        steps=steps,
        values=MappingProxyType(dict(values or {})),
    )
