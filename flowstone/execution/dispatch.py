"""Handing released steps to Celery: one JSON message per step, published after commit."""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

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
PUBLISH_CHUNK = 1000


def step_payload(run_id: str, asset: str, partition_key: str) -> dict[str, str]:
    """The whole task payload: stable identifiers only; the worker loads the rest."""
    return {"run_id": run_id, "asset": asset, "partition": partition_key}


def publish_steps(step_ids: Sequence[int]) -> int:
    """Publish a message for each still-queued step; return how many were published.

    Works through the ids a chunk at a time (one SELECT, the publishes and one UPDATE each), so
    a large release holds one chunk of rows at once, and publishes every message of the call on
    one producer (one broker connection from the app's pool) rather than acquiring one per message.
    """
    from assets.tasks import run_step  # noqa: PLC0415  # the Celery app loads on first publish

    if not step_ids:
        return 0
    registry = get_registry()
    latest_eta = timezone.now() + dt.timedelta(seconds=flowstone_settings.MAX_COUNTDOWN_SECONDS)
    count = 0
    with run_step.app.producer_or_acquire() as producer:
        for start in range(0, len(step_ids), PUBLISH_CHUNK):
            rows = Materialization.objects.filter(
                pk__in=list(step_ids[start : start + PUBLISH_CHUNK]), status=StepStatus.QUEUED
            ).values_list("pk", "run_id", "asset", "partition_key", "not_before")
            published: list[int] = []
            for pk, run_id, asset, partition_key, not_before in rows:
                if not_before is not None and not_before > latest_eta:
                    continue  # too far ahead for a broker countdown: the sweeper publishes it
                definition = registry.assets.get(asset)
                queue = (definition.spec.queue if definition else None) or DEFAULT_QUEUE
                timing: dict[str, Any] = {} if not_before is None else {"eta": not_before}
                run_step.apply_async(
                    kwargs=step_payload(str(run_id), asset, partition_key),
                    queue=queue,
                    producer=producer,
                    **timing,
                )
                published.append(pk)
            services.mark_dispatched(published)
            count += len(published)
    return count


def dispatch_after_commit(end: services.StepEnd) -> None:
    """Publish what a transition released once its transaction commits; then free limited slots."""
    ready = list(end.ready)
    freed = end.freed_asset
    if not freed:
        publish_after_commit(ready)
        return

    def publish() -> None:
        publish_steps([*ready, *services.release_for_asset(freed)])

    transaction.on_commit(publish)


def publish_after_commit(step_ids: Sequence[int]) -> None:
    """Publish queued steps once the current transaction commits (at once outside one)."""
    ids = list(step_ids)
    if ids:
        transaction.on_commit(lambda: publish_steps(ids))
