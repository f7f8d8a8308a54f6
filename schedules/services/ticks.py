"""Evaluating schedule ticks and sensor polls, each run started exactly once.

Every tick and run request is a ``Tick`` row unique by ``(kind, name, run_key)``. It is inserted
first (``ON CONFLICT DO NOTHING``); only the transaction that inserted it evaluates the tick and
creates the run, and the row, the run and its steps commit together. A second beat process, a
redelivered message or a sensor that reports the same run key again finds the row and does
nothing.

A schedule with ``catch_up`` first replays the ticks it missed since its last recorded tick, each
under its own run key (its own UTC instant), oldest first, and records the missed ticks it does
not replay as one ``missed`` tick; then it evaluates the current tick.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from django.db import transaction
from django.utils import timezone

from assets.services.engine import db_clock_offset
from flowstone.errors import FlowStoneError
from flowstone.notifications import Notice
from flowstone.notifications import channel_names as notification_channels
from flowstone.registry import get_registry
from flowstone.scheduling import (
    Notify,
    RunRequest,
    ScheduleDefinition,
    SensorContext,
    SensorDefinition,
    SkipReason,
)
from flowstone.scheduling.requests import MAX_REASON_LENGTH, bounded_run_key
from schedules.models import SensorCursor, Tick
from schedules.services.feed import DatabaseMaterializationFeed, DatabaseRunStatusFeed
from schedules.services.launch import StartedRun, start_run

logger = logging.getLogger(__name__)

SCHEDULE_TAG: Final = "flowstone/schedule"
CATCH_UP_TAG: Final = "flowstone/catch_up"
SENSOR_TAG: Final = "flowstone/sensor"
RUN_KEY_TAG: Final = "flowstone/run_key"
NO_RUN_REQUESTS: Final = "the sensor requested no runs"
MISSED_KEY_PREFIX: Final = "missed:"
NOTICE_KEY_PREFIX: Final = "notify:"


@dataclass(frozen=True, kw_only=True, slots=True)
class TickOutcome:
    """What one tick or run request became; ``is_new`` is false when it was already recorded."""

    name: str
    run_key: str
    is_new: bool
    status: str = ""
    run_id: str | None = None
    reason: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class PollOutcome:
    """One sensor poll: the outcome of each run request, and whether the cursor moved."""

    sensor: str
    ticks: list[TickOutcome] = field(default_factory=list)
    cursor_moved: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Notified:
    """A sensor's notice, recorded in the notification outbox for these channels."""

    channels: list[str]

    @property
    def reason(self) -> str:
        """What the tick history says."""
        return f"notified {', '.join(self.channels)}"


Launch = Callable[[], StartedRun | SkipReason | Notified]


def record_once(
    *,
    kind: Tick.Kind,
    name: str,
    run_key: str,
    tick_time: dt.datetime,
    launch: Launch,
    is_catch_up: bool = False,
    local_tick_time: str = "",
) -> TickOutcome:
    """Insert the tick; if this call inserted it, ``launch`` in the same transaction.

    ``launch`` returns the started run, a ``SkipReason`` or what it ``Notified``; a
    ``FlowStoneError`` it raises marks
    the tick ``failed`` with the error as the reason (the run, if any, is rolled back).
    """
    with transaction.atomic():
        tick_id = Tick.objects.insert_once(
            Tick(
                kind=kind,
                name=name,
                run_key=run_key,
                tick_time=tick_time,
                status=Tick.Status.REQUESTED,
                is_catch_up=is_catch_up,
                local_tick_time=local_tick_time,
            )
        )
        if tick_id is None:
            return TickOutcome(name=name, run_key=run_key, is_new=False)
        try:
            with transaction.atomic():
                launched = launch()
        except FlowStoneError as exc:
            reason = str(exc)[:MAX_REASON_LENGTH]
            Tick.objects.finish(tick_id, status=Tick.Status.FAILED, reason=reason)
            logger.warning("%s %s tick %s failed: %s", kind, name, run_key, reason)
            return TickOutcome(
                name=name, run_key=run_key, is_new=True, status=Tick.Status.FAILED, reason=reason
            )
        if isinstance(launched, SkipReason | Notified):
            status = (
                Tick.Status.SKIPPED if isinstance(launched, SkipReason) else Tick.Status.NOTIFIED
            )
            Tick.objects.finish(tick_id, status=status, reason=launched.reason)
            return TickOutcome(
                name=name, run_key=run_key, is_new=True, status=status, reason=launched.reason
            )
        Tick.objects.finish(
            tick_id,
            run_id=launched.run_id,
            selection=launched.selection,
            partition_keys=launched.partition_keys,
        )
    logger.info(
        "%s %s tick %s requested run %s",
        kind,
        name,
        run_key,
        launched.run_id,
        extra={"run_id": launched.run_id},
    )
    return TickOutcome(
        name=name,
        run_key=run_key,
        is_new=True,
        status=Tick.Status.REQUESTED,
        run_id=launched.run_id,
    )


