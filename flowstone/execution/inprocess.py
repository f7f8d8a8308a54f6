"""Running a whole run in the calling process: the same state machine, dispatched locally."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from assets import services
from flowstone.errors import FlowStoneError
from flowstone.execution.step import StepOutcome, execute_step
from flowstone.partitions import decode_partition_key
from flowstone.results import RunResult, StepResult
from flowstone.status import RunStatus, StepStatus

if TYPE_CHECKING:
    from flowstone.registry import Registry


MIN_RETRY_WAIT: Final = 0.01

# Called after each step attempt with (outcome, steps ended, steps in the run).
Progress = Callable[[StepOutcome, int, int], None]


def process_owner(prefix: str) -> str:
    """A lease owner name unique to this process and call."""
    return f"{prefix}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def run_in_process(
    registry: Registry,
    run_id: uuid.UUID | str,
    ready_ids: list[int],
    *,
    include_values: bool,
    progress: Progress | None = None,
) -> RunResult:
    """Execute released steps of a run here, and what they release, until nothing is left.

    ``progress(outcome, steps_ended, steps_total)`` is called after each attempt.
    """
    owner = process_owner("inprocess")
    run = services.get_run(run_id)
    config = run.config
    ready: deque[int] = deque(ready_ids)
    values: dict[tuple[str, str], Any] = {}
    while ready:
        step_id = ready.popleft()
        while True:
            step = services.claim_step(step_id, owner)
            if step is None:
                # Not due yet (a retry's backoff, on the database's clock): wait it out here, in
                # the caller's process. Taken or ended elsewhere: nothing left to do with it.
                wait = services.seconds_until_due(step_id)
                if wait is None:
                    break
                time.sleep(max(wait, MIN_RETRY_WAIT))
                continue
            outcome = execute_step(registry, step, config, owner=owner)
            ready.extend(outcome.end.ready)
            if outcome.status == StepStatus.SUCCESS and include_values:
                values[(step.asset, step.partition_key)] = outcome.value
            if progress is not None:
                remaining = services.get_run(run_id).steps_remaining
                progress(outcome, run.steps_total - remaining, run.steps_total)
            if outcome.status != StepStatus.QUEUED:
                break
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
