"""Lifecycle signals are sent after commit, with the step's identifiers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import flowstone
from flowstone import signals
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


@pytest.fixture
def events(use_definitions: UseDefinitions) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    use_definitions("tests.pipelines.diamond")
    seen: list[tuple[str, dict[str, Any]]] = []

    def receiver(sender: str, **kwargs: Any) -> None:
        kwargs.pop("signal")
        seen.append((sender, kwargs))

    names = ["run_started", "run_finished", "step_started", "step_succeeded", "step_failed"]
    for name in names:
        getattr(signals, name).connect(receiver, dispatch_uid=f"test.{name}")
    yield seen
    for name in names:
        getattr(signals, name).disconnect(dispatch_uid=f"test.{name}")


def test_a_run_sends_start_and_stop_events_in_order(
    events: list[tuple[str, dict[str, Any]]], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        result = flowstone.materialize_all("left", "eu")
    assert [name for name, _ in events] == [
        "flowstone.run.start",
        "flowstone.materialization.start",
        "flowstone.materialization.stop",
        "flowstone.materialization.start",
        "flowstone.materialization.stop",
        "flowstone.run.stop",
    ]
    started = events[1][1]
    assert started["run_id"] == result.run_id
    assert (started["asset"], started["partition"], started["attempt"]) == ("source", "s:eu", 1)
    assert events[2][1]["duration"] >= 0
    assert events[-1][1] == {
        "event": "flowstone.run.stop",
        "run_id": result.run_id,
        "status": "success",
    }


def test_nothing_is_sent_before_commit(events: list[tuple[str, dict[str, Any]]]) -> None:
    flowstone.materialize_all("left", "eu")  # the test's transaction never commits
    assert events == []


def test_a_failure_sends_the_exception_event_with_the_error(
    events: list[tuple[str, dict[str, Any]]], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        flowstone.materialize_all("broken", "us")
    failed = [payload for name, payload in events if name == "flowstone.materialization.exception"]
    assert len(failed) == 1
    assert failed[0]["asset"] == "broken"
    assert failed[0]["error"]["kind"] == "execution_error"