def evaluate_schedule_tick(
    definition: ScheduleDefinition, tick_time: dt.datetime, *, is_catch_up: bool = False
) -> TickOutcome:
    """Evaluate one tick of a schedule (at most once per tick time) and start its run.

    The schedule's functions receive ``tick_time`` in the schedule's timezone, also for a
    catch-up tick, so "yesterday" is the day before that tick; the tick records what they got.
    """
    run_key = definition.run_key(tick_time)
    tags = {SCHEDULE_TAG: definition.name, RUN_KEY_TAG: run_key}
    if is_catch_up:
        tags[CATCH_UP_TAG] = "true"

    def launch() -> StartedRun | SkipReason:
        evaluated = definition.evaluate(tick_time, get_registry().assets)
        if evaluated.skip_reason is not None:
            return evaluated.skip_reason
        return start_run(
            evaluated.targets,
            include_upstreams=definition.spec.include_upstreams,
            tags=tags,
            requested_by=f"schedule:{definition.name}",
        )

    return record_once(
        kind=Tick.Kind.SCHEDULE,
        name=definition.name,
        run_key=run_key,
        tick_time=tick_time,
        launch=launch,
        is_catch_up=is_catch_up,
        local_tick_time=tick_time.astimezone(definition.spec.zone).isoformat(),
    )


def _record_missed(
    definition: ScheduleDefinition, *, last: dt.datetime, reason: str
) -> TickOutcome:
    """Record the missed ticks that catch-up does not run as one tick, at the newest (``last``).

    Keyed by ``last``, which every evaluation of the same gap computes alike.
    """
    run_key = f"{MISSED_KEY_PREFIX}{definition.run_key(last)}"
    tick_id = Tick.objects.insert_once(
        Tick(
            kind=Tick.Kind.SCHEDULE,
            name=definition.name,
            run_key=run_key,
            tick_time=last,
            status=Tick.Status.MISSED,
            reason=reason[:MAX_REASON_LENGTH],
            is_catch_up=True,
            local_tick_time=last.astimezone(definition.spec.zone).isoformat(),
        )
    )
    if tick_id is not None:
        logger.warning("schedule %s: %s", definition.name, reason)
    return TickOutcome(
        name=definition.name,
        run_key=run_key,
        is_new=tick_id is not None,
        status=Tick.Status.MISSED,
        reason=reason,
    )


def catch_up_schedule(definition: ScheduleDefinition, current: dt.datetime) -> list[TickOutcome]:
    """Replay the ticks of ``definition`` missed before ``current``, oldest first.

    The last recorded tick comes from the ``tick_history`` index. Each replayed tick is inserted
    under its own run key like any tick, so racing evaluations replay each one once. A schedule
    without ``catch_up`` replays nothing and reads nothing.
    """
    policy = definition.spec.catch_up
    if policy is None:
        return []
    last = Tick.objects.last_schedule_tick(definition.name, before=current)
    plan = definition.plan_catch_up(last=last, current=current)
    outcomes: list[TickOutcome] = []
    first, newest = plan.not_run_first, plan.not_run_last
    if first is not None and newest is not None:
        zone = definition.spec.zone
        reason = (
            f"missed ticks from {first.astimezone(zone).isoformat()} to "
            f"{newest.astimezone(zone).isoformat()} were not run: older than the catch-up "
            f"window ({policy.window_text}) or beyond max_catch_up_ticks ({policy.max_ticks})"
        )
        outcomes.append(_record_missed(definition, last=newest, reason=reason))
    outcomes.extend(
        evaluate_schedule_tick(definition, tick, is_catch_up=True) for tick in plan.ticks
    )
    return outcomes


def tick_schedule(name: object, *, now: dt.datetime | None = None) -> TickOutcome:
    """Evaluate the tick of schedule ``name`` that a beat message sent at ``now`` stands for.

    With ``catch_up``, the ticks it missed run first (see ``catch_up_schedule``).
    """
    definition = get_registry().get_schedule(name)
    moment = timezone.now() if now is None else now
    current = definition.latest_tick(moment)
    catch_up_schedule(definition, current)
    return evaluate_schedule_tick(definition, current)


def _request_run(
    definition: SensorDefinition, request: RunRequest, now: dt.datetime
) -> TickOutcome:
    def launch() -> StartedRun:
        return start_run(
            [(request.asset, request.partition)],
            include_upstreams=request.include_upstreams,
            tags={**request.tags, SENSOR_TAG: definition.name, RUN_KEY_TAG: request.run_key},
            requested_by=f"sensor:{definition.name}",
        )

    return record_once(
        kind=Tick.Kind.SENSOR,
        name=definition.name,
        run_key=request.run_key,
        tick_time=now,
        launch=launch,
    )


