"""Run-status sensors: react once to each run that failed or succeeded, or approval left waiting.

::

    @run_status_sensor(status="failed", assets=["orders"], interval=30)
    def orders_failed(event: RunStatusEvent) -> Notify:
        return Notify(title="orders failed", text=f"run {event.run_id} failed")

    @run_status_sensor(status="approval_waiting", waiting_longer_than=dt.timedelta(hours=4))
    def nudge(event: RunStatusEvent) -> RunRequest:
        return RunRequest(asset="reminders", partition=event.partition_key, run_key=event.run_key)

The function gets one ``RunStatusEvent`` at a time and returns a ``RunRequest`` (a run, once per
run key: use ``event.run_key``), a ``Notify`` (a notice through the notification channels, once
per event), a list of them, a ``SkipReason`` or ``None``. The cursor is the ``(time, id)`` of the
last event handed over; runs are only seen ``SETTLE_SECONDS`` after they finished, on the
database's clock (which writes ``finished_at``), so a run whose transaction commits up to that
long after its finish time is not passed over; one that commits later than that is. A new
failed/success sensor starts at its first poll (earlier runs are history, not news); an approval
sensor reports every approval still waiting longer than its threshold.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Final, Literal, get_args

from flowstone.errors import DefinitionError, ExecutionError, ValidationFailedError
from flowstone.scheduling.builtin import builtin_sensor
from flowstone.scheduling.requests import (
    Notify,
    RunRequest,
    SensorResult,
    SkipReason,
    asset_name_of,
)
from flowstone.scheduling.sensors import (
    DEFAULT_SENSOR_INTERVAL_SECONDS,
    Poller,
    RunStatusEvent,
    SensorContext,
    SensorFunction,
)

if TYPE_CHECKING:
    from flowstone.definitions import AssetFunction

RunStatusName = Literal["failed", "success", "approval_waiting"]
RUN_STATUSES: Final = frozenset(get_args(RunStatusName))
APPROVAL_WAITING: Final = "approval_waiting"
SETTLE_SECONDS: Final = 5
MAX_EVENTS_PER_POLL: Final = 100
CURSOR_SEPARATOR: Final = "|"

Reaction = RunRequest | Notify


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class RunStatusTrigger:
    """What a run-status sensor watches: a status, its assets, and an approval's threshold."""

    status: str
    assets: tuple[str, ...] = ()
    waiting_longer_than: dt.timedelta | None = None

    def __post_init__(self) -> None:
        if self.status not in RUN_STATUSES:
            raise DefinitionError(
                f"run_status_sensor status must be one of {sorted(RUN_STATUSES)}, "
                f"got {self.status!r}"
            )
        waiting = self.waiting_longer_than
        if self.status == APPROVAL_WAITING:
            if not isinstance(waiting, dt.timedelta) or waiting <= dt.timedelta(0):
                raise DefinitionError(
                    "an approval_waiting sensor needs a positive waiting_longer_than timedelta"
                )
        elif waiting is not None:
            raise DefinitionError("waiting_longer_than applies to approval_waiting sensors only")

    def until(self, tick_time: dt.datetime) -> dt.datetime:
        """The latest event time a poll at ``tick_time`` may report."""
        if self.waiting_longer_than is not None:
            return tick_time - self.waiting_longer_than
        return tick_time - dt.timedelta(seconds=SETTLE_SECONDS)


def format_cursor(at: dt.datetime, position_id: str) -> str:
    """The stored cursor: the event time in UTC, ISO 8601, and its id."""
    return f"{at.astimezone(dt.UTC).isoformat()}{CURSOR_SEPARATOR}{position_id}"


def parse_cursor(cursor: str | None) -> tuple[dt.datetime, str] | None:
    """The ``(time, id)`` a stored cursor names; ``None`` before the first one."""
    if not cursor:
        return None
    at, _, position_id = cursor.partition(CURSOR_SEPARATOR)
    try:
        moment = dt.datetime.fromisoformat(at)
    except ValueError as exc:
        raise ExecutionError(f"run-status sensor cursor {cursor[:80]!r} is not ours") from exc
    return moment, position_id


