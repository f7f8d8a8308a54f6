"""Schedules: ``@schedule`` runs an asset selection on a cron, for a partition chosen per tick.

::

    @schedule(cron="30 1 * * *", timezone="Europe/Berlin", assets=[daily_revenue],
              include_upstreams=True, catch_up=dt.timedelta(days=2))
    def nightly_revenue(tick_time: dt.datetime) -> SkipReason | None:
        \"\"\"Yesterday's revenue, every night at 01:30 Berlin time.\"\"\"

The decorated function is called at each tick with the tick time (aware, in the schedule's
timezone) and may return a ``SkipReason`` to start nothing; its docstring describes the schedule.
Each selected asset runs for ``partition_fn(tick_time)`` when given, else for the **previous
window** of its time-window partitions (the last window that ended at or before the tick: the
previous day for a daily asset), else unpartitioned. With ``catch_up``, the ticks missed while
beat was down run at the next tick, each for its own tick time (see ``catchup``). Like
``@asset``, the decorator attaches a ``ScheduleDefinition`` and returns the function unchanged;
discovery collects it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from flowstone.definitions import AssetFunction, validate_asset_name
from flowstone.errors import DefinitionError, ExecutionError, FlowStoneError
from flowstone.partitions import TimeWindowPartitions
from flowstone.scheduling.catchup import NO_CATCH_UP, CatchUpPlan, CatchUpPolicy, plan_catch_up
from flowstone.scheduling.cron import CronFields, latest_tick, load_timezone, parse_cron
from flowstone.scheduling.requests import SkipReason, asset_name_of

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from flowstone.definitions import AssetDefinition
    from flowstone.partitions import PartitionValue

SCHEDULE_ATTRIBUTE: Final = "__flowstone_schedule__"
DEFAULT_SCHEDULE_TIMEZONE: Final = "UTC"
TICK_CLOCK_SKEW: Final = timedelta(seconds=2)
"""A tick message that arrives up to this long before its cron time counts as that tick."""
_JUST_BEFORE: Final = timedelta(microseconds=1)

ScheduleFunction = Callable[..., Any]
PartitionFunction = Callable[[datetime], object]


@dataclass(frozen=True, kw_only=True, slots=True)
class ScheduleSpec:
    """Everything about a schedule except its functions; immutable and validated."""

    name: str
    cron: str
    timezone: str = DEFAULT_SCHEDULE_TIMEZONE
    assets: tuple[str, ...]
    include_upstreams: bool = False
    description: str = ""
    catch_up: CatchUpPolicy | None = None

    def __post_init__(self) -> None:
        validate_asset_name(self.name, what="schedule name")
        parse_cron(self.cron)
        load_timezone(self.timezone)
        if not self.assets:
            raise DefinitionError(f"schedule {self.name!r} selects no assets")
        for name in self.assets:
            validate_asset_name(name, what=f"asset selected by schedule {self.name!r}")
        if len(set(self.assets)) != len(self.assets):
            raise DefinitionError(f"schedule {self.name!r} selects an asset twice")
        if not isinstance(self.include_upstreams, bool):
            raise DefinitionError(f"schedule {self.name!r}: include_upstreams must be a bool")
        if self.catch_up is not None and not isinstance(self.catch_up, CatchUpPolicy):
            raise DefinitionError(f"schedule {self.name!r}: catch_up must be a CatchUpPolicy")

    @property
    def cron_fields(self) -> CronFields:
        """The parsed cron expression."""
        return parse_cron(self.cron)

    @property
    def zone(self) -> ZoneInfo:
        """The timezone the cron expression is read in."""
        return load_timezone(self.timezone)


@dataclass(frozen=True, kw_only=True, slots=True)
class ScheduleTick:
    """One evaluated tick: the targets to run, or why nothing runs."""

    tick_time: datetime
    targets: tuple[tuple[str, PartitionValue | None], ...] = ()
    skip_reason: SkipReason | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ScheduleDefinition:
    """A schedule spec plus its tick function and optional partition function."""

    spec: ScheduleSpec
    fn: ScheduleFunction = field(compare=False)
    partition_fn: PartitionFunction | None = field(default=None, compare=False)
    wants_tick_time: bool = True

    @property
    def name(self) -> str:
        """The schedule's unique name."""
        return self.spec.name

    @property
    def module(self) -> str:
        """The module the schedule function was defined in."""
        return str(getattr(self.fn, "__module__", ""))

    def latest_tick(self, now: datetime) -> datetime:
        """The tick a message arriving at ``now`` stands for (the latest one not after it)."""
        return latest_tick(self.spec.cron_fields, self.spec.zone, now + TICK_CLOCK_SKEW)

    def plan_catch_up(self, *, last: datetime | None, current: datetime) -> CatchUpPlan:
        """The missed ticks to run before ``current``, given the ``last`` recorded tick.

        A schedule without ``catch_up`` never replays a tick.
        """
        if self.spec.catch_up is None:
            return NO_CATCH_UP
        return plan_catch_up(
            self.spec.cron_fields, self.spec.zone, self.spec.catch_up, last=last, current=current
        )

    def run_key(self, tick_time: datetime) -> str:
        """The key of a tick: its UTC instant, so each tick starts at most one run."""
        return tick_time.astimezone(UTC).isoformat()

    def evaluate(self, tick_time: datetime, assets: Mapping[str, AssetDefinition]) -> ScheduleTick:
        """Call the schedule's functions for ``tick_time`` and choose each asset's partition.

        User code raising is re-raised as ``ExecutionError`` from the original.
        """
        local = tick_time.astimezone(self.spec.zone)
        try:
            verdict = self.fn(local) if self.wants_tick_time else self.fn()
            chosen = None if self.partition_fn is None else self.partition_fn(local)
        except Exception as exc:  # the user-code boundary of a tick: re-raised as ours
            raise ExecutionError(
                f"schedule {self.name!r} raised {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(verdict, SkipReason):
            return ScheduleTick(tick_time=local, skip_reason=verdict)
        if verdict is not None:
            raise ExecutionError(
                f"schedule {self.name!r} returned {type(verdict).__name__}; "
                "return None to run or a SkipReason to skip"
            )
        targets: list[tuple[str, PartitionValue | None]] = []
        for name in self.spec.assets:
            partitions = assets[name].spec.partitions
            if self.partition_fn is not None or partitions is None:
                targets.append((name, chosen))  # type: ignore[arg-type]  # validated at launch
                continue
            if not isinstance(partitions, TimeWindowPartitions):
                raise ExecutionError(
                    f"schedule {self.name!r}: asset {name!r} is not partitioned by time "
                    "windows; give the schedule a partition_fn"
                )
            window = previous_window(partitions, local)
            if window is None:
                return ScheduleTick(
                    tick_time=local,
                    skip_reason=SkipReason(
                        f"asset {name!r} has no complete partition before {local.isoformat()}"
                    ),
                )
            targets.append((name, window))
        return ScheduleTick(tick_time=local, targets=tuple(targets))


def previous_window(partitions: TimeWindowPartitions, tick_time: datetime) -> PartitionValue | None:
    """The partition of the last window that ended at or before ``tick_time`` (aware), if any."""
    try:
        containing = partitions.keys_overlapping(tick_time - _JUST_BEFORE, tick_time)
        if not containing:
            return None
        start, end = partitions.window(containing[-1])
        if end <= tick_time:
            return containing[-1]
        earlier = partitions.keys_overlapping(start - _JUST_BEFORE, start)
    except FlowStoneError:  # a tick near the ends of datetime's range
        return None
    return earlier[-1] if earlier else None


def _wants_tick_time(fn: ScheduleFunction, name: str) -> bool:
    parameters = list(inspect.signature(fn).parameters.values())
    if len(parameters) > 1 or any(
        p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.KEYWORD_ONLY) for p in parameters
    ):
        raise DefinitionError(
            f"schedule {name!r}: the function takes the tick time as its only parameter "
            "(or no parameter)"
        )
    return bool(parameters)


