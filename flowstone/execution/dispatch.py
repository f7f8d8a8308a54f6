"""Handing released steps to Celery: one JSON message per step, published after commit."""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from assets import services
from assets.models import Materialization
from flowstone.conf import flowstone_settings
from flowstone.registry import get_registry
from flowstone.status import StepStatus

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)

DEFAULT_QUEUE = "flowstone"


def step_payload(run_id: str, asset: str, partition_key: str) -> dict[str, str]:
    """The whole task payload: stable identifiers only; the worker loads the rest."""
    return {"run_id": run_id, "asset": asset, "partition": partition_key}


def publish_steps(step_ids: Sequence[int]) -> int:
    """Publish a message for each still-queued step; return how many were published."""
    from assets.tasks import run_step  # noqa: PLC0415  # the Celery app loads on first publish

    if not step_ids:
        return 0
    registry = get_registry()
    rows = Materialization.objects.filter(
        pk__in=list(step_ids), status=StepStatus.QUEUED
    ).values_list("pk", "run_id", "asset", "partition_key", "not_before")
    published: list[int] = []
    latest_eta = timezone.now() + dt.timedelta(seconds=flowstone_settings.MAX_COUNTDOWN_SECONDS)
    for pk, run_id, asset, partition_key, not_before in rows:
        if not_before is not None and not_before > latest_eta:
            continue  # too far ahead for a broker countdown: the sweeper publishes it when due
        definition = registry.assets.get(asset)
        queue = (definition.spec.queue if definition else None) or DEFAULT_QUEUE
        payload = step_payload(str(run_id), asset, partition_key)
        if not_before is None:
            run_step.apply_async(kwargs=payload, queue=queue)
        else:
            run_step.apply_async(kwargs=payload, queue=queue, eta=not_before)
        published.append(pk)
    services.mark_dispatched(published)
    return len(published)


def dispatch_after_commit(end: services.StepEnd) -> None:
    """Publish what a transition released once its transaction commits; then free limited slots."""
    ready = list(end.ready)
    freed = end.freed_asset

    def publish() -> None:
        more = services.release_for_asset(freed) if freed else []
        publish_steps([*ready, *more])

    if ready or freed:
        transaction.on_commit(publish)
