"""Executing one claimed step: load its inputs, call the asset, store the output, record it.

This is the same in every execution mode; only how released steps are dispatched differs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from django.db import InterfaceError, OperationalError
from django.utils import timezone

from approvals import services as approval_services
from approvals.models import Approval
from assets import services
from assets.models import Materialization
from flowstone.checkpoints import Approve, Modify, Reject, Review
from flowstone.context import AssetContext
from flowstone.errors import (
    CheckpointRejectedError,
    DependencyFailedError,
    DependencyNotReadyError,
    ExecutionError,
    FlowStoneError,
    IOManagerError,
    LeaseLostError,
    ValidationFailedError,
)
from flowstone.execution.lease import Lease, lease_heartbeat
from flowstone.execution.plan import UpstreamInput, plan_inputs, validate_partition
from flowstone.io.base import DiscardsVersions, IOTarget, StoredOutput
from flowstone.partitions import PartitionValue, decode_partition_key
from flowstone.resources import open_resources
from flowstone.status import TERMINAL_STEP_STATUSES, StepStatus
from flowstone.step_log import StepLog
from flowstone.time_limits import soft_time_limit_error

if TYPE_CHECKING:
    import threading
    from collections.abc import Iterator, Mapping

    from assets.models import RunConfig
    from flowstone.definitions import AssetDefinition
    from flowstone.registry import Registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class StepOutcome:
    """How a step attempt ended here, and what it released for dispatch."""

    status: StepStatus
    error: FlowStoneError | None = None
    value: Any = None
    end: services.StepEnd = field(default_factory=lambda: services.StepEnd(won=False))
    not_before: dt.datetime | None = None


def io_target(
    definition: AssetDefinition,
    partition_key: str,
    config: RunConfig,
    *,
    version: str = "",
    fence: services.AttemptFence | None = None,
) -> IOTarget:
    """The IO target of an asset partition version, with the run's IO overrides applied."""
    overrides = (config.io_overrides or {}).get(definition.name) or {}
    options = {**definition.spec.io_options, **overrides}
    return IOTarget(
        asset=definition.name,
        partition_key=partition_key,
        options=MappingProxyType(options),
        version=version,
        fence=fence,
    )


def recorded_target(
    definition: AssetDefinition, source: Materialization, config: RunConfig
) -> IOTarget:
    """Where ``source``, a success of ``definition``, stored its value.

    The version it recorded, with the IO overrides of ``config`` (the producing run's config).
    """
    version = services.recorded_version(source)
    return io_target(definition, source.partition_key, config, version=version)


def output_target(
    definition: AssetDefinition, step: Materialization, config: RunConfig, *, owner: str
) -> IOTarget:
    """Where this attempt of ``step`` stores its value: its own version, under its lease."""
    fence = services.AttemptFence(step_id=step.pk, attempt=step.attempt, owner=owner)
    return io_target(
        definition,
        step.partition_key,
        config,
        version=services.attempt_version(step),
        fence=fence,
    )


def _consumed_materialization(
    upstream: str,
    partition_key: str,
    in_run: Materialization | None,
    reused: Materialization | None = None,
) -> Materialization:
    """The upstream materialization a step reads: its run's own step, else a reused success.

    A reused success is one of the runs a re-execution reads first; anything else reads the
    latest success.

    The caller adds the step's asset, partition and run to any error raised here.
    """
    if in_run is not None:
        if in_run.status == StepStatus.SUCCESS:
            return in_run
        if in_run.status in TERMINAL_STEP_STATUSES:  # ended without a value
            raise DependencyFailedError(
                f"upstream {upstream}[{partition_key}] ended {in_run.status}"
            )
        raise DependencyNotReadyError(
            f"upstream {upstream}[{partition_key}] is still {in_run.status}"
        )
    if reused is not None:
        return reused
    latest = services.latest_successful(upstream, partition_key)
    if latest is None:
        raise DependencyNotReadyError(
            f"upstream {upstream}[{partition_key}] has no successful materialization"
        )
    return latest