def _catch_up_policy(
    name: str, catch_up: timedelta | None, max_catch_up_ticks: int | None
) -> CatchUpPolicy | None:
    """The catch-up options of ``@schedule`` as a policy; a bound without a window is an error."""
    if catch_up is None:
        if max_catch_up_ticks is not None:
            raise DefinitionError(f"schedule {name!r}: max_catch_up_ticks needs catch_up")
        return None
    try:
        if max_catch_up_ticks is None:
            return CatchUpPolicy(window=catch_up)
        return CatchUpPolicy(window=catch_up, max_ticks=max_catch_up_ticks)
    except DefinitionError as exc:
        raise DefinitionError(f"schedule {name!r}: {exc.message}") from exc


def build_schedule_definition(
    fn: ScheduleFunction,
    *,
    cron: str,
    assets: Sequence[str | AssetFunction],
    timezone: str = DEFAULT_SCHEDULE_TIMEZONE,
    name: str | None = None,
    partition_fn: PartitionFunction | None = None,
    include_upstreams: bool = False,
    description: str | None = None,
    catch_up: timedelta | None = None,
    max_catch_up_ticks: int | None = None,
) -> ScheduleDefinition:
    """Validate the options given to ``@schedule`` and build the definition for ``fn``."""
    if not callable(fn):
        raise DefinitionError(f"@schedule must decorate a function, got {fn!r}")
    schedule_name = validate_asset_name(name if name is not None else fn.__name__, what="schedule")
    if isinstance(assets, str) or not isinstance(assets, Iterable):
        raise DefinitionError(f"schedule {schedule_name!r}: assets must be a list")
    if partition_fn is not None and not callable(partition_fn):
        raise DefinitionError(f"schedule {schedule_name!r}: partition_fn must be callable")
    spec = ScheduleSpec(
        name=schedule_name,
        cron=cron,
        timezone=timezone,
        assets=tuple(asset_name_of(a, what=f"asset of schedule {schedule_name!r}") for a in assets),
        include_upstreams=include_upstreams,
        description=description if description is not None else inspect.getdoc(fn) or "",
        catch_up=_catch_up_policy(schedule_name, catch_up, max_catch_up_ticks),
    )
    return ScheduleDefinition(
        spec=spec,
        fn=fn,
        partition_fn=partition_fn,
        wants_tick_time=_wants_tick_time(fn, schedule_name),
    )


