"""Execution on real Celery worker processes over a real broker and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import pickle
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from django.db.models import Count
from django.test.utils import CaptureQueriesContext
from kombu import Connection, Exchange, Producer, Queue
from pytest_django import Settings

import flowstone
from assets.models import Materialization, RejectedMessage
from assets.services import publish_steps, step_payload
from flowstone.execution.worker import handle_step_message
from flowstone.partitions import encode_partition_key
from flowstone.status import RunStatus, StepStatus
from lineage.models import AuditEvent, LineageEdge
from tests.workers import (
    Services,
    amqp_url,
    broker_url,
    database_url,
    drive,
    flowstone_settings_for,
    most_at_once,
    purge,
    running_services,
    worker_stack,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WAIT = 90


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Services]:
    """Matching settings here and in the worker processes; queues purged; workers stopped after."""
    with worker_stack(settings, tmp_path) as started:
        yield started


def test_payload_is_three_json_strings_on_the_wire(stack: Services) -> None:
    handle = flowstone.materialize_async("c_source", "eu")
    with Connection(broker_url()) as conn:
        message = conn.SimpleQueue("flowstone").get(timeout=10)
        assert message.content_type == "application/json"
        body = message.body
        assert isinstance(body, str | bytes)
        args, kwargs, _ = json.loads(body)
        assert args == []
        assert kwargs == {"run_id": handle.run_id, "asset": "c_source", "partition": "s:eu"}
        assert kwargs == step_payload(handle.run_id, "c_source", encode_partition_key("eu"))
        assert message.headers["task"] == "flowstone.run_step"
        message.ack()
    assert handle.status() == RunStatus.RUNNING  # queued for a worker
    stack.start_worker("w1")
    steps = Materialization.objects.filter(run_id=handle.run_id)
    steps.update(dispatched_at=None)  # the test took the message: send it again
    publish_steps([s.pk for s in steps])
    assert handle.wait(WAIT).status == RunStatus.SUCCESS


def test_diamond_runs_in_dag_order_on_workers(stack: Services) -> None:
    stack.start_worker("w1", concurrency=2)
    result = flowstone.materialize_all_async("c_sink", "eu").wait(WAIT)

    assert result.status == RunStatus.SUCCESS
    rows = {r.asset: r for r in Materialization.objects.filter(run_id=result.run_id)}
    for downstream, upstreams in {
        "c_left": ["c_source"],
        "c_right": ["c_source"],
        "c_sink": ["c_left", "c_right"],
    }.items():
        for upstream in upstreams:
            assert rows[upstream].finished_at <= rows[downstream].started_at  # type: ignore[operator]
    assert LineageEdge.objects.filter(downstream=rows["c_sink"]).count() == 2
    assert Counter(e["asset"] for e in stack.executions()) == {
        "c_source": 1,
        "c_left": 1,
        "c_right": 1,
        "c_sink": 1,
    }


def test_async_returns_before_any_worker_runs_and_wait_returns_the_finished_run(
    stack: Services,
) -> None:
    handle = flowstone.materialize_async("c_routed", "us")

    assert isinstance(handle, flowstone.RunHandle)
    assert handle.status() == RunStatus.RUNNING  # queued for a worker
    (step,) = handle.result().steps
    assert step.status == StepStatus.QUEUED
    with pytest.raises(flowstone.errors.FlowStoneError, match=r"\[timeout\]"):
        handle.wait(0.3)

    stack.start_worker("w-later", queues="later")
    result = handle.wait(WAIT)
    assert isinstance(result, flowstone.RunResult)
    assert result.status == RunStatus.SUCCESS
    assert result.step("c_routed", "us").status == StepStatus.SUCCESS


def test_backfill_of_200_partitions_never_runs_more_than_max_parallel(stack: Services) -> None:
    stack.start_worker("w1", concurrency=6)
    handle = flowstone.backfill_async("c_daily", max_parallel=3)
    result = handle.wait(WAIT * 2)

    assert result.status == RunStatus.SUCCESS
    rows = list(Materialization.objects.filter(run_id=handle.run_id))
    assert len(rows) == 200
    peak = most_at_once(rows)
    assert 1 < peak <= 3

    again = flowstone.backfill_async("c_daily", max_parallel=3)
    assert again.wait(WAIT).steps == ()  # every partition already succeeded
    forced = flowstone.backfill_async(
        "c_daily", [dt.date(2024, 1, 1), dt.date(2024, 1, 2)], force=True
    )
    assert len(forced.wait(WAIT).steps) == 2


def test_retryable_error_retries_with_backoff_then_succeeds(stack: Services) -> None:
    stack.start_worker("w1")
    result = flowstone.materialize_async("c_flaky", "eu").wait(WAIT)

    assert result.status == RunStatus.SUCCESS
    assert result.step("c_flaky", "eu").attempt == 3
    starts = [e["at"] for e in stack.executions() if e["asset"] == "c_flaky"]
    assert len(starts) == 3
    assert starts[1] - starts[0] >= 0.3 * 0.9
    assert starts[2] - starts[1] >= 0.6 * 0.9


def test_non_retryable_failure_marks_downstream_upstream_failed(stack: Services) -> None:
    stack.start_worker("w1")
    result = flowstone.materialize_all_async("c_after_broken", "us").wait(WAIT)

    assert result.status == RunStatus.FAILED
    broken = result.step("c_broken", "us")
    assert broken.status == StepStatus.FAILED
    assert broken.attempt == 1
    assert broken.error is not None
    assert broken.error.kind == "execution_error"
    assert result.step("c_after_broken", "us").status == StepStatus.UPSTREAM_FAILED
    assert result.step("c_source", "us").status == StepStatus.SUCCESS


def _publish_raw(body: bytes, content_type: str, kwargs_headers: dict[str, str]) -> None:
    with Connection(broker_url()) as conn:
        exchange = Exchange("flowstone", type="direct")
        queue = Queue("flowstone", exchange, routing_key="flowstone")
        producer = Producer(conn.channel())
        producer.publish(
            body,
            exchange=exchange,
            routing_key="flowstone",
            declare=[queue],
            content_type=content_type,
            content_encoding="utf-8" if content_type == "application/json" else "binary",
            headers=kwargs_headers,
        )


def _task_headers() -> dict[str, str]:
    task_id = str(uuid.uuid4())
    return {"lang": "py", "task": "flowstone.run_step", "id": task_id, "root_id": task_id}


def test_hostile_messages_are_rejected_recorded_and_the_worker_keeps_serving(
    stack: Services,
) -> None:
    worker = stack.start_worker("w1", queues="flowstone")
    run_id = flowstone.materialize_async("c_routed", "eu").run_id  # routed elsewhere: stays queued
    bad_payloads = [
        {"run_id": run_id, "asset": "os.system", "partition": "s:eu"},
        {"run_id": run_id, "asset": "does_not_exist", "partition": "s:eu"},
        {"run_id": run_id, "asset": "c_routed", "partition": "x:not-a-key"},
        {"run_id": "not-a-uuid", "asset": "c_routed", "partition": "s:eu"},
        {"run_id": str(uuid.uuid4()), "asset": "c_routed", "partition": "s:eu"},
        {"run_id": run_id, "asset": "c_routed", "partition": "s:eu", "callback": "os.system"},
        {"run_id": run_id, "asset": ["c_routed"], "partition": "s:eu"},
    ]
    for kwargs in bad_payloads:
        _publish_raw(json.dumps([[], kwargs, {}]).encode(), "application/json", _task_headers())
    _publish_raw(
        pickle.dumps(([], {"run_id": run_id, "asset": "c_source", "partition": "s:eu"}, {})),
        "application/x-python-serialize",
        _task_headers(),
    )

    result = flowstone.materialize_async("c_source", "us").wait(WAIT)
    assert result.status == RunStatus.SUCCESS
    deadline = time.monotonic() + 30
    while RejectedMessage.objects.count() < len(bad_payloads) + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    reasons = list(RejectedMessage.objects.order_by("id").values_list("reason", flat=True))
    assert len(reasons) == len(bad_payloads) + 1, reasons
    assert any("asset name 'os.system' is not a valid asset name" in r for r in reasons)
    assert any("[asset_not_found] unknown asset 'does_not_exist'" in r for r in reasons)
    assert any("[validation_error]" in r and "x:not-a-key" in r for r in reasons)
    assert any("is not a UUID" in r for r in reasons)
    assert any("unknown run id" in r for r in reasons)
    assert any("payload fields must be exactly" in r for r in reasons)
    assert any("must be a string" in r for r in reasons)
    assert any("application/x-python-serialize" in r for r in reasons)
    assert worker.poll() is None
    assert Materialization.objects.get(run_id=run_id).status == StepStatus.QUEUED
    assert not [e for e in stack.executions() if e["asset"] == "c_routed"]


def test_a_step_delivered_twice_produces_one_materialization(stack: Services) -> None:
    handle = flowstone.materialize_async("c_source", "eu")
    step = Materialization.objects.get(run_id=handle.run_id)
    for _ in range(3):
        Materialization.objects.filter(pk=step.pk).update(dispatched_at=None)  # send it again
        publish_steps([step.pk])
    stack.start_worker("w1", concurrency=3)
    result = handle.wait(WAIT)
    time.sleep(1)  # let the duplicate deliveries arrive and do nothing

    assert result.status == RunStatus.SUCCESS
    assert Materialization.objects.filter(asset="c_source", partition_key="s:eu").count() == 1
    assert result.step("c_source", "eu").attempt == 1
    assert AuditEvent.objects.filter(run_id=handle.run_id, action="asset.materialized").count() == 1
    assert len(stack.executions()) == 1


def test_kill_9_of_the_worker_then_a_new_worker_finishes_every_step_once(
    stack: Services,
) -> None:
    worker = stack.start_worker("w1", concurrency=2)
    stack.start_beat()
    handle = flowstone.backfill_async("c_sleepy")
    deadline = time.monotonic() + 30
    while not Materialization.objects.filter(
        run_id=handle.run_id, status=StepStatus.RUNNING
    ).exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    stack.kill(worker)

    stack.start_worker("w2", concurrency=2)
    result = handle.wait(WAIT)

    assert result.status == RunStatus.SUCCESS
    rows = Materialization.objects.filter(run_id=handle.run_id)
    assert rows.count() == 12
    assert set(rows.values_list("status", flat=True)) == {"success"}
    duplicates = (
        Materialization.objects.values("asset", "partition_key", "run")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    assert not duplicates.exists()
    assert rows.filter(recoveries__gt=0).exists() or rows.filter(attempt__gt=1).exists()
    assert (
        AuditEvent.objects.filter(run_id=handle.run_id, action="asset.materialized").count() == 12
    )


def test_the_core_path_works_with_a_rabbitmq_broker(settings: Settings, tmp_path: Path) -> None:
    url = amqp_url()
    if url is None:
        pytest.skip("no RabbitMQ reachable (set FLOWSTONE_TEST_AMQP_URL)")
    data_dir = tmp_path / "data"
    settings.FLOWSTONE = flowstone_settings_for(data_dir)
    purge(url)
    with running_services(url, data_dir) as stack:
        stack.start_worker("rabbit", concurrency=2)
        diamond = drive(stack, "materialize_all_async", "c_sink", "us")
        flaky = drive(stack, "materialize_async", "c_flaky", "us")
    assert diamond["status"] == flaky["status"] == "success"
    steps = Materialization.objects.filter(run_id=diamond["run_id"])
    assert sorted(steps.values_list("asset", "status")) == [
        ("c_left", "success"),
        ("c_right", "success"),
        ("c_sink", "success"),
        ("c_source", "success"),
    ]
    assert Materialization.objects.get(run_id=flaky["run_id"]).attempt == 3
    purge(url)


def test_a_worker_process_keeps_its_connection_and_replaces_a_broken_one(
    stack: Services,
) -> None:
    stack.start_worker("w1", concurrency=1)
    first = flowstone.backfill_async("c_backend", [f"s{n:02d}" for n in range(6)]).wait(WAIT)
    assert first.status == RunStatus.SUCCESS
    backends = {e["backend"] for e in stack.executions()}
    assert len(backends) == 1, backends  # one connection for six steps, not one per step

    (backend,) = backends
    with psycopg.connect(database_url(), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (backend,)).fetchone() == (True,)
    second = flowstone.materialize_async("c_backend", "s06").wait(WAIT)

    assert second.status == RunStatus.SUCCESS
    assert second.step("c_backend", "s06").attempt == 1  # the broken connection failed nothing
    assert stack.executions()[-1]["backend"] != backend


def test_a_backfill_step_costs_five_statements(stack: Services) -> None:
    """Find, claim, count on the run, succeed, audit: the worker's whole SQL for a backfill step."""
    handle = flowstone.backfill_async("c_daily", [dt.date(2024, 1, 1), dt.date(2024, 1, 2)])
    step = Materialization.objects.filter(run_id=handle.run_id).order_by("pk")[0]
    payload = step_payload(handle.run_id, step.asset, step.partition_key)

    with CaptureQueriesContext(connection) as queries:
        outcome = handle_step_message((), payload, owner="test-owner")

    assert outcome is not None
    assert outcome.status == StepStatus.SUCCESS
    verbs = [query["sql"].split()[0] for query in queries.captured_queries]
    statements = [verb for verb in verbs if verb not in {"BEGIN", "COMMIT"}]
    assert statements == ["SELECT", "UPDATE", "UPDATE", "UPDATE", "INSERT"], statements
    assert handle.result().step("c_daily", dt.date(2024, 1, 1)).status == StepStatus.SUCCESS
