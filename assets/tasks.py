"""Celery tasks: thin adapters over the execution layer and services."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from assets import services
from flowstone.celery import app
from flowstone.execution.worker import handle_step_message

if TYPE_CHECKING:
    from celery import Task


@app.task(name="flowstone.run_step", bind=True, acks_late=True, reject_on_worker_lost=True)
def run_step(self: Task[Any, None], *args: Any, **payload: Any) -> None:
    """Execute one step named by ``{"run_id", "asset", "partition"}``."""
    task_id = str(self.request.id or "")
    owner = f"celery:{self.request.hostname}:{os.getpid()}:{task_id}"
    handle_step_message(args, payload, owner=owner, task_id=task_id)


@app.task(name="flowstone.recover_stale_steps")
def recover_stale_steps() -> int:
    """Take back steps of dead workers; send again messages the broker lost; run by beat."""
    return len(services.recover_stale_steps()) + services.republish_quiet()


@app.task(name="flowstone.relay_outbox")
def relay_outbox() -> int:
    """Send steps whose messages were never sent (a crash after commit, a broker outage)."""
    return services.relay_outbox()
