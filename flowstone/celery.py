"""The Celery app, configured from Django settings (``CELERY_*``); JSON payloads only.

Start workers with ``celery -A flowstone worker`` and the sweeper with ``celery -A flowstone beat``.
Messages the worker refuses before any task runs (content types other than JSON, unknown task
names, malformed envelopes) are recorded as ``RejectedMessage`` rows, like invalid payloads; no
message, however malformed, stops a worker (``flowstone.poison``, ``CELERY_WORKER_CONSUMER``). A
step killed by its task's hard time limit fails as a timeout (``flowstone.time_limits``).
"""

from __future__ import annotations

import os
from typing import Any, Final

from celery import Celery
from celery.signals import (
    task_failure,
    task_postrun,
    task_prerun,
    task_rejected,
    task_unknown,
    worker_init,
)
from django.db import close_old_connections

from flowstone.time_limits import end_timed_out_step
from flowstone.worker_heartbeat import WorkerHeartbeatStep

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flowstone.settings")

app = Celery("flowstone")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["assets", "approvals", "schedules"])
# Each worker records that it is alive; /health/ reads the records (flowstone.worker_heartbeat).
app.steps["worker"].add(WorkerHeartbeatStep)

MAX_RECORDED_BODY: Final = 2000


@worker_init.connect(dispatch_uid="flowstone.celery.validate_definitions")
def validate_definitions(**kwargs: Any) -> None:  # noqa: ARG001
    """Refuse to start a worker whose asset definitions are invalid."""
    from flowstone.registry import get_registry  # noqa: PLC0415  # Django is set up by now

    get_registry()


@task_prerun.connect(dispatch_uid="flowstone.celery.close_old_connections_before")
@task_postrun.connect(dispatch_uid="flowstone.celery.close_old_connections_after")
def close_stale_connections(sender: Any = None, **kwargs: Any) -> None:  # noqa: ARG001
    """Drop connections that broke or outlived ``CONN_MAX_AGE``, as Django does per request.

    With ``CELERY_DB_REUSE_MAX`` set, Celery's fixup keeps connections across tasks; this is what
    keeps a terminated backend or a restarted server from failing the tasks that follow
    (``CONN_HEALTH_CHECKS`` then tests a reused connection before its first query). Like the
    fixup, it leaves tasks applied in the caller's process (``Task.apply``) alone: their
    connection belongs to the caller, who may be inside a transaction.
    """
    if not getattr(getattr(sender, "request", None), "is_eager", False):
        close_old_connections()


def _record(message: Any, reason: str, task_name: str = "") -> None:
    from assets import services  # noqa: PLC0415  # only in a running worker

    headers = getattr(message, "headers", None) or {}
    body = getattr(message, "body", b"")
    services.record_rejection(
        reason=reason,
        task_name=task_name or str(headers.get("task", "")),
        task_id=str(headers.get("id", "")),
        content_type=str(getattr(message, "content_type", "") or ""),
        payload=repr(body)[:MAX_RECORDED_BODY],
    )


@task_rejected.connect(dispatch_uid="flowstone.celery.record_rejected")
def record_rejected(message: Any = None, exc: BaseException | None = None, **kwargs: Any) -> None:  # noqa: ARG001
    """Record a message the worker could not accept (e.g. pickle content)."""
    content_type = getattr(message, "content_type", "")
    why = exc or "not a task message"
    _record(message, f"[validation_error] refused message ({content_type}): {why}")


@task_unknown.connect(dispatch_uid="flowstone.celery.record_unknown")
def record_unknown(
    message: Any = None,
    exc: BaseException | None = None,  # noqa: ARG001
    name: str = "",
    **kwargs: Any,  # noqa: ARG001
) -> None:
    """Record a message naming a task this worker does not have."""
    _record(message, f"[validation_error] unknown task {name[:200]!r}", task_name=name[:255])


task_failure.connect(end_timed_out_step, dispatch_uid="flowstone.celery.end_timed_out_step")
