"""Celery tasks of approvals: on-timeout policies (beat) and the notification outbox."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from approvals import notifications, services
from assets import services as run_services
from flowstone.celery import app
from flowstone.execution.resume import continue_after_decision

if TYPE_CHECKING:
    from celery import Task

MAX_RECORDED_PAYLOAD: Final = 2000


@app.task(name="flowstone.expire_approvals")
def expire_approvals() -> int:
    """Escalate, extend, approve or expire overdue approvals, each exactly once."""
    continuations = services.expire_overdue()
    for continuation in continuations:
        continue_after_decision(continuation)
    return len(continuations)


@app.task(name=notifications.DELIVER_TASK, bind=True)
def deliver_notifications(self: Task[Any, int], *args: Any, **payload: Any) -> int:
    """Deliver the notifications ``{"ids": [...]}`` a transaction recorded (after its commit).

    Any other payload is recorded as a rejected message and delivers nothing; beat's retry
    still delivers the rows it meant.
    """
    ids = payload.get("ids")
    if (
        args
        or set(payload) != {"ids"}
        or not isinstance(ids, list)
        or not all(isinstance(pk, int) and not isinstance(pk, bool) for pk in ids)
    ):
        run_services.record_rejection(
            reason="the payload must be exactly {'ids': [notification ids]}",
            task_name=str(self.name),
            task_id=str(self.request.id or ""),
            content_type="application/json",
            payload=repr({"args": list(args), "kwargs": payload})[:MAX_RECORDED_PAYLOAD],
        )
        return 0
    return notifications.deliver(ids[: notifications.DUE_BATCH])


@app.task(name="flowstone.retry_notifications")
def retry_notifications() -> int:
    """Try again the pending notifications whose next attempt is due (beat)."""
    return notifications.deliver_due()