def schedule(
    *,
    cron: str,
    assets: Sequence[str | AssetFunction],
    timezone: str = DEFAULT_SCHEDULE_TIMEZONE,
    name: str | None = None,
    partition_fn: PartitionFunction | None = None,
    include_upstreams: bool = False,
    description: str | None = None,
    catch_up: timedelta | None = None,
    max_catch_up_ticks: int | None = None,
) -> Callable[[ScheduleFunction], ScheduleFunction]:
    """Run ``assets`` on ``cron`` (read in ``timezone``); the function may skip a tick.

    ``partition_fn(tick_time)`` chooses the partition; without it, time-window assets run their
    previous window and unpartitioned assets run unpartitioned. ``include_upstreams=True`` gives
    ``materialize_all`` semantics. ``cron`` has five fields or is ``@daily``, ``@hourly`` ...
    ``catch_up=timedelta(days=2)`` runs the ticks missed in the last two days (at most
    ``max_catch_up_ticks``, default 5) before the next tick; without it missed ticks are not run.
    """

    def decorate(function: ScheduleFunction) -> ScheduleFunction:
        definition = build_schedule_definition(
            function,
            cron=cron,
            assets=assets,
            timezone=timezone,
            name=name,
            partition_fn=partition_fn,
            include_upstreams=include_upstreams,
            description=description,
            catch_up=catch_up,
            max_catch_up_ticks=max_catch_up_ticks,
        )
        setattr(function, SCHEDULE_ATTRIBUTE, definition)
        return function

    return decorate


def schedule_of(obj: object) -> ScheduleDefinition | None:
    """Return the schedule definition attached to ``obj`` by ``@schedule``, if any."""
    definition = getattr(obj, SCHEDULE_ATTRIBUTE, None)
    return definition if isinstance(definition, ScheduleDefinition) else None
