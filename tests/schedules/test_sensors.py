"""@sensor: run requests de-duplicated by run key, a cursor that outlives the registry, failures."""

from __future__ import annotations

import dataclasses
import datetime as dt
from types import MappingProxyType

import pytest

from assets.models import Run
from flowstone.errors import DefinitionError, ValidationFailedError
from flowstone.registry import Registry, get_registry
from flowstone.scheduling import (
    RunRequest,
    SensorContext,
    SensorResult,
    SkipReason,
    sensor,
    sensor_of,
)
from flowstone.scheduling.requests import as_sensor_result
from flowstone.scheduling.sensors import Poller
from schedules import services
from schedules.models import SensorCursor, Tick
from tests.conftest import UseDefinitions
from tests.pipelines import scheduled
from tests.schedules.conftest import PIPELINE

NOW = dt.datetime(2025, 6, 1, 12, tzinfo=dt.UTC)


def test_the_decorator_attaches_a_definition() -> None:
    definition = sensor_of(scheduled.counting_sensor)
    assert definition is not None
    assert definition.spec.interval_seconds == 5
    assert definition.fn is scheduled.counting_sensor


@pytest.mark.parametrize(
    ("interval", "message"),
    [
        (0, "interval must be 1 to"),
        (dt.timedelta(milliseconds=1500), "whole seconds"),
        (True, "got True"),
    ],
)
def test_bad_intervals(interval: object, message: str) -> None:
    def fn(context: SensorContext) -> None: ...

    with pytest.raises(DefinitionError, match=message):
        sensor(interval=interval)(fn)  # type: ignore[arg-type]


def test_what_a_sensor_may_return() -> None:
    request = RunRequest(asset="a", run_key="k")
    assert as_sensor_result(None) == SensorResult()
    assert as_sensor_result(request).run_requests == (request,)
    assert as_sensor_result([request, request]).run_requests == (request, request)
    assert as_sensor_result(SkipReason("no")).skip_reason == SkipReason("no")
    with pytest.raises(ValidationFailedError, match="got dict"):
        as_sensor_result({"asset": "a"})
    with pytest.raises(ValidationFailedError, match="not a RunRequest"):
        as_sensor_result(["a"])
    with pytest.raises(ValidationFailedError, match="run_key must be a non-empty string"):
        RunRequest(asset="a", run_key="")


@pytest.mark.embedded
@pytest.mark.django_db
def test_the_cursor_survives_a_reloaded_registry(
    use_definitions: UseDefinitions, registry: Registry
) -> None:
    first = services.poll_sensor("counting_sensor", now=NOW)
    second = services.poll_sensor("counting_sensor", now=NOW + dt.timedelta(seconds=5))
    get_registry.cache_clear()
    use_definitions(PIPELINE)
    assert get_registry() is not registry
    third = services.poll_sensor("counting_sensor", now=NOW + dt.timedelta(seconds=10))

    assert [p.ticks[0].run_key for p in (first, second, third)] == [
        "count-1",
        "count-2",
        "count-3",
    ]
    assert all(p.cursor_moved for p in (first, second, third))
    assert SensorCursor.objects.current("counting_sensor") == "3"
    assert Run.objects.filter(requested_by="sensor:counting_sensor").count() == 3


@pytest.mark.embedded
@pytest.mark.django_db
def test_a_repeated_run_key_starts_no_second_run(registry: Registry) -> None:
    services.poll_sensor("counting_sensor", now=NOW)
    # A poll that saw the old cursor (a crash before the cursor was stored) repeats count-1.
    SensorCursor.objects.filter(name="counting_sensor").update(cursor="")
    repeated = services.poll_sensor("counting_sensor", now=NOW + dt.timedelta(seconds=5))

    assert not repeated.ticks[0].is_new
    assert Run.objects.count() == 1
    assert Tick.objects.filter(name="counting_sensor").count() == 1


@pytest.mark.embedded
@pytest.mark.django_db
def test_a_failing_sensor_records_a_failed_tick_and_keeps_its_cursor(registry: Registry) -> None:
    outcome = services.poll_sensor("broken_sensor", now=NOW)

    tick = Tick.objects.get(name="broken_sensor")
    assert (tick.status, tick.kind) == ("failed", "sensor")
    assert tick.reason == (
        "[execution_error] sensor 'broken_sensor' raised RuntimeError: "
        "broken at 2025-06-01T12:00:00+00:00"
    )
    assert outcome.ticks[0].status == "failed"
    assert not outcome.cursor_moved
    assert SensorCursor.objects.current("broken_sensor") is None


@pytest.mark.embedded
@pytest.mark.django_db
def test_a_run_request_for_an_unknown_asset_fails_its_tick(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    definition = registry.get_sensor("counting_sensor")
    monkeypatch.setattr(
        "schedules.services.ticks.get_registry",
        lambda: _with_poller(
            registry, lambda _c: SensorResult(run_requests=(RunRequest(asset="nope", run_key="x"),))
        ),
    )
    outcome = services.poll_sensor(definition.name, now=NOW)

    assert outcome.ticks[0].status == "failed"
    assert outcome.ticks[0].reason == "[asset_not_found] unknown asset 'nope'"


@pytest.mark.embedded
@pytest.mark.django_db
def test_unknown_sensors_and_schedules_are_validation_errors(registry: Registry) -> None:
    with pytest.raises(ValidationFailedError, match="unknown sensor 'nope'"):
        services.poll_sensor("nope")
    with pytest.raises(ValidationFailedError, match="unknown schedule 'nope'"):
        services.tick_schedule("nope")


def _with_poller(registry: Registry, poller: Poller) -> Registry:
    definition = dataclasses.replace(registry.get_sensor("counting_sensor"), poller=poller)
    return dataclasses.replace(registry, sensors=MappingProxyType({"counting_sensor": definition}))
