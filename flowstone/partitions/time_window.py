"""Time-window partitions: hourly, daily, weekly or monthly windows in an IANA timezone.

Daily, weekly and monthly partition values are the ``date`` a window starts on; hourly values are
the aware ``datetime`` (in the definition's timezone) an hour starts at. Windows follow the local
wall clock, so a Europe/Berlin day has 23 hourly partitions when DST starts and 25 when it ends
(the repeated hour appears twice, once per UTC offset). All arithmetic is done on UTC instants,
because Python compares and subtracts datetimes that share a ``tzinfo`` by wall time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Final, Literal, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flowstone.errors import (
    DefinitionError,
    FlowStoneError,
    PartitionKeyError,
    ValidationFailedError,
)
from flowstone.partitions.base import PartitionsDefinition
from flowstone.partitions.codec import format_partition_value

if TYPE_CHECKING:
    from collections.abc import Iterator

    from flowstone.partitions.base import DynamicKeyStore
    from flowstone.partitions.codec import PartitionValue

Cadence: TypeAlias = Literal["hourly", "daily", "weekly", "monthly"]
CADENCES: Final[tuple[Cadence, ...]] = ("hourly", "daily", "weekly", "monthly")
DEFAULT_TIMEZONE: Final = "UTC"
DEFAULT_WEEK_START: Final = 0
"""Weeks start on Monday (``date.weekday()`` numbering: 0 = Monday ... 6 = Sunday)."""

_HOUR: Final = timedelta(hours=1)
_DAY: Final = timedelta(days=1)
_HOURS_PER_DAY: Final = 24
_DAYS_PER_WEEK: Final = 7
_MONTHS_PER_YEAR: Final = 12
_WEEKDAYS: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# A wall-clock hour start is at most this many days after the instant being searched from.
_MAX_DAYS_TO_NEXT_HOUR: Final = 3
_DATE_TEXT: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MONTH_TEXT: Final = re.compile(r"[0-9]{4}-[0-9]{2}")
_HOUR_TEXT: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2})?(?:Z|[+-][0-9]{2}:[0-9]{2})?"
)


@dataclass(frozen=True, kw_only=True, slots=True)
class TimeWindowPartitions(PartitionsDefinition):
    """Consecutive time windows from ``start`` up to ``end`` (exclusive) in ``timezone``.

    ``start`` and ``end`` are dates (local midnight) or datetimes (naive ones are local wall time)
    and must fall on window boundaries. Without ``end`` the windows run up to the last complete one
    before ``now``. ``week_start`` (0 = Monday) only applies to weekly windows.
    """

    cadence: Cadence
    start: date | datetime
    end: date | datetime | None = None
    timezone: str = DEFAULT_TIMEZONE
    week_start: int = DEFAULT_WEEK_START
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _first: datetime = field(init=False, repr=False, compare=False)
    _stop: datetime | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.cadence not in CADENCES:
            msg = f"TimeWindowPartitions: cadence must be one of {CADENCES}, got {self.cadence!r}"
            raise DefinitionError(msg)
        object.__setattr__(self, "_zone", _load_zone(self.timezone))
        week_start = self.week_start
        if type(week_start) is not int or not 0 <= week_start < _DAYS_PER_WEEK:
            msg = f"TimeWindowPartitions: week_start must be 0 (Monday) to 6, got {week_start!r}"
            raise DefinitionError(msg)
        if self.cadence != "weekly" and week_start != DEFAULT_WEEK_START:
            msg = (
                f"TimeWindowPartitions: week_start only applies to weekly windows ({self.cadence})"
            )
            raise DefinitionError(msg)
        try:
            first = self._boundary(self.start, "start")
            stop = None if self.end is None else self._boundary(self.end, "end")
        except PartitionKeyError as exc:  # a boundary outside datetime's range
            msg = f"TimeWindowPartitions: {exc.message}"
            raise DefinitionError(msg) from exc
        object.__setattr__(self, "_first", first)
        object.__setattr__(self, "start", self._key_at(first))
        if stop is not None and stop <= first:
            msg = (
                f"TimeWindowPartitions: end {format_partition_value(self.end)} must be after "
                f"start {format_partition_value(self.start)}"
            )
            raise DefinitionError(msg)
        object.__setattr__(self, "_stop", stop)
        object.__setattr__(self, "end", None if stop is None else self._key_at(stop))

    def describe(self) -> str:
        """``daily partitions from 2025-12-01``, with the end (exclusive) and a timezone not UTC."""
        text = f"{self.cadence} partitions from {format_partition_value(self.start)}"
        if self.end is not None:
            text += f" to {format_partition_value(self.end)} (exclusive)"
        if self.timezone != DEFAULT_TIMEZONE:
            text += f" in {self.timezone}"
        return text

    def keys(
        self,
        *,
        store: DynamicKeyStore | None = None,
        now: datetime | None = None,
    ) -> list[PartitionValue]:
        """Return the window starts from ``start`` to ``end``, or to the last window before ``now``.

        ``now`` is only used when there is no ``end``; it must be aware and defaults to the current
        time.
        """
        return list(self.iter_keys(store=store, now=now))

    def iter_keys(
        self,
        *,
        store: DynamicKeyStore | None = None,
        now: datetime | None = None,
    ) -> Iterator[PartitionValue]:
        """Yield the window starts ``keys`` returns, one at a time."""
        del store  # the shared signature; time windows need no store
        limit = None if self._stop is not None else _aware_now(now)
        for start, end in self._windows(self._first):
            if limit is not None and end > limit:
                return
            yield self._key_at(start)

    def validate(
        self,
        value: object,
        *,
        store: DynamicKeyStore | None = None,
    ) -> PartitionValue:
        """Return the window start ``value`` names (hourly: converted to the timezone), or raise.

        Windows after ``now`` are valid when there is no ``end``: validation never reads the clock.
        """
        del store  # the shared signature; time windows need no store
        instant = self._start_instant(value)
        if instant < self._first:
            msg = (
                f"{format_partition_value(value)} is before the first partition "
                f"({format_partition_value(self.start)}) of the {self.describe()}"
            )
            raise PartitionKeyError(msg)
        if self._stop is not None and instant >= self._stop:
            msg = (
                f"{format_partition_value(value)} is not before the end "
                f"({format_partition_value(self.end)}, exclusive) of the {self.describe()}"
            )
            raise PartitionKeyError(msg)
        return self._key_at(instant)

    def parse(self, text: str) -> PartitionValue:
        """Parse ``YYYY-MM-DD`` (``YYYY-MM`` too, for monthly) or, for hourly, ``YYYY-MM-DDTHH:MM``.

        Hourly text is local wall time in the timezone unless it ends in ``Z`` or ``+HH:MM``;
        an hour that DST makes ambiguous needs that offset.
        """
        if not isinstance(text, str):
            msg = f"partition text must be a str, got {type(text).__name__}"
            raise PartitionKeyError(msg)
        if self.cadence == "hourly":
            return self.validate(self._parse_hour(text))
        if self.cadence == "monthly" and _MONTH_TEXT.fullmatch(text):
            text = f"{text}-01"
        if not _DATE_TEXT.fullmatch(text):
            msg = f"{text!r} is not a date; {self.cadence} partitions are written YYYY-MM-DD"
            raise PartitionKeyError(msg)
        try:
            value = date.fromisoformat(text)
        except ValueError as exc:
            msg = f"{text!r} is not a valid date: {exc}"
            raise PartitionKeyError(msg) from exc
        return self.validate(value)

    def window(self, value: object) -> tuple[datetime, datetime]:
        """Return the aware start and (exclusive) end of the window ``value`` names."""
        start = self._start_instant(self.validate(value))
        return start.astimezone(self._zone), self._next_start(start).astimezone(self._zone)

    def keys_overlapping(self, start: datetime, end: datetime) -> list[PartitionValue]:
        """Return the partitions whose windows overlap ``[start, end)`` (aware datetimes).

        Limited by this definition's ``start`` and ``end`` but not by the current time.
        """
        begin, finish = _aware(start, "start"), _aware(end, "end")
        result: list[PartitionValue] = []
        for window_start, window_end in self._windows(self._window_start_at(begin)):
            if window_start >= finish:
                break
            if window_end > begin:
                result.append(self._key_at(window_start))
        return result

    def _windows(self, first: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Yield ``(start, end)`` UTC instants from ``first`` until ``end`` (or forever)."""
        start = first
        while self._stop is None or start < self._stop:
            end = self._next_start(start)
            yield start, end
            start = end

    def _key_at(self, instant: datetime) -> PartitionValue:
        """Return the partition value of the window starting at the UTC ``instant``."""
        local = instant.astimezone(self._zone)
        return local if self.cadence == "hourly" else local.date()

    def _start_instant(self, value: object) -> datetime:
        """Check the type and alignment of a partition value and return its UTC start instant."""
        if self.cadence == "hourly":
            if not isinstance(value, datetime) or value.utcoffset() is None:
                msg = (
                    f"hourly partitions take an aware datetime, got {type(value).__name__} "
                    f"({format_partition_value(value)})"
                )
                raise PartitionKeyError(msg)
            instant = _to_utc(value)
            local = instant.astimezone(self._zone)
            if (local.minute, local.second, local.microsecond) != (0, 0, 0):
                msg = (
                    f"{format_partition_value(value)} is not the start of an hour "
                    f"in {self.timezone}"
                )
                raise PartitionKeyError(msg)
            return instant
        if isinstance(value, datetime) or not isinstance(value, date):
            msg = (
                f"{self.cadence} partitions take a date, got {type(value).__name__} "
                f"({format_partition_value(value)})"
            )
            raise PartitionKeyError(msg)
        day = date(value.year, value.month, value.day)
        problem = self._misalignment(day)
        if problem is not None:
            raise PartitionKeyError(problem)
        return self._day_start(day)

    def _misalignment(self, day: date) -> str | None:
        """Say why ``day`` cannot start a window of this cadence, or return ``None``."""
        if self.cadence == "weekly" and day.weekday() != self.week_start:
            return (
                f"{day.isoformat()} is a {_WEEKDAYS[day.weekday()]}; weekly partitions start on "
                f"{_WEEKDAYS[self.week_start]} (week_start={self.week_start})"
            )
        if self.cadence == "monthly" and day.day != 1:
            return f"{day.isoformat()} is not the first day of a month"
        return None

    def _boundary(self, value: object, what: str) -> datetime:
        """Turn the ``start``/``end`` option into a UTC instant on a window boundary."""
        if isinstance(value, datetime):
            if value.utcoffset() is None:
                instant = self._localize(value.replace(tzinfo=None), DefinitionError)
            else:
                instant = _to_utc(value)
            local = instant.astimezone(self._zone)
            aligned = (
                (local.minute, local.second, local.microsecond) == (0, 0, 0)
                if self.cadence == "hourly"
                else instant == self._day_start(local.date())
            )
            if not aligned:
                unit = "an hour" if self.cadence == "hourly" else "a day"
                msg = f"TimeWindowPartitions: {what} {value!r} is not the start of {unit}"
                raise DefinitionError(msg)
            value = local.date()
        elif isinstance(value, date):
            instant = self._day_start(value)
        else:
            msg = f"TimeWindowPartitions: {what} must be a date or datetime, got {value!r}"
            raise DefinitionError(msg)
        if self.cadence != "hourly":
            problem = self._misalignment(value)
            if problem is not None:
                msg = f"TimeWindowPartitions: {what}: {problem}"
                raise DefinitionError(msg)
        return instant

    def _day_start(self, day: date) -> datetime:
        """Return the UTC instant of local midnight (or the first moment after a gap at it)."""
        return _to_utc(datetime.combine(day, time(), tzinfo=self._zone))

    def _localize(self, wall: datetime, error: type[FlowStoneError]) -> datetime:
        """Return the UTC instant of a naive local wall time; raise if DST skips or repeats it."""
        earlier = _to_utc(wall.replace(tzinfo=self._zone, fold=0))
        later = _to_utc(wall.replace(tzinfo=self._zone, fold=1))
        if earlier.astimezone(self._zone).replace(tzinfo=None) != wall:
            msg = f"{wall.isoformat()} does not exist in {self.timezone} (the clocks skip it)"
            raise error(msg)
        if earlier != later:
            options = " or ".join(
                instant.astimezone(self._zone).isoformat(timespec="minutes")
                for instant in (earlier, later)
            )
            msg = f"{wall.isoformat()} happens twice in {self.timezone}; write {options}"
            raise error(msg)
        return earlier

    def _next_start(self, start: datetime) -> datetime:
        """Return the UTC instant where the window starting at ``start`` ends."""
        try:
            if self.cadence == "hourly":
                return self._next_hour(start)
            day = start.astimezone(self._zone).date()
            if self.cadence == "daily":
                return self._day_start(day + _DAY)
            if self.cadence == "weekly":
                return self._day_start(day + _DAYS_PER_WEEK * _DAY)
            year, month = divmod(day.year * _MONTHS_PER_YEAR + day.month, _MONTHS_PER_YEAR)
            return self._day_start(date(year, month + 1, 1))
        except (OverflowError, ValueError) as exc:
            msg = f"the window starting at {start.isoformat()} ends after the year 9999"
            raise PartitionKeyError(msg) from exc

    def _next_hour(self, start: datetime) -> datetime:
        """Return the next wall-clock hour start after the UTC instant ``start``."""
        candidate = start + _HOUR
        local = candidate.astimezone(self._zone)
        if (local.minute, local.second, local.microsecond) == (0, 0, 0):
            return candidate
        # An offset change of a fraction of an hour: search the local days exactly.
        day = start.astimezone(self._zone).date()
        for offset in range(_MAX_DAYS_TO_NEXT_HOUR):
            for instant in self._hour_starts(day + offset * _DAY):
                if instant > start:
                    return instant
        msg = f"no hour starts within {_MAX_DAYS_TO_NEXT_HOUR} days of {start.isoformat()}"
        raise PartitionKeyError(msg)

    def _hour_starts(self, day: date) -> list[datetime]:
        """Return the UTC instants at which a wall-clock hour of the local ``day`` starts."""
        starts: set[datetime] = set()
        for hour in range(_HOURS_PER_DAY):
            wall = datetime.combine(day, time(hour))
            for fold in (0, 1):
                instant = _to_utc(wall.replace(tzinfo=self._zone, fold=fold))
                if instant.astimezone(self._zone).replace(tzinfo=None) == wall:
                    starts.add(instant)
        return sorted(starts)

    def _window_start_at(self, instant: datetime) -> datetime:
        """Return the UTC start of the window containing ``instant`` (at least the first one)."""
        if instant <= self._first:
            return self._first
        local = instant.astimezone(self._zone)
        day = local.date()
        if self.cadence == "hourly":
            for candidate_day in (day, day - _DAY):
                earlier = [s for s in self._hour_starts(candidate_day) if s <= instant]
                if earlier:
                    return earlier[-1]
            return self._first
        if self.cadence == "weekly":
            day -= ((day.weekday() - self.week_start) % _DAYS_PER_WEEK) * _DAY
        elif self.cadence == "monthly":
            day = day.replace(day=1)
        return self._day_start(day)

    def _parse_hour(self, text: str) -> datetime:
        """Parse hourly text: local wall time, or with an explicit ``Z``/``+HH:MM`` offset."""
        if not _HOUR_TEXT.fullmatch(text):
            msg = (
                f"{text!r} is not an hour; hourly partitions are written YYYY-MM-DDTHH:MM "
                "(local time), optionally followed by Z or +HH:MM"
            )
            raise PartitionKeyError(msg)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:
            msg = f"{text!r} is not a valid date and time: {exc}"
            raise PartitionKeyError(msg) from exc
        if parsed.tzinfo is not None:
            return parsed
        return self._localize(parsed, PartitionKeyError).astimezone(self._zone)


