"""Worker liveness: each Celery worker upserts its heartbeat row; ``/health/`` reads them.

A row in the database, rather than Celery's broadcast ``ping`` (a round trip to every worker that
waits out its timeout, about a second, on every check) or Celery's event heartbeats (which need
events enabled and a process consuming them): the worker writes one row every
``WORKER_HEARTBEAT_SECONDS``, works the same with Redis and RabbitMQ, and reading who was seen is
one query on a table of one row per worker.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from django.db.models import (
    DateTimeField,
    DurationField,
    Expression,
    ExpressionWrapper,
    F,
    Value,
)

from assets.models import WorkerHeartbeat
from assets.services.engine import db_now

if TYPE_CHECKING:
    from django.db.models.expressions import CombinedExpression

FORGET_WORKERS_AFTER: Final = dt.timedelta(days=1)
"""A worker silent this long (killed, its host gone) has its row deleted by the next heartbeat."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SeenWorker:
    """A worker and how long ago, on the database's clock, it last recorded a heartbeat."""

    hostname: str
    seconds_ago: float


def _now() -> Expression:
    """``db_now()`` as an expression (it is a plain datetime on SQLite)."""
    now = db_now()
    return Value(now, output_field=DateTimeField()) if isinstance(now, dt.datetime) else now


def _before(delta: dt.timedelta) -> ExpressionWrapper[CombinedExpression]:
    return ExpressionWrapper(_now() - delta, output_field=DateTimeField())


def record_worker_heartbeat(hostname: str) -> None:
    """Record that worker ``hostname`` is alive now, and forget workers long silent."""
    now = db_now()
    WorkerHeartbeat.objects.bulk_create(
        [WorkerHeartbeat(hostname=hostname, last_seen_at=now)],
        update_conflicts=True,
        unique_fields=["hostname"],
        update_fields=["last_seen_at"],
    )
    WorkerHeartbeat.objects.filter(last_seen_at__lt=_before(FORGET_WORKERS_AFTER)).delete()


def forget_worker(hostname: str) -> None:
    """Delete worker ``hostname``'s row: it stopped cleanly."""
    WorkerHeartbeat.objects.filter(hostname=hostname).delete()


def workers_seen_within(seconds: float) -> list[SeenWorker]:
    """The workers that recorded a heartbeat within the last ``seconds``, by name."""
    rows = (
        WorkerHeartbeat.objects.filter(last_seen_at__gte=_before(dt.timedelta(seconds=seconds)))
        .annotate(ago=ExpressionWrapper(_now() - F("last_seen_at"), output_field=DurationField()))
        .order_by("hostname")
        .values_list("hostname", "ago")
    )
    return [SeenWorker(hostname=name, seconds_ago=_seconds(ago)) for name, ago in rows]


def _seconds(ago: object) -> float:
    return max(ago.total_seconds(), 0.0) if isinstance(ago, dt.timedelta) else 0.0