def _reused(
    registry: Registry, config: RunConfig, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], Materialization]:
    """A re-execution's reused successes for ``keys`` (none for any other run).

    Only where the value is still there: a manager that keeps one value per partition
    (PostgreSQL) has only the latest, so those upstreams are read at their latest success.
    """
    if not config.reused_runs or not keys:
        return {}
    kept = {
        asset
        for asset in {asset for asset, _ in keys}
        if isinstance(registry.io_manager_for(registry.get(asset)), DiscardsVersions)
    }
    return services.reused_successes(config.reused_runs, [k for k in keys if k[0] in kept])


def _load_inputs(
    registry: Registry,
    step: Materialization,
    definition: AssetDefinition,
    inputs: tuple[UpstreamInput, ...],
    config: RunConfig,
    *,
    newest: bool = False,
) -> tuple[dict[str, Any], list[Materialization]]:
    """Find the materialization behind every upstream partition and load the values used.

    ``newest``: read every upstream's latest success, not the run's own steps: a re-review of a
    stale approval computes from the value that made it stale.
    """
    keys = [(i.asset, key) for i in inputs for key in i.partition_keys]
    in_run = {} if newest else services.steps_by_key(step.run_id, keys)
    reused = {} if newest else _reused(registry, config, [k for k in keys if k not in in_run])
    kwargs: dict[str, Any] = {}
    consumed: list[Materialization] = []
    for upstream_input in inputs:
        upstream = registry.get(upstream_input.asset)
        values: dict[PartitionValue | None, Any] = {}
        for partition, key in zip(
            upstream_input.partitions, upstream_input.partition_keys, strict=True
        ):
            source = _consumed_materialization(
                upstream.name,
                key,
                in_run.get((upstream.name, key)),
                reused.get((upstream.name, key)),
            )
            consumed.append(source)
            if upstream.name in definition.value_parameters:
                manager = registry.io_manager_for(upstream)
                producer = config if source.run_id == step.run_id else source.run.config
                with io_guard(upstream.spec.io_manager, "load"):
                    values[partition] = manager.load(recorded_target(upstream, source, producer))
        if upstream.name in definition.value_parameters:
            if upstream_input.is_fan_in:
                kwargs[upstream.name] = values
            else:
                (kwargs[upstream.name],) = values.values()
    return kwargs, consumed


def _call_asset(definition: AssetDefinition, kwargs: Mapping[str, Any]) -> Any:
    """Run user code; any exception it raises becomes a ``FlowStoneError``."""
    try:
        return definition.fn(**kwargs)
    except FlowStoneError:
        raise
    except Exception as exc:  # the one user-code boundary
        raise ExecutionError(
            f"asset {definition.name!r} raised {type(exc).__name__}: {exc}"
        ) from exc


def retry_time(definition: AssetDefinition, attempt: int) -> dt.datetime:
    """When the next attempt may start: exponential backoff with jitter from now."""
    policy = definition.spec.retry_policy
    delay = policy.delay_for(attempt)
    if policy.jitter:
        delay *= random.uniform(0.5, 1.0)  # noqa: S311  # jitter, not secrets
    return timezone.now() + dt.timedelta(seconds=delay)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Computed:
    """An asset function's result and what it read."""

    value: Any
    consumed: list[Materialization]
    upstream: Mapping[str, Any]
    partition: PartitionValue | None


def _compute(
    registry: Registry,
    definition: AssetDefinition,
    step: Materialization,
    config: RunConfig,
    kept_log: StepLog,
    *,
    newest: bool = False,
) -> _Computed:
    """Load inputs (the newest ones: see ``_load_inputs``) and call the asset function."""
    partition = validate_partition(definition, decode_partition_key(step.partition_key), None)
    inputs = plan_inputs(registry, definition, partition, None)
    kwargs, consumed = _load_inputs(registry, step, definition, inputs, config, newest=newest)
    upstream = MappingProxyType(dict(kwargs))
    overrides = config.resource_overrides or {}
    with open_resources(definition.spec.resources, registry.resources, overrides) as resources:
        if definition.wants_context:
            kwargs["context"] = AssetContext(
                asset=step.asset,
                partition=partition,
                partition_key=step.partition_key,
                run_id=str(step.run_id),
                attempt=step.attempt,
                resources=resources,
                config=MappingProxyType(dict(config.options or {})),
                kept_log=kept_log,
            )
        value = _call_asset(definition, kwargs)
    return _Computed(value=value, consumed=consumed, upstream=upstream, partition=partition)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Attempt:
    """The attempt executing a step: who owns it, and whether the heartbeat saw its lease lost."""

    owner: str
    lost: threading.Event
    log: StepLog
    batch: services.Batch | None = None
    """The batch this step runs in (its tally, its next step to claim), or ``None``."""


