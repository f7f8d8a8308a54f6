"""Celery tasks that beat's periodic tasks call: thin adapters over ``schedules.services``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from assets import services as run_services
from flowstone.celery import app
from flowstone.definitions import ASSET_NAME_PATTERN
from flowstone.errors import ValidationFailedError
from schedules import services

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from celery import Task

logger = logging.getLogger(__name__)

MAX_RECORDED_PAYLOAD: Final = 2000


def _definition_name(args: Sequence[Any], payload: Mapping[str, Any], field: str) -> str:
    """Check that the payload is exactly ``{field: name}`` with a well-formed name."""
    if args or set(payload) != {field}:
        raise ValidationFailedError(
            f"the payload must be exactly {{{field!r}: name}}, got "
            f"{sorted(map(str, payload))[:10]} and {len(args)} positional argument(s)"
        )
    name = payload[field]
    if not isinstance(name, str) or not ASSET_NAME_PATTERN.match(name):
        raise ValidationFailedError(f"payload field {field!r} is not a valid name")
    return name


def _reject(task: Task[Any, Any], args: Sequence[Any], payload: Any, exc: Exception) -> None:
    run_services.record_rejection(
        reason=str(exc),
        task_name=str(task.name),
        task_id=str(task.request.id or ""),
        content_type="application/json",
        payload=repr({"args": list(args), "kwargs": payload})[:MAX_RECORDED_PAYLOAD],
    )


@app.task(name=services.TICK_SCHEDULE_TASK, bind=True)
def tick_schedule(self: Task[Any, str], *args: Any, **payload: Any) -> str:
    """Evaluate the current tick of the schedule named by ``{"schedule": name}``.

    A schedule with ``catch_up`` first replays the ticks it missed; the result is the current
    tick's status.
    """
    try:
        name = _definition_name(args, payload, "schedule")
        outcome = services.tick_schedule(name)
    except ValidationFailedError as exc:
        _reject(self, args, payload, exc)
        return "rejected"
    return outcome.status if outcome.is_new else "duplicate"


@app.task(name=services.POLL_SENSOR_TASK, bind=True)
def poll_sensor(self: Task[Any, int], *args: Any, **payload: Any) -> int:
    """Poll the sensor named by ``{"sensor": name}``; return how many runs it started."""
    try:
        name = _definition_name(args, payload, "sensor")
        outcome = services.poll_sensor(name)
    except ValidationFailedError as exc:
        _reject(self, args, payload, exc)
        return 0
    return sum(1 for tick in outcome.ticks if tick.is_new and tick.run_id is not None)
