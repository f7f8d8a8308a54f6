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

from collections import deque
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
"""The longest window: the missed ticks in it are enumerated when there is a gap."""


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
    tick and before ``ticks[0]`` (or before the current tick when nothing runs). ``not_run_first``
    and ``not_run_last`` are the oldest and newest of them, ``None`` when there are none;
    ``beyond_bound`` counts those inside the window that the bound left out.
    """

    ticks: tuple[datetime, ...] = ()
    not_run_first: datetime | None = None
    not_run_last: datetime | None = None
    beyond_bound: int = 0


NO_CATCH_UP: Final = CatchUpPlan()


def plan_catch_up(
    fields: CronFields,
    zone: ZoneInfo,
    policy: CatchUpPolicy,
    *,
    last: datetime | None,
    current: datetime,
) -> CatchUpPlan:
    """Plan the catch-up before ``current`` given the ``last`` recorded tick (aware datetimes).

    Nothing is caught up on a schedule's first tick (no ``last``), when ``last`` is not at or
    before ``current``, or when ``last`` is not a cron time of ``fields`` in ``zone`` (the cron or
    timezone changed since: the gap belongs to another cron, so it is not a gap in this one).
    """
    if last is None or last.astimezone(UTC) >= current.astimezone(UTC):
        return NO_CATCH_UP
    if latest_tick(fields, zone, last).astimezone(UTC) != last.astimezone(UTC):
        return NO_CATCH_UP
    window_start = current.astimezone(UTC) - policy.window
    first_missed = next(ticks_between(fields, zone, last, current), None)
    if first_missed is None or first_missed.astimezone(UTC) >= current.astimezone(UTC):
        return NO_CATCH_UP
    newest: deque[datetime] = deque(maxlen=policy.max_ticks)
    in_window = 0
    # Ticks from just before the window (or the last tick, if later) up to just before current.
    start = max(last.astimezone(UTC), window_start - timedelta(microseconds=1))
    for tick in ticks_between(fields, zone, start, current):
        if tick.astimezone(UTC) >= current.astimezone(UTC):
            break
        newest.append(tick)
        in_window += 1
    ticks = tuple(newest)
    if ticks and ticks[0].astimezone(UTC) == first_missed.astimezone(UTC):
        return CatchUpPlan(ticks=ticks)
    upper = ticks[0] if ticks else current
    not_run_last = _latest_before(fields, zone, upper)
    return CatchUpPlan(
        ticks=ticks,
        not_run_first=first_missed,
        not_run_last=not_run_last,
        beyond_bound=in_window - len(ticks),
    )


def _latest_before(fields: CronFields, zone: ZoneInfo, moment: datetime) -> datetime:
    """The latest cron time strictly before ``moment`` (which is itself a cron time)."""
    return latest_tick(fields, zone, moment.astimezone(UTC) - timedelta(microseconds=1))
