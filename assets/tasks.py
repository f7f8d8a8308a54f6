"""Celery tasks: thin adapters over the execution layer and services."""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

from celery.exceptions import Reject
from django.db import InterfaceError, OperationalError

from assets import services
from flowstone.celery import app
from flowstone.conf import flowstone_settings
from flowstone.execution.worker import handle_batch_message, handle_step_message

if TYPE_CHECKING:
    from collections.abc import Iterator

    from celery import Task

logger = logging.getLogger(__name__)

DATABASE_DOWN_PAUSE_SECONDS: Final = 1.0
"""How long a worker waits before putting back a message it could not serve for the database."""


@app.task(name="flowstone.run_step", bind=True, acks_late=True, reject_on_worker_lost=True)
def run_step(self: Task[Any, None], *args: Any, **payload: Any) -> None:
    """Execute one step named by ``{"run_id", "asset", "partition"}``."""
    task_id = str(self.request.id or "")
    with _back_when_the_database_is_down(task_id):
        handle_step_message(args, payload, owner=_owner(self), task_id=task_id)


@app.task(name="flowstone.run_steps", bind=True, acks_late=True, reject_on_worker_lost=True)
def run_steps(self: Task[Any, None], *args: Any, **payload: Any) -> None:
    """Execute the steps of a batch, ``{"run_id", "asset", "partitions": [...]}``, in turn.

    Acknowledged after the last one: a worker lost mid-batch puts the message back, and its
    redelivery skips the steps already ended (their claims fail) and runs the rest.
    """
    task_id = str(self.request.id or "")
    with _back_when_the_database_is_down(task_id):
        handle_batch_message(
            args,
            payload,
            owner=_owner(self),
            task_id=task_id,
            start_within=float(flowstone_settings.STEP_BATCH_SECONDS),
        )


def _owner(task: Task[Any, None]) -> str:
    """The lease owner of the steps this task runs; it ends with the task id (time limits)."""
    return f"celery:{task.request.hostname}:{os.getpid()}:{task.request.id or ''}"


@contextmanager
def _back_when_the_database_is_down(task_id: str) -> Iterator[None]:
    """Put the message back on the queue when the database is gone (or timed a statement out).

    Before the claim this message is the only thing that carries the step, and acknowledging it
    would leave the step queued until REQUEUE_AFTER_SECONDS; so it goes back to the queue. After
    the claim a second delivery does nothing, and the lease brings the step back. The pause keeps
    an outage from spinning every worker on the same message.
    """
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        logger.warning("database unavailable; step message %s goes back: %s", task_id, exc)
        time.sleep(DATABASE_DOWN_PAUSE_SECONDS)
        raise Reject(f"database unavailable: {exc}", requeue=True) from exc


@app.task(name="flowstone.recover_stale_steps")
def recover_stale_steps() -> int:
    """Take back dead workers' steps, settle runs left uncounted, resend lost messages (beat)."""
    recovered = len(services.recover_stale_steps()) + services.settle_stranded_runs()
    return recovered + services.republish_quiet()


@app.task(name="flowstone.relay_outbox")
def relay_outbox() -> int:
    """Send steps whose messages were never sent (a crash after commit, a broker outage)."""
    return services.relay_outbox()
