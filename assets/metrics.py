"""Prometheus metrics computed from the database at scrape time.

Workers run on many machines and in many processes; the database sees every step, so the metrics
are read from it (one grouped query per family) instead of being counted in each process. The
step families group the whole materialization table, so the rendered text is reused for
``METRICS_CACHE_SECONDS`` (Django's default cache): a scrape storm costs one collection per
process per period. The run families read the run table; the unfinished-step gauge sums the
counters of unfinished runs only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from django.core.cache import cache
from django.db.models import Count, Q, QuerySet, Sum
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from approvals.models import Approval
from assets.models import Run
from assets.services import totals
from assets.services.totals import DURATION_BUCKETS, Figures
from flowstone.conf import flowstone_settings
from flowstone.status import (
    TERMINAL_RUN_STATUSES,
    TERMINAL_STEP_STATUSES,
    UNFINISHED_COUNTS,
    RunStatus,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

RUN_DURATION_BUCKETS: Final = (1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 86400.0)
CACHE_KEY: Final = "flowstone:metrics"


def _histogram(
    rows: QuerySet[Any],
    *,
    name: str,
    documentation: str,
    label: str,
    interval: tuple[str, str],
    buckets: tuple[float, ...],
) -> HistogramMetricFamily:
    """A histogram of ``end - start`` over ``rows``, one series per value of ``label``."""
    family = HistogramMetricFamily(name, documentation, labels=[label])
    start, end = interval
    grouped = (
        rows.filter(**{f"{start}__isnull": False, f"{end}__isnull": False})
        .values(label)
        .annotate(**totals.interval_aggregates("h", interval, buckets, Q()))
        .order_by(label)
    )
    for row in grouped:
        counts = [(str(b), row[f"h_le_{i}"]) for i, b in enumerate(buckets)]
        counts.append(("+Inf", row["h_total"]))
        family.add_metric([row[label]], counts, totals.as_number(row["h_seconds"]))
    return family


def _run_families() -> Iterator[Metric]:
    """Runs by status, finished runs' durations, and the steps of unfinished runs by state."""
    runs = GaugeMetricFamily("flowstone_runs", "Runs, by status.", labels=["status"])
    by_status = {
        row["status"]: row["n"]
        for row in Run.objects.values("status").annotate(n=Count("pk")).order_by()
    }
    for status in RunStatus:
        runs.add_metric([status.value], float(by_status.get(status.value, 0)))
    yield runs
    yield _histogram(
        Run.objects.filter(status__in=TERMINAL_RUN_STATUSES),
        name="flowstone_run_duration_seconds",
        documentation="Time from a finished run's request to its end, by status.",
        label="status",
        interval=("created_at", "finished_at"),
        buckets=RUN_DURATION_BUCKETS,
    )
    # The engine keeps each run's counters; summing those of unfinished runs reads a few rows.
    unfinished = Run.objects.exclude(status__in=TERMINAL_RUN_STATUSES).aggregate(
        **{count.value: Sum(f"steps_{count.value}") for count in UNFINISHED_COUNTS}
    )
    steps = GaugeMetricFamily(
        "flowstone_unfinished_run_steps",
        "Steps of unfinished runs not yet ended, by state (the run counters).",
        labels=["state"],
    )
    for count in sorted(UNFINISHED_COUNTS):
        steps.add_metric([count.value], float(unfinished[count.value] or 0))
    yield steps


class _Histograms:
    """Histogram series summed from grouped figures, one series per asset."""

    def __init__(self, prefix: str, buckets: tuple[float, ...]) -> None:
        self.prefix = prefix
        self.buckets = buckets
        self.series: dict[str, list[float]] = {}

    def add(self, asset: str, figures: Figures) -> None:
        """Add one asset and status's figures to its asset's series."""
        p = self.prefix
        if not figures.get(f"{p}_total"):
            return
        counts = [figures.get(f"{p}_le_{i}", 0.0) for i in range(len(self.buckets))]
        values = [*counts, figures[f"{p}_total"], figures.get(f"{p}_seconds", 0.0)]
        known = self.series.setdefault(asset, [0.0] * len(values))
        self.series[asset] = [a + b for a, b in zip(known, values, strict=True)]

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        """The histogram family of every asset seen."""
        family = HistogramMetricFamily(name, documentation, labels=["asset"])
        for asset, values in sorted(self.series.items()):
            *counts, total, seconds = values
            pairs = [(str(b), c) for b, c in zip(self.buckets, counts, strict=True)]
            family.add_metric([asset], [*pairs, ("+Inf", total)], seconds)
        return family


class FlowStoneCollector(Collector):
    """Steps by asset and status, step durations, queue waits, runs and pending approvals."""

    def collect(self) -> Iterator[Metric]:
        """Read the figures: the step families from the totals and the untallied runs' steps."""
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
        durations = _Histograms("run", DURATION_BUCKETS)
        waits = _Histograms("wait", DURATION_BUCKETS)
        attempts: dict[str, float] = {}
        for (asset, status), figures in sorted(totals.current_step_figures().items()):
            attempts[asset] = attempts.get(asset, 0.0) + figures.get("attempts", 0.0)
            family = ended if status in TERMINAL_STEP_STATUSES else active
            family.add_metric([asset, status], figures.get("n", 0.0))
            durations.add(asset, figures)
            waits.add(asset, figures)
        for asset, total in sorted(attempts.items()):
            started.add_metric([asset], total)
        yield started
        yield ended
        yield active
        yield durations.family(
            "flowstone_step_duration_seconds",
            "Time from a successful step's start to its end, by asset.",
        )
        yield waits.family(
            "flowstone_queue_wait_seconds",
            "Time from a step's last dispatch to its start, by asset.",
        )
        pending = GaugeMetricFamily(
            "flowstone_approvals_pending", "Approvals waiting for a decision."
        )
        pending.add_metric(
            [], float(Approval.objects.filter(status=Approval.Status.PENDING).count())
        )
        yield pending
        yield from _run_families()


def collect_exposition() -> str:
    """The Prometheus text of every FlowStone family, collected now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FlowStoneCollector())
    return generate_latest(registry).decode()


def cached_exposition() -> str:
    """``collect_exposition()``, reused for ``METRICS_CACHE_SECONDS`` (0: collected every time)."""
    seconds = flowstone_settings.METRICS_CACHE_SECONDS
    if seconds > 0:
        stored = cache.get(CACHE_KEY)
        if isinstance(stored, str):
            return stored
    text = collect_exposition()
    if seconds > 0:
        cache.set(CACHE_KEY, text, timeout=seconds)
    return text


def _forget_cached_exposition() -> None:
    cache.delete(CACHE_KEY)


flowstone_settings.on_reload(_forget_cached_exposition)
