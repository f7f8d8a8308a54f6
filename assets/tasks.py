"""Celery tasks: thin adapters over the execution layer and services."""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any, Final

from celery.exceptions import Reject
from django.db import InterfaceError, OperationalError

from assets import services
from flowstone.celery import app
from flowstone.execution.worker import handle_step_message

if TYPE_CHECKING:
    from celery import Task

logger = logging.getLogger(__name__)

DATABASE_DOWN_PAUSE_SECONDS: Final = 1.0
"""How long a worker waits before putting back a message it could not serve for the database."""


@app.task(name="flowstone.run_step", bind=True, acks_late=True, reject_on_worker_lost=True)
def run_step(self: Task[Any, None], *args: Any, **payload: Any) -> None:
    """Execute one step named by ``{"run_id", "asset", "partition"}``."""
    task_id = str(self.request.id or "")
    owner = f"celery:{self.request.hostname}:{os.getpid()}:{task_id}"
    try:
        handle_step_message(args, payload, owner=owner, task_id=task_id)
    except (OperationalError, InterfaceError) as exc:
        # The database is gone (or timed a statement out). Before the claim this message is the
        # only thing that carries the step, and acknowledging it would leave the step queued
        # until REQUEUE_AFTER_SECONDS; so it goes back to the queue. After the claim a second
        # delivery does nothing, and the lease brings the step back. The pause keeps an outage
        # from spinning every worker on the same message.
        logger.warning("database unavailable; step message %s goes back: %s", task_id, exc)
        time.sleep(DATABASE_DOWN_PAUSE_SECONDS)
        raise Reject(f"database unavailable: {exc}", requeue=True) from exc


@app.task(name="flowstone.recover_stale_steps")
def recover_stale_steps() -> int:
    """Take back steps of dead workers; send again messages the broker lost; run by beat."""
    return len(services.recover_stale_steps()) + services.republish_quiet()


@app.task(name="flowstone.relay_outbox")
def relay_outbox() -> int:
    """Send steps whose messages were never sent (a crash after commit, a broker outage)."""
    return services.relay_outbox()
