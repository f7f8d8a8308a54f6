"""Sensors: ``@sensor`` polls a function at an interval, with a cursor stored between polls.

::

    @sensor(interval=30)
    def new_exports(context: SensorContext) -> SensorResult:
        done = int(context.cursor or 0)
        ready = [n for n in list_exports() if n > done]
        return SensorResult(
            run_requests=[RunRequest(asset="imports", partition=str(n), run_key=f"export-{n}")
                          for n in ready],
            cursor=str(max(ready, default=done)),
        )

A sensor returns run requests (each de-duplicated by its ``run_key``), a ``SkipReason``, a
``SensorResult`` (which can also move the cursor) or ``None``. Like ``@asset``, the decorator
attaches a ``SensorDefinition`` and returns the function unchanged; discovery collects it.
Built-in sensors (``file_sensor``, ``s3_sensor``, ``asset_sensor``) build the same definition
around a poller that keeps its own cursor.
"""

from __future__ import annotations

import datetime as dt
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

from flowstone.definitions import validate_asset_name
from flowstone.errors import DefinitionError, ExecutionError, FlowStoneError
from flowstone.scheduling.requests import SensorResult, as_sensor_result

SENSOR_ATTRIBUTE: Final = "__flowstone_sensor__"
DEFAULT_SENSOR_INTERVAL_SECONDS: Final = 30
MIN_SENSOR_INTERVAL_SECONDS: Final = 1
MAX_SENSOR_INTERVAL_SECONDS: Final = 7 * 24 * 3600

SensorFunction = Callable[..., Any]


@dataclass(frozen=True, kw_only=True, slots=True)
class MaterializationEvent:
    """One successful materialization, as an asset sensor sees it."""

    id: int
    asset: str
    partition_key: str
    run_id: str
    finished_at: dt.datetime | None

    @property
    def run_key(self) -> str:
        """A run key naming this materialization (unique per materialization)."""
        return f"materialization:{self.id}"


@runtime_checkable
class MaterializationFeed(Protocol):
    """Read access to successful materializations, given to sensors by the app that polls them."""

    def successes_after(self, asset: str, after_id: int, limit: int) -> list[MaterializationEvent]:
        """Successes of ``asset`` with an id above ``after_id``, oldest first, at most ``limit``.

        Only successes below the asset's first unfinished step above ``after_id`` are returned, so
        a step that finishes late is never skipped by a cursor that moved past it.
        """
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class RunStatusEvent:
    """A run that failed or succeeded, or an approval that waited too long, once per sensor.

    ``at`` is when the run finished (or the approval was requested); ``position`` is the
    ``(at, id)`` a run-status sensor's cursor keeps. ``assets`` are the failed steps' assets of a
    failed run, the selection of a successful one, the asset of a waiting approval.
    """

    status: str
    run_id: str
    at: dt.datetime
    position_id: str
    assets: tuple[str, ...] = ()
    partition_key: str = ""
    requested_by: str = ""
    approval_id: int | None = None
    message: str = ""

    @property
    def run_key(self) -> str:
        """A run key naming this event (unique per run and status, or per waiting approval)."""
        if self.approval_id is not None:
            return f"approval-waiting:{self.approval_id}"
        return f"run-{self.status}:{self.run_id}"


@runtime_checkable
class RunStatusFeed(Protocol):
    """Read access to finished runs and waiting approvals, given to run-status sensors."""

    def events_after(
        self,
        status: str,
        *,
        after: tuple[dt.datetime, str] | None,
        until: dt.datetime,
        assets: Sequence[str],
        limit: int,
    ) -> list[RunStatusEvent]:
        """Events of ``status`` positioned after ``after`` and at or before ``until``, in order.

        ``failed``/``success``: runs that finished so; ``approval_waiting``: approvals still
        undecided that were requested at or before ``until``. ``assets`` (if any) narrows them to
        runs with a step of, or approvals of, one of those assets.
        """
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class SensorContext:
    """What a sensor function sees: its name, the poll time, its cursor and the feeds it reads.

    ``feed_time`` is the poll time on the clock the feeds' times were written with (the
    database's, ADR 0022); ``tick_time`` is this process's, which may be off.
    """

    sensor_name: str
    tick_time: dt.datetime
    cursor: str | None
    materializations: MaterializationFeed | None = None
    run_statuses: RunStatusFeed | None = None
    feed_time: dt.datetime | None = None

    @property
    def feed_now(self) -> dt.datetime:
        """``feed_time`` when the app that polls gave one, else ``tick_time``."""
        return self.tick_time if self.feed_time is None else self.feed_time


