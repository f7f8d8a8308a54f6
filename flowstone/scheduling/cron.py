"""Cron expressions: validation, and the tick times they produce in an IANA timezone.

Parsing and iteration are croniter's; every field is also checked with Celery's own crontab
parser, because Celery beat (django-celery-beat's ``CrontabSchedule``) decides when a tick
message is sent and this module decides which tick it is. Both must read the expression alike, so
only what both accept is allowed: five fields (or ``@hourly`` ... ``@yearly``), no ``L``/``W``/``#``
extensions, day of week 0-6, and not both day of month and day of week restricted (cron ORs them,
Celery ANDs them).

Daylight saving time follows croniter, with one rule on top: an expression with a fixed minute and
hour fires once when the clocks go back, at the first occurrence of the repeated wall time (as
Vixie cron does). A wall time that the clocks skip fires at the first moment after the gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import crontab_parser
from croniter import croniter

from flowstone.errors import DefinitionError

if TYPE_CHECKING:
    from collections.abc import Iterator

MACROS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FIELD_NAMES: Final = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
# (size, first value) of each field for Celery's parser.
_FIELD_RANGES: Final = ((60, 0), (24, 0), (31, 1), (12, 1), (7, 0))
_WILDCARD: Final = "*"


@dataclass(frozen=True, kw_only=True, slots=True)
class CronFields:
    """The five fields of a cron expression, as django-celery-beat's ``CrontabSchedule`` stores."""

    minute: str
    hour: str
    day_of_month: str
    month_of_year: str
    day_of_week: str

    @property
    def expression(self) -> str:
        """The five fields joined into one expression."""
        return " ".join(
            (self.minute, self.hour, self.day_of_month, self.month_of_year, self.day_of_week)
        )

    @property
    def is_fixed_time(self) -> bool:
        """Whether minute and hour are fixed (a repeated wall time then fires once)."""
        return _WILDCARD not in self.minute and _WILDCARD not in self.hour


def parse_cron(expression: object) -> CronFields:
    """Return the fields of a five-field cron expression or macro; raise ``DefinitionError``."""
    if not isinstance(expression, str):
        raise DefinitionError(f"a cron expression must be a string, got {expression!r}")
    text = MACROS.get(expression.strip().lower(), expression.strip())
    parts = text.split()
    if len(parts) != len(FIELD_NAMES):
        raise DefinitionError(
            f"cron expression {expression!r} must have 5 fields (minute hour day-of-month month "
            f"day-of-week) or be one of {', '.join(MACROS)}"
        )
    for name, part, (size, first) in zip(FIELD_NAMES, parts, _FIELD_RANGES, strict=True):
        try:
            crontab_parser(size, first).parse(part)
        except ValueError as exc:
            raise DefinitionError(
                f"cron expression {expression!r}: invalid {name} field {part!r}: {exc}"
            ) from exc
    if not croniter.is_valid(text):
        raise DefinitionError(f"cron expression {expression!r} is not valid")
    fields = CronFields(**dict(zip(FIELD_NAMES, parts, strict=True)))
    if _WILDCARD not in (fields.day_of_month, fields.day_of_week):
        raise DefinitionError(
            f"cron expression {expression!r} restricts both the day of month and the day of "
            "week; cron and Celery disagree on what that means, so restrict only one"
        )
    return fields


def load_timezone(name: object) -> ZoneInfo:
    """Return the ``ZoneInfo`` for an IANA name, or raise ``DefinitionError``."""
    if not isinstance(name, str) or not name:
        raise DefinitionError(f"timezone must be an IANA name such as 'UTC', got {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise DefinitionError(f"unknown timezone {name!r}; use an IANA name like 'UTC'") from exc


CLOCK_CHANGE_MARGIN = timedelta(hours=3)
"""How far before croniter's answer ``latest_tick`` looks: more than any clock change moves."""


def _canonical(fields: CronFields, tick: datetime, zone: ZoneInfo) -> datetime:
    """Map the second occurrence of a repeated wall time to the first, for fixed-time crons."""
    local = tick.astimezone(zone)
    if fields.is_fixed_time and local.fold == 1:
        first = local.replace(fold=0)
        if first.utcoffset() != local.utcoffset():
            return first.astimezone(zone)
    return local


def latest_tick(fields: CronFields, zone: ZoneInfo, now: datetime) -> datetime:
    """Return the latest tick at or before the aware ``now``, in ``zone``.

    Computed forward, in UTC instants, from a point before it: croniter's ``get_prev`` walks
    wall-clock time back and, in the repeated hour of a clock change, skips a tick that already
    happened (a message for Berlin's 02:30 handled at 01:10 UTC on the autumn change landed on
    the day before). Its answer only bounds the search: every tick from a few hours before it up
    to ``now`` is enumerated by ``ticks_between`` (forward, each cron time once), and the last
    one wins.
    """
    if now.utcoffset() is None:
        raise DefinitionError(f"now must be an aware datetime, got {now!r}")
    # croniter's get_prev is strictly before its start; a tick exactly at ``now`` counts.
    start = now.astimezone(zone) + timedelta(microseconds=1)
    previous = croniter(fields.expression, start).get_prev(datetime)
    lower = min(previous.astimezone(UTC), now.astimezone(UTC)) - CLOCK_CHANGE_MARGIN
    latest = None
    for tick in ticks_between(fields, zone, lower, now):
        latest = tick
    return latest if latest is not None else _canonical(fields, previous, zone)


def ticks_between(
    fields: CronFields, zone: ZoneInfo, start: datetime, end: datetime
) -> Iterator[datetime]:
    """Yield each tick in ``(start, end]`` once, in order, in ``zone`` (aware datetimes).

    A repeated wall time maps back to its first occurrence, which can be at or before ``start``
    (croniter, starting inside the repeated hour, finds the second one): such a tick is not
    yielded, nor one already yielded.
    """
    iterator = croniter(fields.expression, start.astimezone(zone))
    last = start.astimezone(UTC)
    end_utc = end.astimezone(UTC)
    while True:
        tick = _canonical(fields, iterator.get_next(datetime), zone)
        if tick.astimezone(UTC) > end_utc:
            return
        if tick.astimezone(UTC) > last:
            last = tick.astimezone(UTC)
            yield tick
