"""Prometheus metrics computed from the database at scrape time.

Workers run on many machines and in many processes; the database sees every step, so the metrics
are read from it (one grouped query per family) instead of being counted in each process.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Final

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from approvals.models import Approval
from assets.models import Materialization
from flowstone.status import StepStatus

if TYPE_CHECKING:
    from collections.abc import Iterator

DURATION_BUCKETS: Final = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0)
ENDED: Final = (
    StepStatus.SUCCESS,
    StepStatus.FAILED,
    StepStatus.UPSTREAM_FAILED,
    StepStatus.CANCELED,
)


def _histogram(
    name: str, documentation: str, start: str, end: str, condition: Q
) -> HistogramMetricFamily:
    """A per-asset histogram of ``end - start`` over the rows matching ``condition``."""
    family = HistogramMetricFamily(name, documentation, labels=["asset"])
    elapsed = ExpressionWrapper(F(end) - F(start), output_field=DurationField())
    aggregates = {
        f"le_{index}": Count("id", filter=Q(elapsed__lte=dt.timedelta(seconds=bound)))
        for index, bound in enumerate(DURATION_BUCKETS)
    }
    rows = (
        Materialization.objects.filter(
            condition, **{f"{start}__isnull": False, f"{end}__isnull": False}
        )
        .annotate(elapsed=elapsed)
        .values("asset")
        .annotate(total=Count("id"), seconds=Sum("elapsed"), **aggregates)
        .order_by("asset")
    )
    for row in rows:
        buckets = [(str(b), row[f"le_{i}"]) for i, b in enumerate(DURATION_BUCKETS)]
        buckets.append(("+Inf", row["total"]))
        total_seconds = row["seconds"].total_seconds() if row["seconds"] else 0.0
        family.add_metric([row["asset"]], buckets, total_seconds)
    return family


class FlowStoneCollector(Collector):
    """Steps by asset and status, step durations, queue waits and pending approvals."""

    def collect(self) -> Iterator[Metric]:
        """Read the figures from the database."""
        started = CounterMetricFamily(
            "flowstone_steps_started", "Step attempts started, by asset.", labels=["asset"]
        )
        ended = CounterMetricFamily(
            "flowstone_steps_ended",
            "Steps that ended, by asset and status.",
            labels=["asset", "status"],
        )
        active = GaugeMetricFamily(
            "flowstone_steps_active",
            "Steps not yet ended, by asset and status.",
            labels=["asset", "status"],
        )
        for row in (
            Materialization.objects.values("asset")
            .annotate(attempts=Sum("attempt"))
            .order_by("asset")
        ):
            started.add_metric([row["asset"]], float(row["attempts"] or 0))
        for row in (
            Materialization.objects.values("asset", "status")
            .annotate(n=Count("id"))
            .order_by("asset", "status")
        ):
            family = ended if row["status"] in ENDED else active
            family.add_metric([row["asset"], row["status"]], float(row["n"]))
        yield started
        yield ended
        yield active
        yield _histogram(
            "flowstone_step_duration_seconds",
            "Time from a successful step's start to its end, by asset.",
            "started_at",
            "finished_at",
            Q(status=StepStatus.SUCCESS),
        )
        yield _histogram(
            "flowstone_queue_wait_seconds",
            "Time from a step's last dispatch to its start, by asset.",
            "queued_at",
            "started_at",
            Q(started_at__gte=F("queued_at")),
        )
        pending = GaugeMetricFamily(
            "flowstone_approvals_pending", "Approvals waiting for a decision."
        )
        pending.add_metric(
            [], float(Approval.objects.filter(status=Approval.Status.PENDING).count())
        )
        yield pending
