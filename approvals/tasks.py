"""Celery beat task that applies checkpoints' on-timeout policies."""

from __future__ import annotations

from approvals import services
from flowstone.celery import app
from flowstone.execution.resume import continue_after_decision


@app.task(name="flowstone.expire_approvals")
def expire_approvals() -> int:
    """Escalate, extend, approve or expire overdue approvals, each exactly once."""
    continuations = services.expire_overdue()
    for continuation in continuations:
        continue_after_decision(continuation)
    return len(continuations)