@dataclass(frozen=True, kw_only=True, slots=True)
class SensorSpec:
    """Everything about a sensor except its function; immutable and validated."""

    name: str
    interval_seconds: int = DEFAULT_SENSOR_INTERVAL_SECONDS
    description: str = ""
    watched_assets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        validate_asset_name(self.name, what="sensor name")
        seconds = self.interval_seconds
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int)
            or not MIN_SENSOR_INTERVAL_SECONDS <= seconds <= MAX_SENSOR_INTERVAL_SECONDS
        ):
            raise DefinitionError(
                f"sensor {self.name!r}: interval must be {MIN_SENSOR_INTERVAL_SECONDS} to "
                f"{MAX_SENSOR_INTERVAL_SECONDS} whole seconds, got {seconds!r}"
            )
        for asset in self.watched_assets:
            validate_asset_name(asset, what=f"asset watched by sensor {self.name!r}")


Poller = Callable[[SensorContext], SensorResult]


@dataclass(frozen=True, kw_only=True, slots=True)
class SensorDefinition:
    """A sensor spec plus the function it calls and the poller that calls it."""

    spec: SensorSpec
    fn: SensorFunction = field(compare=False)
    poller: Poller = field(compare=False)

    @property
    def name(self) -> str:
        """The sensor's unique name."""
        return self.spec.name

    @property
    def module(self) -> str:
        """The module the sensor function was defined in."""
        return str(getattr(self.fn, "__module__", ""))

    def evaluate(self, context: SensorContext) -> SensorResult:
        """Poll once; user code raising is re-raised as ``ExecutionError`` from the original."""
        try:
            return as_sensor_result(self.poller(context))
        except FlowStoneError:
            raise
        except Exception as exc:  # the user-code boundary of a poll: re-raised as ours
            raise ExecutionError(
                f"sensor {self.name!r} raised {type(exc).__name__}: {exc}"
            ) from exc


def interval_seconds(interval: int | dt.timedelta, *, name: str) -> int:
    """Turn an ``interval`` option (seconds or a timedelta) into whole seconds."""
    if isinstance(interval, dt.timedelta):
        seconds = interval.total_seconds()
        if seconds != int(seconds):
            raise DefinitionError(f"sensor {name!r}: interval must be whole seconds")
        return int(seconds)
    return interval


def _check_one_parameter(fn: SensorFunction, name: str, what: str) -> None:
    parameters = list(inspect.signature(fn).parameters.values())
    if len(parameters) != 1 or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise DefinitionError(f"sensor {name!r}: the function takes one parameter ({what})")


def build_sensor_definition(
    fn: SensorFunction,
    *,
    name: str | None,
    interval: int | dt.timedelta,
    description: str | None,
    poller: Callable[[SensorFunction], Poller] | None = None,
    watched_assets: Sequence[str] = (),
    parameter: str = "the SensorContext",
) -> SensorDefinition:
    """Validate a sensor's options and build its definition; ``poller`` wraps ``fn`` (built-ins)."""
    if not callable(fn):
        raise DefinitionError(f"a sensor decorator must decorate a function, got {fn!r}")
    sensor_name = validate_asset_name(name if name is not None else fn.__name__, what="sensor")
    _check_one_parameter(fn, sensor_name, parameter)
    spec = SensorSpec(
        name=sensor_name,
        interval_seconds=interval_seconds(interval, name=sensor_name),
        description=description if description is not None else inspect.getdoc(fn) or "",
        watched_assets=tuple(watched_assets),
    )
    if poller is None:
        return SensorDefinition(
            spec=spec, fn=fn, poller=lambda context: as_sensor_result(fn(context))
        )
    return SensorDefinition(spec=spec, fn=fn, poller=poller(fn))


def attach_sensor(function: SensorFunction, definition: SensorDefinition) -> SensorFunction:
    """Attach ``definition`` to ``function`` and return the function unchanged."""
    setattr(function, SENSOR_ATTRIBUTE, definition)
    return function


def sensor(
    *,
    interval: int | dt.timedelta = DEFAULT_SENSOR_INTERVAL_SECONDS,
    name: str | None = None,
    description: str | None = None,
) -> Callable[[SensorFunction], SensorFunction]:
    """Poll the decorated ``fn(context: SensorContext)`` every ``interval`` (seconds)."""

    def decorate(function: SensorFunction) -> SensorFunction:
        definition = build_sensor_definition(
            function, name=name, interval=interval, description=description
        )
        return attach_sensor(function, definition)

    return decorate


def sensor_of(obj: object) -> SensorDefinition | None:
    """Return the sensor definition attached to ``obj`` by a sensor decorator, if any."""
    definition = getattr(obj, SENSOR_ATTRIBUTE, None)
    return definition if isinstance(definition, SensorDefinition) else None
