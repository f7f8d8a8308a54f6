"""A step that runs past Celery's time limit fails as a ``StepTimeoutError`` (kind ``timeout``).

- **Hard limit** (``CELERY_TASK_TIME_LIMIT``, or a message's ``time_limit``): the pool kills the
  process running the step, so nothing in it can record anything, and the step used to wait for
  its lease to expire and be taken back until it counted as a poison step. The worker's main
  process sends ``task_failure`` with billiard's ``TimeLimitExceeded(limit)`` before the kill;
  ``end_timed_out_step`` (connected in ``flowstone.celery``) ends the step that task was running,
  through the engine and as the task's lease owner: retried while the asset's retry policy has
  attempts left (the error is retryable), else failed once.
- **Batches** (``flowstone.run_steps``, ADR 0032): a batch's limits are the task's plus
  ``STEP_BATCH_SECONDS``, the time in which its worker may start steps, so each step keeps the
  whole limit. The killed task's step (the one running under its lease) ends as above, and the
  batch's steps it never started go back to the outbox (the killed message is acknowledged).
- **Soft limit** (``task_soft_time_limit``, or a message's ``soft_time_limit``): Celery raises
  ``SoftTimeLimitExceeded`` inside the task; the step boundary records
  ``soft_time_limit_error(exc)`` instead of an ``ExecutionError``.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any, Final

from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.db import close_old_connections
from django.utils import timezone

from flowstone.errors import FlowStoneError, StepTimeoutError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from assets.models import Materialization

logger = logging.getLogger(__name__)

STEP_TASK: Final = "flowstone.run_step"
BATCH_TASK: Final = "flowstone.run_steps"
MAX_CAUSES: Final = 10


def _exceeded(which: str, limit: object) -> str:
    text = f"the step exceeded the task's {which}"
    return f"{text} of {limit:g} s" if isinstance(limit, int | float) else text


def soft_time_limit_error(exc: BaseException) -> StepTimeoutError | None:
    """The error of a step that Celery's soft time limit interrupted, else ``None``.

    ``exc`` may wrap the ``SoftTimeLimitExceeded`` (an ``ExecutionError`` from the asset call, an
    ``IOManagerError`` from a store): its causes are searched.
    """
    cause: BaseException | None = exc
    for _ in range(MAX_CAUSES):
        if cause is None or isinstance(cause, SoftTimeLimitExceeded):
            break
        cause = cause.__cause__
    if not isinstance(cause, SoftTimeLimitExceeded):
        return None
    error = StepTimeoutError(_exceeded("soft time limit", _soft_limit()))
    error.__cause__ = cause
    error.__traceback__ = cause.__traceback__
    return error


def _soft_limit() -> float | None:
    """The soft time limit of the task running here: the message's, else the task's."""
    from celery import current_task  # noqa: PLC0415  # a proxy; only meaningful in a worker

    if not current_task:  # a proxy: false outside a task
        return None
    limits = current_task.request.timelimit or (None, None)
    limit = limits[1] or current_task.soft_time_limit
    return float(limit) if isinstance(limit, int | float) else None


def end_timed_out_step(
    sender: Any = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    kwargs: Mapping[str, Any] | None = None,
    **extra: Any,  # noqa: ARG001
) -> None:
    """``task_failure`` receiver: end the step of a task killed by its hard time limit.

    Celery may send the signal twice for one timeout; the engine's conditional update (the step
    must still be running under this task's lease) makes the second one change nothing.
    """
    name = getattr(sender, "name", None)
    if not isinstance(exception, TimeLimitExceeded) or name not in {STEP_TASK, BATCH_TASK}:
        return
    close_old_connections()  # the main process's connection may be old
    steps = _steps_of(kwargs or {})
    step = _running_step(steps, str(task_id or ""))
    if step is not None:
        limit = exception.args[0] if exception.args else None
        error = StepTimeoutError(
            _exceeded("time limit", limit),
            asset=step.asset,
            partition=step.partition_key,
            run_id=str(step.run_id),
        )
        error.__cause__ = exception
        _end(step, error)
    if name == BATCH_TASK:
        _hand_back_unstarted(steps)


def _steps_of(kwargs: Mapping[str, Any]) -> list[Materialization]:
    """The steps a step or batch message names; none for a message that is not valid."""
    from assets import services  # noqa: PLC0415  # Django is set up in a running worker

    keys = kwargs.get("partitions", [kwargs.get("partition")])
    try:
        run_id = uuid.UUID(str(kwargs["run_id"]))
        if not isinstance(keys, list) or len(keys) > services.MAX_BATCH_STEPS:
            return []
        found = services.find_steps(run_id, str(kwargs["asset"]), [str(key) for key in keys])
    except (KeyError, ValueError, FlowStoneError):  # not a valid step message: it never ran
        return []
    return list(found.values())


def _running_step(steps: list[Materialization], task_id: str) -> Materialization | None:
    """The step task ``task_id`` was running, if it still runs under that task's lease."""
    from flowstone.status import StepStatus  # noqa: PLC0415

    if not task_id:
        return None
    for step in steps:
        if step.status == StepStatus.RUNNING and step.lease_owner.endswith(f":{task_id}"):
            return step
    return None


def _hand_back_unstarted(steps: list[Materialization]) -> None:
    """Send again the steps of a killed batch that are still queued (never started)."""
    from assets import services  # noqa: PLC0415  # Django is set up in a running worker
    from flowstone.status import StepStatus  # noqa: PLC0415

    queued = [step.pk for step in steps if step.status == StepStatus.QUEUED]
    if queued:
        logger.warning("%d step(s) of a batch killed by its time limit are sent again", len(queued))
        services.hand_back(queued)


def _end(step: Materialization, error: StepTimeoutError) -> None:
    """Retry ``step`` if its asset's retry policy allows another attempt, else fail it."""
    from assets import services  # noqa: PLC0415  # Django is set up in a running worker
    from flowstone.execution.step import retry_time  # noqa: PLC0415
    from flowstone.registry import get_registry  # noqa: PLC0415

    ids = {"asset": step.asset, "partition": step.partition_key, "run_id": str(step.run_id)}
    owner = step.lease_owner
    try:
        definition = get_registry().get(step.asset)
    except FlowStoneError:
        definition = None
    retries = definition.spec.retry_policy.max_retries if definition is not None else 0
    if definition is not None and error.retryable and retries - (step.attempt - 1) > 0:
        not_before = retry_time(definition, step.attempt)
        end = services.retry_step(step, error, owner=owner, delay=not_before - timezone.now())
        outcome = f"will be retried at {not_before}"
    else:
        end = services.fail_step(step, error, owner=owner)
        outcome = "failed"
    if end.won:
        logger.error("step %s: %s", outcome, error, extra=ids)