def _reactions(value: object) -> list[Reaction]:
    """Normalize what the function returned for one event (``SkipReason``/``None``: nothing)."""
    if value is None or isinstance(value, SkipReason):
        return []
    if isinstance(value, RunRequest | Notify):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        items = list(value)
        if all(isinstance(item, RunRequest | Notify) for item in items):
            return items
    raise ValidationFailedError(
        "a run-status sensor must return RunRequest, Notify, a list of them, a SkipReason or "
        f"None, got {type(value).__name__}"
    )


def _notice(notify: Notify, event: RunStatusEvent) -> Notify:
    """The notice with the event's key and facts filled in where the function left them out."""
    return dataclasses.replace(
        notify,
        key=event.run_key,
        asset=notify.asset or ", ".join(event.assets),
        partition=notify.partition or event.partition_key,
        status=notify.status or event.status,
        run_id=notify.run_id or event.run_id,
        title=notify.title or _default_title(event),
    )


def _default_title(event: RunStatusEvent) -> str:
    if event.approval_id is not None:
        return f"Approval {event.approval_id} is still waiting"
    return f"Run {event.status}: {', '.join(event.assets) or event.run_id}"


def _poller(trigger: RunStatusTrigger) -> Callable[[SensorFunction], Poller]:
    def wrap(fn: SensorFunction) -> Poller:
        def poll(context: SensorContext) -> SensorResult:
            feed = context.run_statuses
            if feed is None:
                raise ExecutionError("run-status sensors need a run-status feed")
            until = trigger.until(context.feed_now)
            after = parse_cursor(context.cursor)
            if after is None and trigger.status != APPROVAL_WAITING:
                return SensorResult(
                    skip_reason=SkipReason("started watching: runs that finish from now on"),
                    cursor=format_cursor(until, ""),
                )
            events = feed.events_after(
                trigger.status,
                after=after,
                until=until,
                assets=trigger.assets,
                limit=MAX_EVENTS_PER_POLL,
            )
            if not events:
                return SensorResult(skip_reason=SkipReason(f"no new {trigger.status} events"))
            requests: list[RunRequest] = []
            notices: list[Notify] = []
            for event in events:
                for reaction in _reactions(fn(event)):
                    if isinstance(reaction, Notify):
                        notices.append(_notice(reaction, event))
                    else:
                        requests.append(reaction)
            last = events[-1]
            cursor = format_cursor(last.at, last.position_id)
            if not requests and not notices:
                return SensorResult(
                    skip_reason=SkipReason(f"{len(events)} event(s), no reaction"), cursor=cursor
                )
            return SensorResult(run_requests=tuple(requests), notices=tuple(notices), cursor=cursor)

        return poll

    return wrap


def run_status_sensor(
    *,
    status: RunStatusName,
    assets: Sequence[str | AssetFunction] = (),
    waiting_longer_than: dt.timedelta | None = None,
    interval: int | dt.timedelta = DEFAULT_SENSOR_INTERVAL_SECONDS,
    name: str | None = None,
    description: str | None = None,
) -> Callable[[SensorFunction], SensorFunction]:
    """React to each run that ended ``status`` (or approval waiting too long), exactly once."""
    if isinstance(assets, str):
        raise DefinitionError("run_status_sensor assets must be a list of assets, not a string")
    watched = tuple(asset_name_of(a, what="asset watched by run_status_sensor") for a in assets)
    trigger = RunStatusTrigger(
        status=status, assets=watched, waiting_longer_than=waiting_longer_than
    )

    return builtin_sensor(
        _poller(trigger),
        name=name,
        interval=interval,
        description=description,
        parameter="the RunStatusEvent",
        watched_assets=watched,
    )
