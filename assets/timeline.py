"""A run's timeline (Gantt): one bar per step from when it started to when it ended.

A bar starts when the step started (or, not started yet, was queued) and ends when it finished
(or, still going, now). A run of more than ``MAX_TIMELINE_STEPS`` steps is drawn one bar per
asset and status instead, read with one aggregate query, so a run of 100,000 steps draws a
bounded picture without loading its steps. Positions are percentages of the run's span, ready
for the template's CSS.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

from django.db.models import Count, F, Max, Min, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from assets.models import Materialization
from assets.partition_health import partition_label

if TYPE_CHECKING:
    from datetime import datetime

    from assets.models import Run

MAX_TIMELINE_STEPS: Final = 200
"""Above this many steps, a run's timeline has one bar per asset and status."""

MIN_BAR_WIDTH: Final = 0.4
"""The narrowest bar, in percent of the timeline, so an instant step stays visible."""

_PERCENT: Final = 100.0
_SHORTEST_SPAN_SECONDS: Final = 0.001


@dataclass(frozen=True, kw_only=True, slots=True)
class TimelineBar:
    """One step (or, aggregated, the steps of one asset with one status) on the timeline."""

    label: str
    status: str
    start: datetime | None
    end: datetime | None
    is_open: bool
    """Still going: the bar ends now."""
    left: float = 0.0
    width: float = 0.0
    step_id: int | None = None
    count: int = 1

    @property
    def style(self) -> str:
        """The bar's CSS position (a dot as decimal mark, whatever the locale)."""
        return f"left: {self.left:.3f}%; width: {self.width:.3f}%"

    @property
    def seconds(self) -> float | None:
        """How long the bar lasts, in seconds (``None`` for a step that has not started)."""
        if self.start is None or self.end is None:
            return None
        return (self.end - self.start).total_seconds()


@dataclass(frozen=True, kw_only=True, slots=True)
class Timeline:
    """A run's bars on one time axis from ``origin`` to ``until``."""

    bars: tuple[TimelineBar, ...]
    origin: datetime | None
    until: datetime | None
    is_live: bool
    is_aggregated: bool
    steps: int

    @property
    def seconds(self) -> float:
        """The span of the axis, in seconds."""
        if self.origin is None or self.until is None:
            return 0.0
        return (self.until - self.origin).total_seconds()


def run_timeline(run: Run, *, now: datetime | None = None) -> Timeline:
    """The timeline of ``run``: its steps' bars, or per asset and status for a large run."""
    now = now or timezone.now()
    is_live = run.finished_at is None
    is_aggregated = run.steps_total > MAX_TIMELINE_STEPS
    bars = _aggregated_bars(run, now) if is_aggregated else _step_bars(run, now)
    starts = [bar.start for bar in bars if bar.start is not None]
    ends = [bar.end for bar in bars if bar.end is not None] + ([now] if is_live else [])
    origin = min(starts) if starts else None
    until = max([*ends, *starts]) if origin is not None else None
    if origin is not None and until is not None:
        span = max((until - origin).total_seconds(), _SHORTEST_SPAN_SECONDS)
        bars = [_placed(bar, origin, span) for bar in bars]
    return Timeline(
        bars=tuple(bars),
        origin=origin,
        until=until,
        is_live=is_live,
        is_aggregated=is_aggregated,
        steps=run.steps_total,
    )


def _began() -> Coalesce:
    return Coalesce("started_at", "queued_at", "finished_at")


def _step_bars(run: Run, now: datetime) -> list[TimelineBar]:
    rows = (
        Materialization.objects.filter(run=run)
        .annotate(began=_began())
        .order_by(F("began").asc(nulls_last=True), "id")
        .values_list("id", "asset", "partition_key", "status", "began", "finished_at")
    )
    bars = []
    for step_id, asset, key, status, began, finished_at in rows:
        is_open = began is not None and finished_at is None
        label = asset if key == "" else f"{asset} [{partition_label(key)}]"
        bars.append(
            TimelineBar(
                label=label,
                status=status,
                start=began,
                end=now if is_open else (finished_at if began is not None else None),
                is_open=is_open,
                step_id=step_id,
            )
        )
    return bars


def _aggregated_bars(run: Run, now: datetime) -> list[TimelineBar]:
    groups = (
        Materialization.objects.filter(run=run)
        .values("asset", "status")
        .annotate(
            began=Min(_began()),
            ended=Max("finished_at"),
            count=Count("id"),
            unfinished=Count("id", filter=Q(finished_at__isnull=True)),
        )
        .order_by(F("began").asc(nulls_last=True), "asset", "status")
    )
    bars = []
    for group in groups:
        began: datetime | None = group["began"]
        is_open = began is not None and group["unfinished"] > 0
        bars.append(
            TimelineBar(
                label=f"{group['asset']} ({group['count']:,} {group['status']})",
                status=group["status"],
                start=began,
                end=now if is_open else (group["ended"] if began is not None else None),
                is_open=is_open,
                count=group["count"],
            )
        )
    return bars


def _placed(bar: TimelineBar, origin: datetime, span: float) -> TimelineBar:
    """``bar`` with its position on an axis that starts at ``origin`` and lasts ``span`` s."""
    if bar.start is None or bar.end is None:
        return bar
    left = (bar.start - origin).total_seconds() / span * _PERCENT
    width = max((bar.end - bar.start).total_seconds() / span * _PERCENT, MIN_BAR_WIDTH)
    left = min(left, _PERCENT - MIN_BAR_WIDTH)
    return replace(bar, left=left, width=min(width, _PERCENT - left))