def HourlyPartitions(  # noqa: N802 - reads like the class it builds
    *, start: date | datetime, end: date | datetime | None = None, timezone: str = DEFAULT_TIMEZONE
) -> TimeWindowPartitions:
    """Return hourly ``TimeWindowPartitions``; values are aware datetimes in ``timezone``."""
    return TimeWindowPartitions(cadence="hourly", start=start, end=end, timezone=timezone)


def DailyPartitions(  # noqa: N802 - reads like the class it builds
    *, start: date | datetime, end: date | datetime | None = None, timezone: str = DEFAULT_TIMEZONE
) -> TimeWindowPartitions:
    """Return daily ``TimeWindowPartitions``; values are dates."""
    return TimeWindowPartitions(cadence="daily", start=start, end=end, timezone=timezone)


def WeeklyPartitions(  # noqa: N802 - reads like the class it builds
    *,
    start: date | datetime,
    end: date | datetime | None = None,
    timezone: str = DEFAULT_TIMEZONE,
    week_start: int = DEFAULT_WEEK_START,
) -> TimeWindowPartitions:
    """Return weekly ``TimeWindowPartitions``; values are the dates weeks start on."""
    return TimeWindowPartitions(
        cadence="weekly", start=start, end=end, timezone=timezone, week_start=week_start
    )