def _store(
    registry: Registry,
    definition: AssetDefinition,
    step: Materialization,
    config: RunConfig,
    value: Any,
    *,
    attempt: _Attempt,
) -> StoredOutput:
    """Store this attempt's value at its own version (or under its lease); refuse if it lost."""
    if attempt.lost.is_set():
        raise LeaseLostError(f"attempt {step.attempt} of step {step.pk} lost its lease")
    manager = registry.io_manager_for(definition)
    target = output_target(definition, step, config, owner=attempt.owner)
    with io_guard(definition.spec.io_manager, "store"):
        return manager.store(target, value)


def _discard(
    registry: Registry,
    definition: AssetDefinition,
    step: Materialization,
    config: RunConfig,
    *,
    owner: str,
) -> None:
    """Remove what a stale attempt stored at its own version; it is never read anyway."""
    manager = registry.io_manager_for(definition)
    if not isinstance(manager, DiscardsVersions):
        return
    try:
        with io_guard(definition.spec.io_manager, "discard"):
            manager.discard(output_target(definition, step, config, owner=owner))
    except FlowStoneError as exc:
        logger.warning("could not discard the value of a stale attempt: %s", exc)


@contextmanager
def io_guard(manager: str, operation: str) -> Iterator[None]:
    """An IO manager's foreign exception becomes an ``IOManagerError`` (not retryable)."""
    try:
        yield
    except FlowStoneError:
        raise
    except Exception as exc:  # an IO manager is plug-in code: anything it raises fails the step
        raise IOManagerError(
            f"IO manager {manager!r} could not {operation} the value: {type(exc).__name__}: {exc}"
        ) from exc


