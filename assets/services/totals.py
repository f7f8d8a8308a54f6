"""Step totals for ``/metrics``: finished runs' steps summed once, by asset and status.

A finished run's steps never change. ``tally_finished_runs`` adds each finished run's steps to
``StepTotals`` once (and marks the run ``metrics_tallied`` in the same transaction), so a scrape
groups only the steps of runs not tallied yet (unfinished ones, through the run index) and reads
a few total rows, whatever the size of the step table. Tallies take runs with ``SKIP LOCKED``:
two processes never tally the same run.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from django.db import connection, transaction
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, QuerySet, Sum

from assets.models import Materialization, Run, StepTotals
from flowstone.status import StepStatus

DURATION_BUCKETS: Final = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0)
TALLY_BATCH: Final = 200
"""Runs tallied per transaction (a backfill's run holds many steps)."""
TALLY_PER_SCRAPE: Final = 1000
"""Runs a scrape tallies at most: after an upgrade the backlog is tallied over several scrapes
(each counts what is left untallied directly), so no scrape takes the whole table's time."""


def interval_aggregates(
    prefix: str, interval: tuple[str, str], buckets: tuple[float, ...], condition: Q
) -> dict[str, Any]:
    """Aggregates of a histogram of ``end - start`` over the rows matching ``condition``."""
    start, end = interval
    elapsed = ExpressionWrapper(F(end) - F(start), output_field=DurationField())
    measured = condition & Q(**{f"{start}__isnull": False, f"{end}__isnull": False})
    aggregates: dict[str, Any] = {
        f"{prefix}_total": Count("pk", filter=measured),
        f"{prefix}_seconds": Sum(elapsed, filter=measured),
    }
    for index, bound in enumerate(buckets):
        within = Q(**{f"{end}__lte": F(start) + dt.timedelta(seconds=bound)})
        aggregates[f"{prefix}_le_{index}"] = Count("pk", filter=measured & within)
    return aggregates


Figures = dict[str, float]
"""The sums of one asset and status: ``n``, ``attempts`` and the two histograms' columns."""


def as_number(value: object) -> float:
    """A grouped column as a number: seconds for a duration, 0 for an empty sum."""
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return float(value or 0)  # type: ignore[arg-type]


def step_figures(steps: QuerySet[Materialization]) -> dict[tuple[str, str], Figures]:
    """``steps`` grouped by asset and status: counts, attempts, durations and queue waits."""
    rows = (
        steps.values("asset", "status")
        .annotate(
            n=Count("pk"),
            attempts=Sum("attempt"),
            **interval_aggregates(
                "run", ("started_at", "finished_at"), DURATION_BUCKETS, Q(status=StepStatus.SUCCESS)
            ),
            **interval_aggregates(
                "wait",
                ("queued_at", "started_at"),
                DURATION_BUCKETS,
                Q(started_at__gte=F("queued_at")),
            ),
        )
        .order_by()
    )
    return {
        (row.pop("asset"), row.pop("status")): {k: as_number(v) for k, v in row.items()}
        for row in rows
    }


def add_figures(into: Figures, more: Figures) -> Figures:
    """``into`` plus ``more``, column by column."""
    return {key: into.get(key, 0.0) + more.get(key, 0.0) for key in {*into, *more}}


def current_step_figures() -> dict[tuple[str, str], Figures]:
    """Tallied runs' totals plus the steps of the runs not tallied yet, from one snapshot.

    Finished runs are tallied first (``services.tally_finished_runs``). Each run's steps are
    either in ``StepTotals`` or not tallied, never both, and a repeatable-read transaction on
    PostgreSQL reads both sides as of one moment, so a tally committed in between counts nothing
    twice and drops nothing.
    """
    tally_finished_runs(limit=TALLY_PER_SCRAPE)
    outer = connection.in_atomic_block  # then its isolation is already fixed (tests)
    with transaction.atomic():
        if connection.vendor == "postgresql" and not outer:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        figures = {(t.asset, t.status): dict(t.figures) for t in StepTotals.objects.all()}
        # The untallied runs first (a partial index), then their steps (the run index): one
        # join would leave the plan to the run table's statistics, stale after a tally.
        runs = list(Run.objects.filter(metrics_tallied=False).values_list("pk", flat=True))
        if runs:
            untallied = Materialization.objects.filter(run_id__in=runs)
            for key, more in step_figures(untallied).items():
                figures[key] = add_figures(figures.get(key, {}), more)
    return figures


def tally_finished_runs(*, batch: int | None = None, limit: int | None = None) -> int:
    """Add the steps of finished, untallied runs to ``StepTotals``; return how many runs.

    Every such run, or at most about ``limit`` of them (whole batches).

    One transaction per batch: the runs are taken ``FOR UPDATE SKIP LOCKED``, their steps
    grouped, the totals rows locked and added to, and the runs marked tallied, so each run is
    counted exactly once even with several processes tallying.
    """
    batch = TALLY_BATCH if batch is None else batch
    tallied = 0
    while limit is None or tallied < limit:
        with transaction.atomic():
            ids = list(
                Run.objects.select_for_update(skip_locked=True)
                .filter(metrics_tallied=False, finished_at__isnull=False)
                .order_by("created_at")
                .values_list("pk", flat=True)[:batch]
            )
            if not ids:
                return tallied
            figures = step_figures(Materialization.objects.filter(run_id__in=ids))
            StepTotals.objects.bulk_create(
                [StepTotals(asset=asset, status=status) for asset, status in figures],
                ignore_conflicts=True,
            )
            rows = StepTotals.objects.select_for_update().filter(
                asset__in={asset for asset, _ in figures}
            )
            for row in rows:
                more = figures.get((row.asset, row.status))
                if more is not None:
                    row.figures = add_figures(row.figures, more)
                    row.save(update_fields=["figures"])
            Run.objects.filter(pk__in=ids).update(metrics_tallied=True)
            tallied += len(ids)
    return tallied