def MonthlyPartitions(  # noqa: N802 - reads like the class it builds
    *, start: date | datetime, end: date | datetime | None = None, timezone: str = DEFAULT_TIMEZONE
) -> TimeWindowPartitions:
    """Return monthly ``TimeWindowPartitions``; values are first days of months."""
    return TimeWindowPartitions(cadence="monthly", start=start, end=end, timezone=timezone)


def _load_zone(name: object) -> ZoneInfo:
    """Return the ``ZoneInfo`` for an IANA name or raise ``DefinitionError``."""
    if not isinstance(name, str) or not name:
        msg = f"TimeWindowPartitions: timezone must be an IANA name such as 'UTC', got {name!r}"
        raise DefinitionError(msg)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        msg = f"TimeWindowPartitions: unknown timezone {name!r}; use an IANA name like 'UTC'"
        raise DefinitionError(msg) from exc


def _aware(value: object, what: str) -> datetime:
    """Return ``value`` as a UTC datetime; it must be an aware datetime."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        msg = f"{what} must be an aware datetime, got {value!r}"
        raise ValidationFailedError(msg)
    return _to_utc(value)


def _to_utc(value: datetime) -> datetime:
    """Convert an aware datetime to UTC; raise ``PartitionKeyError`` outside years 1-9999."""
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        msg = f"{value.isoformat()} is outside the supported range of years 1-9999 in UTC"
        raise PartitionKeyError(msg) from exc


def _aware_now(now: datetime | None) -> datetime:
    """Return ``now`` (or the current time) as a UTC datetime."""
    return datetime.now(UTC) if now is None else _aware(now, "now")
