"""What a Celery worker does with one step message: validate, claim, execute, dispatch."""

from __future__ import annotations

import json
import logging
import uuid
from typing import TYPE_CHECKING, Any, Final

from assets import services
from flowstone.definitions import ASSET_NAME_PATTERN
from flowstone.errors import FlowStoneError, PartitionKeyError, ValidationFailedError
from flowstone.execution.step import StepOutcome, execute_step
from flowstone.partitions import MAX_PARTITION_KEY_LENGTH, decode_partition_key
from flowstone.registry import get_registry

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from assets.models import Materialization, RunConfig

logger = logging.getLogger(__name__)

PAYLOAD_FIELDS: Final = frozenset({"run_id", "asset", "partition"})
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
    if args:
        raise ValidationFailedError("step messages take keyword arguments only")
    fields = set(payload)
    if fields != PAYLOAD_FIELDS:
        raise ValidationFailedError(
            f"payload fields must be exactly {sorted(PAYLOAD_FIELDS)}, "
            f"got {sorted(map(str, fields))[:10]}"
        )
    raw_run_id = _text(payload, "run_id", 64)
    asset = _text(payload, "asset", 128)
    partition_key = _text(payload, "partition", MAX_PARTITION_KEY_LENGTH)
    try:
        run_id = uuid.UUID(raw_run_id)
    except ValueError as exc:
        raise ValidationFailedError(f"run_id {raw_run_id!r} is not a UUID") from exc
    if not ASSET_NAME_PATTERN.match(asset):
        raise ValidationFailedError(f"asset name {asset!r} is not a valid asset name")
    get_registry().get(asset)
    try:
        decode_partition_key(partition_key)
    except PartitionKeyError as exc:
        raise exc.with_context(asset=asset, run_id=str(run_id)) from None
    step = services.find_step(run_id, asset, partition_key)
    if step is None:
        raise ValidationFailedError(
            f"run {run_id} has no step {asset}[{partition_key}]", asset=asset, run_id=str(run_id)
        )
    return step, step.run.config


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
        services.record_rejection(
            reason=str(exc),
            task_name="flowstone.run_step",
            task_id=task_id,
            payload=printable_payload(args, payload),
        )
        logger.warning("rejected step message %s: %s", task_id, exc)
        return None
    claimed = services.claim_step(step.pk, owner)
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
    return execute_step(get_registry(), claimed, config, owner=owner)