def numbered_notice_keys(notices: Sequence[Notify]) -> list[str]:
    """Each notice's key, with ``#<n>`` on the n-th repeat of a key in one poll.

    Numbering keeps every notice of one event (two ``Notify`` for one run); a repeated poll
    numbers them alike, so each is still recorded once.
    """
    seen: Counter[str] = Counter()
    keys = []
    for notify in notices:
        repeat = seen[notify.key]
        seen[notify.key] += 1
        keys.append(f"{notify.key}#{repeat}" if repeat else notify.key)
    return keys


def _notify(
    definition: SensorDefinition, notify: Notify, key: str, now: dt.datetime
) -> TickOutcome:
    """Record a sensor's notice in the notification outbox, once per its (numbered) key.

    Its tick's run key is ``notify:<key>``: a run request for the same event (its run key is the
    event's too) must not make the notice look like a repeat and drop it.
    """
    from approvals import notifications  # noqa: PLC0415  # the outbox's app

    def launch() -> Notified | SkipReason:
        notice = Notice(
            event=f"sensor:{definition.name}",
            title=notify.title,
            text=notify.text,
            asset=notify.asset,
            partition=notify.partition,
            status=notify.status,
            run_id=notify.run_id,
            link=_link(notify),
        )
        recorded = notifications.record(f"sensor:{definition.name}:{key}", notice)
        if not recorded:
            return SkipReason("no notification channel is configured")
        return Notified(channels=notification_channels())

    return record_once(
        kind=Tick.Kind.SENSOR,
        name=definition.name,
        run_key=bounded_run_key(NOTICE_KEY_PREFIX, key),
        tick_time=now,
        launch=launch,
    )


def _link(notify: Notify) -> str:
    """The admin page of the notice's approval or run, when a base URL is configured."""
    from approvals.notifications import admin_link  # noqa: PLC0415  # the outbox's app

    if notify.key.startswith("approval-waiting:"):
        return admin_link("admin:approvals_approval_decide", int(notify.key.partition(":")[2]))
    return admin_link("admin:assets_run_change", notify.run_id) if notify.run_id else ""


def _record_poll(
    definition: SensorDefinition, now: dt.datetime, status: Tick.Status, reason: str
) -> TickOutcome:
    """Record a poll that requested nothing (skipped) or raised (failed), keyed by its time."""
    run_key = f"{status}:{now.astimezone(dt.UTC).isoformat()}"
    tick_id = Tick.objects.insert_once(
        Tick(
            kind=Tick.Kind.SENSOR,
            name=definition.name,
            run_key=run_key,
            tick_time=now,
            status=status,
            reason=reason[:MAX_REASON_LENGTH],
        )
    )
    if status == Tick.Status.FAILED:
        logger.warning("sensor %s failed: %s", definition.name, reason)
    return TickOutcome(
        name=definition.name,
        run_key=run_key,
        is_new=tick_id is not None,
        status=status,
        reason=reason,
    )


def poll_sensor(name: object, *, now: dt.datetime | None = None) -> PollOutcome:
    """Poll sensor ``name`` once: record its run requests and notices (once per key), then cursor.

    The cursor is stored after the requests, with compare-and-set, so a crash in between repeats
    requests that their run keys then drop, and of two overlapping polls only one moves it.
    """
    definition = get_registry().get_sensor(name)
    moment = timezone.now() if now is None else now
    cursor = SensorCursor.objects.current(definition.name)
    context = SensorContext(
        sensor_name=definition.name,
        tick_time=moment,
        cursor=cursor,
        materializations=DatabaseMaterializationFeed(),
        run_statuses=DatabaseRunStatusFeed(),
        feed_time=moment + db_clock_offset(),
    )
    try:
        result = definition.evaluate(context)
    except FlowStoneError as exc:
        failed = _record_poll(definition, moment, Tick.Status.FAILED, str(exc))
        return PollOutcome(sensor=definition.name, ticks=[failed])
    ticks = [_request_run(definition, request, moment) for request in result.run_requests]
    ticks += [
        _notify(definition, notify, key, moment)
        for notify, key in zip(result.notices, numbered_notice_keys(result.notices), strict=True)
    ]
    if not result.run_requests and not result.notices:
        skipped = result.skip_reason.reason if result.skip_reason else NO_RUN_REQUESTS
        ticks.append(_record_poll(definition, moment, Tick.Status.SKIPPED, skipped))
    moved = result.cursor is not None and result.cursor != cursor
    if moved and result.cursor is not None:
        moved = SensorCursor.objects.compare_and_set(
            definition.name, expected=cursor, new=result.cursor
        )
    return PollOutcome(sensor=definition.name, ticks=ticks, cursor_moved=moved)
