"""Catch-up: which missed ticks of a schedule run before its current tick.

A tick is *missed* when its cron time lies strictly between the last recorded tick of the
schedule and the tick being evaluated now (beat was down, or its message was lost). The plan is
pure: given the last recorded tick, the current tick and the schedule's catch-up options, it
names the missed ticks to run (the newest ``max_ticks`` of those inside the window, oldest first)
and the range of missed ticks that will not run (older than the window, or beyond the bound),
which the caller records as one ``missed`` tick so the gap is visible.

Everything is measured from the current tick's instant, never from the clock, so two beat
processes or a redelivered message evaluating the same tick plan the same catch-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from flowstone.errors import DefinitionError
from flowstone.scheduling.cron import latest_tick, ticks_between

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from flowstone.scheduling.cron import CronFields

DEFAULT_MAX_CATCH_UP_TICKS: Final = 5
"""How many missed ticks one evaluation runs at most, unless the schedule says otherwise."""
MAX_CATCH_UP_TICKS_LIMIT: Final = 1000
MAX_CATCH_UP_WINDOW: Final = timedelta(days=366)
_JUST_BEFORE: Final = timedelta(microseconds=1)


@dataclass(frozen=True, kw_only=True, slots=True)
class CatchUpPolicy:
    """How far back a schedule replays missed ticks (``window``) and how many (``max_ticks``)."""

    window: timedelta
    max_ticks: int = DEFAULT_MAX_CATCH_UP_TICKS

    def __post_init__(self) -> None:
        if not isinstance(self.window, timedelta) or not (
            timedelta(0) < self.window <= MAX_CATCH_UP_WINDOW
        ):
            raise DefinitionError(
                f"catch_up must be a timedelta above zero and at most {MAX_CATCH_UP_WINDOW.days} "
                f"days, got {self.window!r}"
            )
        if (
            isinstance(self.max_ticks, bool)
            or not isinstance(self.max_ticks, int)
            or not 1 <= self.max_ticks <= MAX_CATCH_UP_TICKS_LIMIT
        ):
            raise DefinitionError(
                f"max_catch_up_ticks must be an int from 1 to {MAX_CATCH_UP_TICKS_LIMIT}, "
                f"got {self.max_ticks!r}"
            )

    @property
    def window_text(self) -> str:
        """The window in words, for reasons and logs: ``3 days``, ``1 day 6 hours``."""
        seconds = int(self.window.total_seconds())
        parts = []
        for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
            count, seconds = divmod(seconds, size)
            if count:
                parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
        return " ".join(parts) or "less than a second"


@dataclass(frozen=True, kw_only=True, slots=True)
class CatchUpPlan:
    """The missed ticks to run, oldest first, and the missed ticks that will not run.

    The ticks not run are always the oldest missed ones: every cron time after the last recorded
    tick and before ``ticks[0]`` (or before the current tick when nothing runs), older than the
    window or beyond the bound. ``not_run_first`` and ``not_run_last`` are the oldest and newest
    of them, ``None`` when there are none.
    """

    ticks: tuple[datetime, ...] = ()
    not_run_first: datetime | None = None
    not_run_last: datetime | None = None


NO_CATCH_UP: Final = CatchUpPlan()
_FIRST_SPAN: Final = timedelta(hours=1)


def plan_catch_up(
    fields: CronFields,
    zone: ZoneInfo,
    policy: CatchUpPolicy,
    *,
    last: datetime | None,
    current: datetime,
) -> CatchUpPlan:
    """Plan the catch-up before ``current`` given the ``last`` recorded tick (aware datetimes).

    Nothing is caught up on a schedule's first tick (no ``last``), when ``last`` is not before
    ``current``, or when ``last`` is not a cron time of ``fields`` in ``zone`` (the cron or
    timezone changed since: the gap belongs to another cron, so it is not a gap in this one).
    """
    if last is None or last.astimezone(UTC) >= current.astimezone(UTC):
        return NO_CATCH_UP
    if latest_tick(fields, zone, last).astimezone(UTC) != last.astimezone(UTC):
        return NO_CATCH_UP
    first_missed = next(ticks_between(fields, zone, last, current), None)
    if first_missed is None or first_missed.astimezone(UTC) >= current.astimezone(UTC):
        return NO_CATCH_UP
    ticks = _newest_missed(fields, zone, policy, last=last, current=current)
    if ticks and ticks[0].astimezone(UTC) == first_missed.astimezone(UTC):
        return CatchUpPlan(ticks=ticks)
    upper = ticks[0] if ticks else current
    return CatchUpPlan(
        ticks=ticks,
        not_run_first=first_missed,
        not_run_last=latest_tick(fields, zone, upper.astimezone(UTC) - _JUST_BEFORE),
    )


def _newest_missed(
    fields: CronFields,
    zone: ZoneInfo,
    policy: CatchUpPolicy,
    *,
    last: datetime,
    current: datetime,
) -> tuple[datetime, ...]:
    """The newest missed ticks in the window, at most ``policy.max_ticks``, oldest first.

    Enumerated forward (each cron time once across clock changes) over a span back from
    ``current`` that doubles until it holds enough ticks or reaches the window or ``last``, so
    the work follows the bound, not the length of the gap.
    """
    end = current.astimezone(UTC)
    lowest = max(last.astimezone(UTC), end - policy.window - _JUST_BEFORE)
    span = _FIRST_SPAN
    while True:
        start = max(lowest, end - span)
        found = [
            tick
            for tick in ticks_between(fields, zone, start, current)
            if tick.astimezone(UTC) < end
        ]
        if len(found) >= policy.max_ticks or start == lowest:
            return tuple(found[-policy.max_ticks :])
        span *= 2
