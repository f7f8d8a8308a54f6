"""Celery tasks of approvals: on-timeout policies (beat) and the notification outbox."""

from __future__ import annotations

from typing import Any

from approvals import notifications, services
from flowstone.celery import app
from flowstone.execution.resume import continue_after_decision


@app.task(name="flowstone.expire_approvals")
def expire_approvals() -> int:
    """Escalate, extend, approve or expire overdue approvals, each exactly once."""
    continuations = services.expire_overdue()
    for continuation in continuations:
        continue_after_decision(continuation)
    return len(continuations)


@app.task(name=notifications.DELIVER_TASK)
def deliver_notifications(*, ids: Any) -> int:
    """Deliver the notifications a transaction recorded (sent after its commit)."""
    if not isinstance(ids, list) or not all(
        isinstance(pk, int) and not isinstance(pk, bool) for pk in ids
    ):
        return 0
    return notifications.deliver(ids[: notifications.DUE_BATCH])


@app.task(name="flowstone.retry_notifications")
def retry_notifications() -> int:
    """Try again the pending notifications whose next attempt is due (beat)."""
    return notifications.deliver_due()
