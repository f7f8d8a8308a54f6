"""Signal receivers that keep beat's periodic tasks in step with the definitions in code."""

from __future__ import annotations

import logging
from typing import Any

from flowstone.errors import DefinitionError

logger = logging.getLogger(__name__)


def _sync(when: str) -> None:
    from schedules.services import sync_periodic_tasks  # noqa: PLC0415  # loads beat's models

    try:
        report = sync_periodic_tasks()
    except DefinitionError as exc:
        # manage.py check and the workers report invalid definitions; migrate must still finish.
        logger.warning("schedules not synced %s: invalid definitions: %s", when, exc.message)
        return
    logger.info(
        "schedules synced %s: %d created, %d updated, %d deleted",
        when,
        len(report.created),
        len(report.updated),
        len(report.deleted),
    )


def sync_after_migrate(*, using: str = "default", **kwargs: Any) -> None:  # noqa: ARG001
    """Sync after ``migrate`` (and ``flush``), once the tables exist."""
    if using != "default":
        return
    _sync("after migrate")


def sync_on_beat_start(**kwargs: Any) -> None:  # noqa: ARG001
    """Sync when Celery beat starts, so it schedules what the code defines now."""
    _sync("on beat start")
