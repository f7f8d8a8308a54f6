"""Poison messages on a real worker (``flowstone.poison``): none stops it, each is recorded once.

On Redis the malformed items are pushed onto the step queue's list as they are, the way
``redis-cli LPUSH flowstone …`` would; on RabbitMQ they are published raw with kombu. Before the
fix the worker's main process exited on the first of them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kombu import Connection, Exchange, Producer, Queue
from pytest_django import Settings

import flowstone
from assets.models import RejectedMessage
from flowstone.celery import MAX_RECORDED_BODY
from flowstone.status import RunStatus
from tests.poison_items import HUGE, REDIS_POISON, Poison, step_body, task_headers
from tests.workers import (
    Services,
    amqp_url,
    broker_url,
    drive,
    flowstone_settings_for,
    purge,
    running_services,
    worker_stack,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WAIT = 30


def _found(rows: list[RejectedMessage], marker: str) -> int:
    if marker.startswith("="):
        return sum(1 for r in rows if r.payload == marker[1:])
    return sum(1 for r in rows if marker in r.payload or r.task_id == marker)


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Services]:
    with worker_stack(settings, tmp_path) as started:
        yield started


def _rejections(count: int) -> list[RejectedMessage]:
    deadline = time.monotonic() + WAIT
    while RejectedMessage.objects.count() < count and time.monotonic() < deadline:
        time.sleep(0.2)
    return list(RejectedMessage.objects.order_by("id"))


def _assert_each_recorded_once(rows: list[RejectedMessage], poison: list[Poison]) -> None:
    assert len(rows) == len(poison), [(r.reason, r.payload[:80]) for r in rows]
    for case in poison:
        assert _found(rows, case.marker) == 1, (case.name, [r.payload[:80] for r in rows])
    for row in rows:
        assert row.reason.startswith("[validation_error]"), row.reason
        assert len(row.payload) <= MAX_RECORDED_BODY
        assert len(row.reason) < 1000


def test_malformed_redis_items_are_recorded_dropped_and_the_worker_goes_on(
    stack: Services,
) -> None:
    client = redis.Redis.from_url(broker_url())
    unacked_before = set(client.hkeys("unacked"))  # other tests' killed workers may leave some
    worker = stack.start_worker("w1", queues="flowstone")
    for case in REDIS_POISON:
        client.lpush("flowstone", case.item)

    rows = _rejections(len(REDIS_POISON))
    assert worker.poll() is None
    _assert_each_recorded_once(rows, REDIS_POISON)
    assert flowstone.materialize_async("c_source", "eu").wait(WAIT).status == RunStatus.SUCCESS
    assert worker.poll() is None
    assert client.llen("flowstone") == 0
    deadline = time.monotonic() + 5
    while set(client.hkeys("unacked")) - unacked_before and time.monotonic() < deadline:
        time.sleep(0.1)
    # nothing of this test is left to come back after the visibility timeout
    assert set(client.hkeys("unacked")) - unacked_before == set()
    assert RejectedMessage.objects.count() == len(REDIS_POISON)


NO_ID = {"lang": "py", "task": "flowstone.run_step"}
AMQP_POISON: list[tuple[Poison, dict[str, str], str, str]] = [
    # (message, headers, content type, content encoding)
    (Poison("not JSON", b"not json poison-a1", "poison-a1"), {}, "application/json", "utf-8"),
    (Poison("empty object", b"{}", "='{}'"), {}, "application/json", "utf-8"),
    (
        Poison("no task id", step_body("poison-a3"), "poison-a3"),
        NO_ID,
        "application/json",
        "utf-8",
    ),
    (
        Poison("wrong content type", step_body("x"), "poison-a4"),
        task_headers("poison-a4"),
        "application/x-bogus",
        "binary",
    ),
    (
        Poison("unknown content encoding", step_body("x"), "poison-a5"),
        task_headers("poison-a5"),
        "application/json",
        "x-bogus",
    ),
    (
        Poison("not a list", b"42", "poison-a6"),
        task_headers("poison-a6"),
        "application/json",
        "utf-8",
    ),
    (
        Poison("huge, not JSON", b"poison-a7" + b"{" * HUGE, "poison-a7"),
        task_headers("poison-a7"),
        "application/json",
        "utf-8",
    ),
]


def _publish_amqp(
    url: str, body: bytes, headers: dict[str, str], content_type: str, content_encoding: str
) -> None:
    with Connection(url) as conn:
        exchange = Exchange("flowstone", type="direct")
        Producer(conn.channel()).publish(
            body,
            exchange=exchange,
            routing_key="flowstone",
            declare=[Queue("flowstone", exchange, routing_key="flowstone")],
            content_type=content_type,
            content_encoding=content_encoding,
            headers=headers,
        )


def test_malformed_rabbitmq_messages_are_recorded_dropped_and_the_worker_goes_on(
    settings: Settings, tmp_path: Path
) -> None:
    url = amqp_url()
    if url is None:
        pytest.skip("no RabbitMQ reachable (set FLOWSTONE_TEST_AMQP_URL)")
    data_dir = tmp_path / "data"
    settings.FLOWSTONE = flowstone_settings_for(data_dir)
    purge(url)
    with running_services(url, data_dir) as stack:
        worker = stack.start_worker("rabbit", queues="flowstone")
        for case, headers, content_type, content_encoding in AMQP_POISON:
            _publish_amqp(url, case.item, headers, content_type, content_encoding)
        rows = _rejections(len(AMQP_POISON))
        assert worker.poll() is None
        assert drive(stack, "materialize_async", "c_source", "us")["status"] == "success"
        assert worker.poll() is None
    purge(url)
    _assert_each_recorded_once(rows, [case for case, *_ in AMQP_POISON])
    assert RejectedMessage.objects.count() == len(AMQP_POISON)