def as_step_error(exc: Exception) -> FlowStoneError:
    """The error a step records for ``exc``: itself, or an ``ExecutionError`` caused by it.

    Celery's soft time limit, however wrapped, becomes a ``StepTimeoutError`` naming the limit.
    """
    timeout = soft_time_limit_error(exc)
    if timeout is not None:
        return timeout
    if isinstance(exc, FlowStoneError):
        return exc
    error = ExecutionError(f"the step raised {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    error.__traceback__ = exc.__traceback__
    return error


def _user_call(definition: AssetDefinition, what: str, function: Any, *args: Any) -> Any:
    """Call a checkpoint function of the user's; its exceptions become ``ExecutionError``."""
    try:
        return function(*args)
    except FlowStoneError:
        raise
    except Exception as exc:  # the user-code boundary, for checkpoint functions
        raise ExecutionError(
            f"the {what} of the checkpoint on {definition.name!r} raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _gate(
    definition: AssetDefinition,
    step: Materialization,
    computed: _Computed,
    *,
    owner: str,
    log: StepLog | None = None,
) -> tuple[Any, bool]:
    """Pass a value through the asset's checkpoint: ``(value to store, whether it must wait)``."""
    spec = definition.checkpoint
    if spec is None:
        return computed.value, False
    review = Review(
        asset=step.asset,
        partition=computed.partition,
        partition_key=step.partition_key,
        run_id=str(step.run_id),
        value=computed.value,
        upstream=computed.upstream,
    )
    if not _user_call(definition, "condition", spec.needs_review, review):
        return computed.value, False
    message = str(_user_call(definition, "message", spec.message_for, review))
    _require_json(computed.value, definition)
    if spec.decide is None:
        deciders = _user_call(definition, "assignees", spec.deciders_for, review)
        approval = approval_services.request_approval(
            step,
            owner=owner,
            message=message,
            value=computed.value,
            consumed=computed.consumed,
            timeout=spec.timeout,
            log=log,
            deciders=deciders,
            quorum=spec.quorum,
        )
        if approval is None:
            logger.warning("step %s was no longer ours; no approval requested", step.pk)
        return computed.value, True
    decision = _user_call(definition, "decide function", spec.decide, review)
    if isinstance(decision, Reject):
        _record_decision(
            step,
            owner=owner,
            message=message,
            value=computed.value,
            decided_value=None,
            status="rejected",
            reason=decision.reason,
        )
        raise CheckpointRejectedError(f"rejected automatically: {decision.reason}")
    if isinstance(decision, Modify):
        value = _user_call(definition, "validator", spec.modified_value, review, decision.value)
        _record_decision(
            step,
            owner=owner,
            message=message,
            value=computed.value,
            decided_value=value,
            status="modified",
            reason="",
        )
        return value, False
    if isinstance(decision, Approve):
        _record_decision(
            step,
            owner=owner,
            message=message,
            value=computed.value,
            decided_value=None,
            status="approved",
            reason="",
        )
        return computed.value, False
    raise ExecutionError(
        f"the decide function of the checkpoint on {definition.name!r} returned {decision!r}; "
        "return Approve(), Modify(value) or Reject(reason)"
    )


def _record_decision(step: Materialization, **decision: Any) -> None:
    """Record an automated decision; an attempt that lost its step stops here."""
    if approval_services.record_automated_decision(step, **decision) is None:
        raise LeaseLostError(f"attempt {step.attempt} of step {step.pk} lost its lease")


def _require_json(value: Any, definition: AssetDefinition) -> None:
    """A value waiting for review is kept in the database, so it must be JSON."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationFailedError(
            f"the value of checkpointed asset {definition.name!r} must be JSON to wait for review: "
            f"{exc}"
        ) from exc


def _resume(
    registry: Registry,
    definition: AssetDefinition,
    step: Materialization,
    config: RunConfig,
    approval: Approval,
    *,
    attempt: _Attempt,
) -> tuple[Any, list[Materialization], StoredOutput]:
    """Finish a step whose approval was decided: store the (modified) value, or fail it."""
    spec = definition.checkpoint
    review = Review(
        asset=step.asset,
        partition=decode_partition_key(step.partition_key),
        partition_key=step.partition_key,
        run_id=str(step.run_id),
        value=approval.proposed_value,
    )
    if approval.status in (Approval.Status.APPROVED, Approval.Status.MODIFIED):
        value = approval.final_value
        if spec is not None and spec.on_approve is not None:
            _user_call(definition, "approve handler", spec.on_approve, review, value)
        consumed = list(Materialization.objects.filter(pk__in=approval.consumed))
        return value, consumed, _store(registry, definition, step, config, value, attempt=attempt)
    reason = approval.reason or approval.status
    if spec is not None and spec.on_reject is not None:
        _user_call(definition, "reject handler", spec.on_reject, review, reason)
    who = approval.decided_by or "nobody"
    raise CheckpointRejectedError(f"checkpoint {approval.status} by {who}: {reason}")


def execute_step(
    registry: Registry,
    step: Materialization,
    config: RunConfig,
    *,
    owner: str,
    batch: services.Batch | None = None,
    held: Lease | None = None,
) -> StepOutcome:
    """Run a step that ``owner`` has claimed (status ``running``) and record the outcome.

    This is the step's one boundary: whatever raises while it executes (asset code, input
    loading, IO managers, resources, lineage and audit recording) ends the step here, with a
    typed error that keeps the exception's type, message and traceback. A retryable error
    returns the step to ``queued`` with a ``not_before`` time while attempts remain; any other
    error marks it ``failed`` once. A checkpoint that needs a human parks the step in
    ``waiting_approval``; the decision brings it back here. Only the database failing the
    engine itself (a lost connection, a lock or transaction timeout) leaves the step to lease
    recovery.
    """
    ids = {"asset": step.asset, "partition": step.partition_key, "run_id": str(step.run_id)}
    definition: AssetDefinition | None = None
    kept_log = StepLog()
    try:
        with lease_heartbeat(step.pk, owner, step.attempt, held=held) as lost:
            # Inside the block: a lease held from the claim is dropped whatever fails here.
            definition = registry.get(step.asset)
            attempt = _Attempt(owner=owner, lost=lost, log=kept_log, batch=batch)
            outcome = _execute(registry, definition, step, config, attempt)
        if outcome is not None:
            return outcome
    except LeaseLostError as exc:
        # Another attempt owns the step now: this one records nothing and stores nothing.
        logger.warning("step attempt lost its lease: %s", exc, extra=ids)
        return StepOutcome(status=StepStatus.RUNNING, error=exc)
    except (OperationalError, InterfaceError):
        # The database failed the engine (gone, or a lock or transaction timeout): the step did
        # not fail. Nothing is recorded here; the lease brings the step back to a worker.
        raise
    except Exception as exc:  # noqa: BLE001  # the step boundary: every failure is recorded
        error = as_step_error(exc).with_context(**ids)
        return _record_failure(definition, step, error, owner, kept_log)
    logger.warning("step was no longer ours when it ended; nothing recorded", extra=ids)
    return StepOutcome(status=StepStatus.SUCCESS)


def _execute(
    registry: Registry,
    definition: AssetDefinition,
    step: Materialization,
    config: RunConfig,
    attempt: _Attempt,
) -> StepOutcome | None:
    """Compute (or resume), store and record a step; ``None`` if it was no longer ours."""
    ids = {"asset": step.asset, "partition": step.partition_key, "run_id": str(step.run_id)}
    approval = (
        approval_services.approval_for_step(step.pk) if definition.checkpoint is not None else None
    )
    # A reviewer's decision resumes the parked step; an automated one is made again by each
    # attempt, from the value it computes, and a stale one sent back for review computes anew.
    if approval is not None and approval.is_decided and not approval.is_automated:
        value, consumed, stored = _resume(
            registry, definition, step, config, approval, attempt=attempt
        )
    else:
        is_rereview = approval is not None and approval.is_stale
        computed = _compute(registry, definition, step, config, attempt.log, newest=is_rereview)
        value, must_wait = _gate(definition, step, computed, owner=attempt.owner, log=attempt.log)
        if must_wait:
            logger.info("step waits for approval", extra=ids)
            return StepOutcome(status=StepStatus.WAITING_APPROVAL, value=value)
        consumed = computed.consumed
        stored = _store(registry, definition, step, config, value, attempt=attempt)
    end = services.complete_step(
        step, stored, consumed, owner=attempt.owner, log=attempt.log, batch=attempt.batch
    )
    if not end.won:
        _discard(registry, definition, step, config, owner=attempt.owner)
        return None
    return StepOutcome(status=StepStatus.SUCCESS, value=value, end=end)


def _record_failure(
    definition: AssetDefinition | None,
    step: Materialization,
    error: FlowStoneError,
    owner: str,
    kept_log: StepLog,
) -> StepOutcome:
    """Retry the step if its error is retryable and attempts remain, else fail it once."""
    ids = {"asset": step.asset, "partition": step.partition_key, "run_id": str(step.run_id)}
    max_retries = definition.spec.retry_policy.max_retries if definition is not None else 0
    if definition is not None and error.retryable and max_retries - (step.attempt - 1) > 0:
        not_before = retry_time(definition, step.attempt)
        delay = not_before - timezone.now()
        end = services.retry_step(step, error, owner=owner, delay=delay, log=kept_log)
        logger.warning("step will be retried at %s: %s", not_before, error, extra=ids)
        return StepOutcome(status=StepStatus.QUEUED, error=error, not_before=not_before, end=end)
    end = services.fail_step(step, error, owner=owner, log=kept_log)
    logger.error("step failed: %s", error, extra=ids)  # recorded on the step
    return StepOutcome(status=StepStatus.FAILED, error=error, end=end)
