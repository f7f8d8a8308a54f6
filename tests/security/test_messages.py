"""Hostile task messages: non-JSON content types, oversized bodies and hostile identifiers.

The content-type and size tests publish by hand to a real worker process (the pattern of
``tests/assets/test_celery_execution.py``); the identifier tests call the worker's message
handler in this process, which is the same code the task runs.
"""

from __future__ import annotations

import json
import pickle
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Exchange, Producer, Queue
from pytest_django import Settings

import flowstone
from assets.models import Materialization, RejectedMessage
from flowstone.execution.worker import MAX_RECORDED_PAYLOAD, handle_step_message
from flowstone.status import RunStatus, StepStatus
from tests.workers import Services, broker_url, flowstone_settings_for, purge, worker_stack

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WAIT = 90
FIVE_MEGABYTES = 5 * 1024 * 1024


class _OpensAFile:
    """Unpickling this creates ``path``: proof that a pickle body was deserialized."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Services]:
    with worker_stack(settings, tmp_path) as started:
        yield started


def _publish(body: bytes, content_type: str) -> str:
    task_id = str(uuid.uuid4())
    headers = {"lang": "py", "task": "flowstone.run_step", "id": task_id, "root_id": task_id}
    with Connection(broker_url()) as conn:
        exchange = Exchange("flowstone", type="direct")
        Producer(conn.channel()).publish(
            body,
            exchange=exchange,
            routing_key="flowstone",
            declare=[Queue("flowstone", exchange, routing_key="flowstone")],
            content_type=content_type,
            content_encoding="utf-8" if content_type == "application/json" else "binary",
            headers=headers,
        )
    return task_id


def _rejections(count: int) -> list[RejectedMessage]:
    deadline = time.monotonic() + 30
    while RejectedMessage.objects.count() < count and time.monotonic() < deadline:
        time.sleep(0.2)
    return list(RejectedMessage.objects.order_by("id"))


def test_pickle_and_yaml_messages_are_refused_recorded_and_never_executed(
    stack: Services, tmp_path: Path
) -> None:
    worker = stack.start_worker("w1", queues="flowstone")
    run_id = flowstone.materialize_async("c_routed", "eu").run_id  # its queue has no worker
    payload = {"run_id": run_id, "asset": "c_routed", "partition": "s:eu"}
    proof = tmp_path / "unpickled"
    pickle_id = _publish(
        pickle.dumps(([], payload, {"callbacks": [_OpensAFile(proof)]})),
        "application/x-python-serialize",
    )
    yaml_body = (
        "- []\n"
        f"- {{run_id: '{run_id}', asset: c_routed, partition: 's:eu'}}\n"
        "- {callbacks: !!python/object/apply:os.system ['touch " + str(proof) + "']}\n"
    )
    yaml_id = _publish(yaml_body.encode(), "application/x-yaml")

    rejected = _rejections(2)
    assert {r.task_id: r.content_type for r in rejected} == {
        pickle_id: "application/x-python-serialize",
        yaml_id: "application/x-yaml",
    }
    assert all("refused message" in r.reason for r in rejected)
    assert not proof.exists()
    assert Materialization.objects.get(run_id=run_id).status == StepStatus.QUEUED
    assert not [e for e in stack.executions() if e["asset"] == "c_routed"]
    assert flowstone.materialize_async("c_source", "us").wait(WAIT).status == RunStatus.SUCCESS
    assert worker.poll() is None


def test_an_oversized_task_payload_is_refused_and_recorded_truncated(stack: Services) -> None:
    worker = stack.start_worker("w1", queues="flowstone")
    run_id = flowstone.materialize_async("c_routed", "eu").run_id
    huge = {"run_id": run_id, "asset": "c_routed", "partition": "s:" + "x" * FIVE_MEGABYTES}
    task_id = _publish(json.dumps([[], huge, {}]).encode(), "application/json")

    (rejected,) = _rejections(1)
    assert rejected.task_id == task_id
    assert "payload field 'partition' is longer than 512 characters" in rejected.reason
    assert len(rejected.reason) < 1000
    assert len(rejected.payload) <= MAX_RECORDED_PAYLOAD
    assert Materialization.objects.get(run_id=run_id).status == StepStatus.QUEUED
    assert flowstone.materialize_async("c_source", "eu").wait(WAIT).status == RunStatus.SUCCESS
    assert worker.poll() is None


@pytest.fixture
def queued_step(settings: Settings, tmp_path: Path) -> Materialization:
    settings.FLOWSTONE = flowstone_settings_for(tmp_path / "data")
    run_id = flowstone.materialize_async("c_routed", "eu").run_id
    purge(broker_url())
    return Materialization.objects.get(run_id=run_id)


def _hostile_payloads(run_id: str) -> list[tuple[dict[str, Any], str]]:
    """(payload, text the rejection reason must contain)."""
    return [
        ({"run_id": run_id, "asset": "__import__('os')", "partition": "s:eu"}, "valid asset"),
        ({"run_id": run_id, "asset": "../../etc/passwd", "partition": "s:eu"}, "valid asset"),
        ({"run_id": run_id, "asset": "c_routed\x00", "partition": "s:eu"}, "valid asset"),
        ({"run_id": run_id, "asset": "a" * 129, "partition": "s:eu"}, "longer than 128"),
        ({"run_id": run_id, "asset": "c_routed", "partition": "s:eu\x00"}, "NUL"),
        ({"run_id": run_id, "asset": "c_routed", "partition": "s:../../etc"}, "has no step"),
        ({"run_id": run_id, "asset": "c_routed", "partition": "p:os.system"}, "validation"),
        ({"run_id": "' OR 1=1 --", "asset": "c_routed", "partition": "s:eu"}, "not a UUID"),
        ({"run_id": run_id + "\x00", "asset": "c_routed", "partition": "s:eu"}, "not a UUID"),
        ({"run_id": {"$gt": ""}, "asset": "c_routed", "partition": "s:eu"}, "must be a string"),
        ({"run_id": run_id, "asset": "c_routed", "partition": 7}, "must be a string"),
        ({"run_id": run_id, "asset": "c_routed"}, "must be exactly"),
    ]


def test_hostile_identifiers_in_payloads_are_recorded_and_resolve_nothing(
    queued_step: Materialization,
) -> None:
    modules = set(sys.modules)
    cases = _hostile_payloads(str(queued_step.run_id))
    for payload, _ in cases:
        assert handle_step_message([], payload, owner="test", task_id="t") is None
    reasons = list(RejectedMessage.objects.order_by("id").values_list("reason", flat=True))
    assert len(reasons) == len(cases)
    for (payload, expected), reason in zip(cases, reasons, strict=True):
        assert expected in reason, (payload, reason)
    assert set(sys.modules) == modules
    queued_step.refresh_from_db()
    assert (queued_step.status, queued_step.attempt) == (StepStatus.QUEUED, 0)


def test_positional_arguments_are_refused(queued_step: Materialization) -> None:
    payload = {"run_id": str(queued_step.run_id), "asset": "c_routed", "partition": "s:eu"}
    assert handle_step_message(["os.system"], payload, owner="test", task_id="t") is None
    (rejected,) = RejectedMessage.objects.all()
    assert "keyword arguments only" in rejected.reason
