"""What a Celery worker does with a step message: validate, claim, execute, dispatch.

A message names one step (``{"run_id", "asset", "partition"}``) or a batch of steps of one run
and asset (``{"run_id", "asset", "partitions": [...]}``, ADR 0032). A batch's steps run one after
another, each through the path of a single step: its own claim, lease, attempt and outcome.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Final

from django.db import InterfaceError, OperationalError

from assets import services
from flowstone.definitions import ASSET_NAME_PATTERN
from flowstone.errors import FlowStoneError, PartitionKeyError, ValidationFailedError
from flowstone.execution.lease import Lease, drop_lease, hold_lease
from flowstone.execution.step import StepOutcome, execute_step
from flowstone.partitions import MAX_PARTITION_KEY_LENGTH, decode_partition_key
from flowstone.registry import get_registry
from flowstone.status import TERMINAL_STEP_STATUSES

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from assets.models import Materialization, RunConfig

logger = logging.getLogger(__name__)

PAYLOAD_FIELDS: Final = frozenset({"run_id", "asset", "partition"})
BATCH_FIELDS: Final = frozenset({"run_id", "asset", "partitions"})
DATABASE_ERRORS: Final = (OperationalError, InterfaceError)
STEP_TASK: Final = "flowstone.run_step"
BATCH_TASK: Final = "flowstone.run_steps"
MAX_RECORDED_PAYLOAD: Final = 2000


def _text(payload: Mapping[str, Any], name: str, limit: int) -> str:
    value = payload.get(name)
    if not isinstance(value, str):
        raise ValidationFailedError(
            f"payload field {name!r} must be a string, got {type(value).__name__}"
        )
    if len(value) > limit:
        raise ValidationFailedError(f"payload field {name!r} is longer than {limit} characters")
    return value


def validate_payload(
    args: Sequence[Any], payload: Mapping[str, Any]
) -> tuple[Materialization, RunConfig]:
    """Check every field of a step message; return the step it names and its run's config.

    Nothing in the payload is imported or resolved as code: the asset name is only looked up in
    the registry, and the run and step only in the database.
    """
    run_id, asset = _run_and_asset(args, payload, PAYLOAD_FIELDS)
    partition_key = _partition(payload.get("partition"), "partition", asset, run_id)
    step = services.find_step(run_id, asset, partition_key)
    if step is None:
        raise ValidationFailedError(
            f"run {run_id} has no step {asset}[{partition_key}]", asset=asset, run_id=str(run_id)
        )
    return step, step.run.config


def validate_batch(
    args: Sequence[Any], payload: Mapping[str, Any]
) -> tuple[list[Materialization], RunConfig]:
    """Check every field of a batch message; return its steps, in its order, and their config.

    The same checks as for one step, for each partition; a batch names 1 to ``MAX_BATCH_STEPS``
    distinct partitions, each a step of the run. One query loads them all.
    """
    run_id, asset = _run_and_asset(args, payload, BATCH_FIELDS)
    raw = payload.get("partitions")
    if not isinstance(raw, list) or not 0 < len(raw) <= services.MAX_BATCH_STEPS:
        raise ValidationFailedError(
            f"payload field 'partitions' must be a list of 1 to {services.MAX_BATCH_STEPS} "
            "partition keys"
        )
    keys = [_partition(key, "partitions", asset, run_id) for key in raw]
    if len(set(keys)) != len(keys):
        raise ValidationFailedError("payload field 'partitions' names a partition twice")
    found = services.find_steps(run_id, asset, keys)
    missing = [key for key in keys if key not in found]
    if missing:
        raise ValidationFailedError(
            f"run {run_id} has no step {asset}[{missing[0][:100]}] "
            f"({len(missing)} of {len(keys)} missing)",
            asset=asset,
            run_id=str(run_id),
        )
    steps = [found[key] for key in keys]
    return steps, steps[0].run.config


def _run_and_asset(
    args: Sequence[Any], payload: Mapping[str, Any], expected: frozenset[str]
) -> tuple[uuid.UUID, str]:
    """The run id and the (registered) asset of a message with exactly ``expected`` fields."""
    if args:
        raise ValidationFailedError("step messages take keyword arguments only")
    fields = set(payload)
    if fields != expected:
        raise ValidationFailedError(
            f"payload fields must be exactly {sorted(expected)}, "
            f"got {sorted(map(str, fields))[:10]}"
        )
    raw_run_id = _text(payload, "run_id", 64)
    asset = _text(payload, "asset", 128)
    try:
        run_id = uuid.UUID(raw_run_id)
    except ValueError as exc:
        raise ValidationFailedError(f"run_id {raw_run_id!r} is not a UUID") from exc
    if not ASSET_NAME_PATTERN.match(asset):
        raise ValidationFailedError(f"asset name {asset!r} is not a valid asset name")
    get_registry().get(asset)
    return run_id, asset


def _partition(value: object, name: str, asset: str, run_id: uuid.UUID) -> str:
    """``value`` if it is an encoded partition key (``name`` is the field it came from)."""
    partition_key = _text({name: value}, name, MAX_PARTITION_KEY_LENGTH)
    try:
        decode_partition_key(partition_key)
    except PartitionKeyError as exc:
        raise exc.with_context(asset=asset, run_id=str(run_id)) from None
    return partition_key


def printable_payload(args: Sequence[Any], payload: Mapping[str, Any]) -> str:
    """A bounded, printable copy of a message body for the rejection record."""
    try:
        text = json.dumps({"args": list(args), "kwargs": dict(payload)}, default=repr)
    except (TypeError, ValueError):
        text = repr((args, payload))
    return text[:MAX_RECORDED_PAYLOAD]


def handle_step_message(
    args: Sequence[Any], payload: Mapping[str, Any], *, owner: str, task_id: str = ""
) -> StepOutcome | None:
    """Run the step a message names, if it is valid, due and not already taken.

    Invalid messages are recorded as rejected and acknowledged; a duplicate delivery does nothing
    (the step is claimed by a conditional update), and a delivery before a retry's ``not_before``
    is sent again for that time. What the step's ending released is published by the engine.
    """
    try:
        step, config = validate_payload(args, payload)
    except FlowStoneError as exc:
        _reject(STEP_TASK, args, payload, task_id, exc)
        return None
    return _run_step(step, config, owner)


def handle_batch_message(
    args: Sequence[Any],
    payload: Mapping[str, Any],
    *,
    owner: str,
    task_id: str = "",
    start_within: float,
) -> list[StepOutcome]:
    """Run the steps a batch names one after another, each as if it had a message of its own.

    A step another worker holds or ended is skipped. No step is started ``start_within`` seconds
    after the batch began: the ones left go back to the outbox (``hand_back``), so the batch's
    time limit (the task's plus those seconds) leaves each step the whole limit of one step.
    An invalid batch is recorded as rejected, whole, like an invalid single message.
    """
    started = time.monotonic()
    try:
        steps, config = validate_batch(args, payload)
    except FlowStoneError as exc:
        _reject(BATCH_TASK, args, payload, task_id, exc)
        return []
    batch = services.Batch(
        owner=owner,
        tally=services.tally_for(steps[0].run, steps[0].asset),
        deadline=started + start_within,
    )
    try:
        return _run_batch(steps, config, task_id, batch)
    finally:
        if batch.tally is not None:
            _settle_tally(batch.tally)


def _run_batch(
    steps: Sequence[Materialization], config: RunConfig, task_id: str, batch: services.Batch
) -> list[StepOutcome]:
    """The steps of a validated batch in turn, while the batch may start steps.

    Each success claims the next step not ended in its own transaction while the batch may still
    start steps; such a step has started: its lease is renewed from its claim on and it runs even
    if the time to start steps ends meanwhile.
    """
    outcomes: list[StepOutcome] = []
    open_steps = [step for step in steps if step.status not in TERMINAL_STEP_STATUSES]
    # (ended before this delivery, e.g. a redelivered batch: no claim to try)
    held: Lease | None = None
    try:
        for index, step in enumerate(open_steps):
            claimed = batch.take_claimed(step.pk)
            if claimed is None and not batch.may_start():
                sent = services.hand_back([left.pk for left in open_steps[index:]])
                logger.info("batch %s: %d step(s) not started are sent again", task_id, sent)
                break
            following = open_steps[index + 1 : index + 2]
            batch.next_step = following[0].pk if following else None
            try:
                run_held, held = held, None
                outcome = _run_step(
                    step, config, batch.owner, batch, claimed=claimed, held=run_held
                )
                if batch.claimed is not None:  # the success claimed the next step: renew it now
                    held = hold_lease(batch.claimed.pk, batch.owner, batch.claimed.attempt)
                if batch.tally is not None:
                    batch.tally.flush(when_due=True)
            except DATABASE_ERRORS:
                raise  # the message goes back to the queue (assets.tasks); the rest run from there
            except Exception:
                # Celery acknowledges a failed task: the steps after this one are sent again
                # now, not when the sweeper's backstop finds them.
                services.hand_back([left.pk for left in open_steps[index + 1 :]])
                raise
            if outcome is not None:
                outcomes.append(outcome)
    finally:
        if held is not None:  # a claimed step this batch will not run: its lease brings it back
            drop_lease(held)
    return outcomes


def _settle_tally(tally: services.RunTally) -> None:
    """Settle what the batch counted; if the database fails that, the sweeper recounts the run."""
    try:
        tally.flush()
    except DATABASE_ERRORS as exc:
        logger.warning(
            "could not settle run %s's batch counts (%s); recounted later", tally.run_id, exc
        )


def _reject(
    task_name: str, args: Sequence[Any], payload: Mapping[str, Any], task_id: str, exc: Exception
) -> None:
    """Record an invalid message (it is then acknowledged: nothing runs)."""
    services.record_rejection(
        reason=str(exc),
        task_name=task_name,
        task_id=task_id,
        payload=printable_payload(args, payload),
    )
    logger.warning("rejected step message %s: %s", task_id, exc)


def _run_step(
    step: Materialization,
    config: RunConfig,
    owner: str,
    batch: services.Batch | None = None,
    *,
    claimed: Materialization | None = None,
    held: Lease | None = None,
) -> StepOutcome | None:
    """Claim ``step`` (unless the batch's previous success did) and execute it.

    ``None`` when it was not due or not there to take.
    """
    claimed = claimed or services.claim_step(step.pk, owner)
    if claimed is None:
        if services.reschedule_early(step.pk):
            logger.info("step %s is not due yet; its message is sent again for then", step.pk)
            return None
        logger.info(
            "step %s is %s; this delivery does nothing",
            step.pk,
            services.get_step(step.pk).status,
            extra={
                "run_id": str(step.run_id),
                "asset": step.asset,
                "partition": step.partition_key,
            },
        )
        return None
    return execute_step(get_registry(), claimed, config, owner=owner, batch=batch, held=held)
