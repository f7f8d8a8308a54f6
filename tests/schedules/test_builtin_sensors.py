"""Built-in sensors: file arrival in a directory, objects under an S3 prefix (a real S3 server
on loopback), and new successful materializations of an asset."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType

import pytest

import flowstone
from assets import services as run_services
from flowstone.registry import Registry
from flowstone.scheduling import (
    FileArrival,
    MaterializationEvent,
    Notify,
    RunRequest,
    S3Arrival,
    SensorResult,
    asset_sensor,
    builtin,
    file_sensor,
    s3_sensor,
    sensor_of,
)
from schedules import services
from schedules.models import SensorCursor, Tick
from tests.s3 import MotoServer

NOW = dt.datetime(2025, 6, 1, 12, tzinfo=dt.UTC)
MTIME_NS = 1_750_000_000_000_000_000

InstallSensor = Callable[[Callable[..., object]], str]


@pytest.fixture
def install_sensor(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> InstallSensor:
    """Add a sensor function to the scheduling pipeline's registry; return the sensor's name."""

    def install(fn: Callable[..., object]) -> str:
        definition = sensor_of(fn)
        assert definition is not None
        patched = dataclasses.replace(
            registry, sensors=MappingProxyType({definition.name: definition})
        )
        monkeypatch.setattr("schedules.services.ticks.get_registry", lambda: patched)
        return definition.name

    return install


def _poll(name: str, seconds: int = 0) -> list[tuple[str, str]]:
    outcome = services.poll_sensor(name, now=NOW + dt.timedelta(seconds=seconds))
    return [
        (tick.status, tick.run_key if tick.status == "requested" else tick.reason)
        for tick in outcome.ticks
    ]


def _touch(path: Path, mtime_ns: int) -> None:
    path.write_text(path.name)
    os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.mark.embedded
@pytest.mark.django_db
def test_file_arrival_reports_each_new_file_once(
    tmp_path: Path, install_sensor: InstallSensor
) -> None:
    inbox = tmp_path / "inbox"
    seen: list[list[str]] = []

    @file_sensor(directory=inbox, pattern="*.csv", interval=2)
    def inbox_files(files: list[FileArrival]) -> list[RunRequest]:
        seen.append([f.name for f in files])
        return [RunRequest(asset="s_plain", run_key=f.run_key) for f in files]

    name = install_sensor(inbox_files)
    assert _poll(name) == [("skipped", f"directory {inbox} does not exist")]
    inbox.mkdir()
    assert _poll(name, 1) == [("skipped", f"no new files matching '*.csv' in {inbox}")]
    _touch(inbox / "b.csv", MTIME_NS)
    _touch(inbox / "a.csv", MTIME_NS)
    _touch(inbox / "notes.txt", MTIME_NS)
    assert _poll(name, 2) == [
        ("requested", f"file:a.csv@{MTIME_NS}"),
        ("requested", f"file:b.csv@{MTIME_NS}"),
    ]
    assert json.loads(SensorCursor.objects.current(name) or "") == {
        "stamp": f"{MTIME_NS:024d}",
        "names": ["a.csv", "b.csv"],
    }
    assert _poll(name, 3)[0][0] == "skipped"
    _touch(inbox / "c.csv", MTIME_NS)  # same mtime as the newest seen: still new
    _touch(inbox / "d.csv", MTIME_NS + 1)
    assert _poll(name, 4) == [
        ("requested", f"file:c.csv@{MTIME_NS}"),
        ("requested", f"file:d.csv@{MTIME_NS + 1}"),
    ]
    _touch(inbox / "a.csv", MTIME_NS + 5)  # rewritten: a new version
    assert _poll(name, 5) == [("requested", f"file:a.csv@{MTIME_NS + 5}")]
    assert seen == [["a.csv", "b.csv"], ["c.csv", "d.csv"], ["a.csv"]]
    assert Tick.objects.filter(name=name, status="requested").count() == 5


def test_file_sensor_patterns_must_stay_inside_the_directory(tmp_path: Path) -> None:
    with pytest.raises(flowstone.errors.DefinitionError, match="relative glob"):
        file_sensor(directory=tmp_path, pattern="/etc/*")
    with pytest.raises(flowstone.errors.DefinitionError, match="may not leave the directory"):
        file_sensor(directory=tmp_path, pattern="../*")


@pytest.mark.embedded
@pytest.mark.django_db
def test_s3_objects_under_a_prefix_on_a_real_s3_server(
    moto_server: MotoServer, install_sensor: InstallSensor
) -> None:
    bucket = moto_server.create_bucket()
    client = moto_server.client()

    @s3_sensor(bucket=bucket, prefix="incoming/", client_options=moto_server.boto3_options())
    def incoming(objects: list[S3Arrival]) -> list[RunRequest]:
        return [
            RunRequest(asset="s_regional", partition=o.key.split("/")[1], run_key=o.run_key)
            for o in objects
        ]

    name = install_sensor(incoming)
    assert _poll(name) == [("skipped", f"no new objects under s3://{bucket}/incoming/")]
    client.put_object(Bucket=bucket, Key="incoming/eu/orders.json", Body=b"{}")
    client.put_object(Bucket=bucket, Key="elsewhere/us/orders.json", Body=b"{}")
    first = _poll(name, 1)
    client.put_object(Bucket=bucket, Key="incoming/us/orders.json", Body=b"{}")
    second = _poll(name, 2)
    third = _poll(name, 3)

    assert [status for status, _ in first] == ["requested"]
    assert first[0][1].startswith(f"s3:{bucket}/incoming/eu/orders.json@")
    assert [key.split("@")[0] for _, key in second] == [f"s3:{bucket}/incoming/us/orders.json"]
    assert third[0][0] == "skipped"
    ticks = Tick.objects.filter(name=name, status="requested").order_by("id")
    assert [t.partition_keys for t in ticks] == [["s:eu"], ["s:us"]]


@pytest.mark.embedded
@pytest.mark.django_db
def test_asset_sensor_reports_each_new_success_in_order(install_sensor: InstallSensor) -> None:
    @asset_sensor(asset="s_plain", interval=10)
    def plain_done(events: list[MaterializationEvent]) -> list[RunRequest]:
        return [RunRequest(asset="s_regional", partition="eu", run_key=e.run_key) for e in events]

    name = install_sensor(plain_done)
    assert _poll(name) == [("skipped", "no new successful materialization of 's_plain'")]
    first = flowstone.materialize("s_plain").run_id
    second = flowstone.materialize("s_plain").run_id
    ids = [run_services.steps_of_run(r)[0].pk for r in (first, second)]
    assert _poll(name, 1) == [("requested", f"materialization:{i}") for i in ids]
    assert SensorCursor.objects.current(name) == str(ids[1])

    # A step created before a later success, still unfinished, holds the cursor back...
    pending = flowstone.materialize_async("s_plain")
    third = flowstone.materialize("s_plain").run_id
    third_id = run_services.steps_of_run(third)[0].pk
    assert _poll(name, 2)[0][0] == "skipped"
    # ...until it ends; then the later success is reported, and nothing is missed.
    run_services.cancel_run(pending.run_id)
    assert _poll(name, 3) == [("requested", f"materialization:{third_id}")]


def test_a_builtin_sensors_notices_survive_the_cursor_hand_over() -> None:
    """The arrivals' cursor is added to what the function returned, notices included."""
    notice = Notify(text="a file arrived", key="file:a")
    result = builtin._handing_over(  # the hand-over every built-in sensor uses
        lambda _arrivals: SensorResult(notices=(notice,)), ["a"], "cursor-after-a", "nothing new"
    )
    assert (result.notices, result.cursor) == ((notice,), "cursor-after-a")
