"""A broker that lost its messages, on a private ``redis-server``: the relay sends them again.

Each test starts its own Redis on a free loopback port (``tests/faults/servers.py``) and points
this process's Celery app at it, so it can be killed and restarted without touching the shared
broker. No mocks: the messages are counted in Redis's queue list.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.db.models import Count
from pytest_django import Settings

import flowstone
from assets import services
from assets.models import BrokerEpoch, Materialization
from assets.services.broker_epoch import EPOCH_KEY
from flowstone.celery import app
from flowstone.execution.handle import RunWaitTimeoutError
from flowstone.status import RunKind, RunStatus, StepStatus
from lineage.models import AuditEvent
from tests.faults.servers import PrivateRedis, ServerUnavailableError
from tests.workers import Services, flowstone_settings_for, running_services

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

StartBroker = Callable[..., PrivateRedis]


@pytest.fixture
def private_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[StartBroker]:
    """Start a private Redis and make it this process's Celery broker (until the test ends)."""
    servers: list[PrivateRedis] = []

    def start(*, appendonly: bool = False) -> PrivateRedis:
        server = PrivateRedis(appendonly=appendonly)
        servers.append(server)
        try:
            server.initialize()
        except ServerUnavailableError as exc:
            pytest.skip(str(exc))
        monkeypatch.setenv("CELERY_BROKER_URL", server.url())  # Celery reads it before its conf
        monkeypatch.setattr(app, "_pool", None)
        monkeypatch.setattr(app.amqp, "_producer_pool", None)
        return server

    try:
        yield start
    finally:
        if servers:
            pools: list[Any] = [app.amqp.producer_pool, app.pool]  # kombu Resources
            for pool in pools:
                pool.force_close_all()
        for server in servers:
            server.remove()


@pytest.fixture(autouse=True)
def _definitions(settings: Settings, tmp_path: Path) -> None:
    settings.FLOWSTONE = flowstone_settings_for(tmp_path / "data", "tests.pipelines.limits")


def _queue_length(server: PrivateRedis) -> int:
    with redis.Redis.from_url(server.url()) as client:
        return int(client.llen("flowstone"))


def _marker(server: PrivateRedis) -> str | None:
    with redis.Redis.from_url(server.url()) as client:
        value = client.get(EPOCH_KEY)
    return None if value is None else bytes(value).decode()


def _sent_run(n: int) -> list[int]:
    """A worker run of ``n`` steps whose messages the fast path sent."""
    created = services.create_run(
        services.RunRequest(
            kind=RunKind.BACKFILL,
            selection=["unlimited"],
            steps=[
                services.StepRequest(asset="unlimited", partition_key=f"s:k{i}") for i in range(n)
            ],
        )
    )
    assert not Materialization.objects.filter(dispatched_at__isnull=True).exists()
    return created.ready


def test_the_first_check_records_the_epoch_and_sends_nothing(
    private_broker: StartBroker,
) -> None:
    server = private_broker()
    _sent_run(3)
    assert _queue_length(server) == 3

    assert services.relay_outbox() == 0

    epoch = BrokerEpoch.objects.get()
    assert _marker(server) == epoch.token
    assert epoch.server_run_id
    assert epoch.losses == 0
    assert epoch.broker == f"redis://:**@127.0.0.1:{server.port}/0"  # no password to mask
    assert _queue_length(server) == 3


def test_a_redis_restart_without_persistence_sends_the_lost_steps_at_the_next_tick(
    private_broker: StartBroker,
) -> None:
    server = private_broker()
    ids = _sent_run(4)
    services.relay_outbox()  # the epoch is recorded
    first = BrokerEpoch.objects.get()

    server.kill()  # no persistence: the four messages and the marker are gone
    server.start()
    assert (_queue_length(server), _marker(server)) == (0, None)

    assert services.relay_outbox() == 4

    assert _queue_length(server) == 4
    assert not Materialization.objects.filter(pk__in=ids, dispatched_at__isnull=True).exists()
    epoch = BrokerEpoch.objects.get()
    assert (epoch.losses, epoch.token == first.token) == (1, False)
    assert _marker(server) == epoch.token
    assert services.relay_outbox() == 0  # the next tick: nothing more
    assert _queue_length(server) == 4


def test_a_flushed_broker_is_a_lost_broker(private_broker: StartBroker) -> None:
    server = private_broker()
    _sent_run(2)
    services.relay_outbox()
    with redis.Redis.from_url(server.url()) as client:
        client.flushdb()

    assert services.relay_outbox() == 2
    assert _queue_length(server) == 2


def test_a_restart_with_persistence_sends_again_what_the_last_second_may_have_lost(
    private_broker: StartBroker,
) -> None:
    """The marker survives in the AOF, but the server changed: its last writes may be gone.

    A clean restart keeps every message, so each queued step gets one duplicate (claimed once).
    """
    server = private_broker(appendonly=True)
    _sent_run(3)
    services.relay_outbox()
    token = BrokerEpoch.objects.get().token

    server.stop()
    server.start()
    assert (_queue_length(server), _marker(server)) == (3, token)

    assert services.relay_outbox() == 3

    assert _queue_length(server) == 6
    epoch = BrokerEpoch.objects.get()
    assert (epoch.token, epoch.losses) == (token, 1)
    assert services.relay_outbox() == 0


def test_running_and_finished_steps_are_not_sent_again(private_broker: StartBroker) -> None:
    server = private_broker()
    first, second, third = _sent_run(3)
    services.relay_outbox()
    assert services.claim_step(first, "w") is not None
    server.kill()
    server.start()

    assert services.relay_outbox() == 2

    assert Materialization.objects.get(pk=first).status == StepStatus.RUNNING
    assert _queue_length(server) == 2
    resent = Materialization.objects.filter(pk__in=[second, third], dispatched_at__isnull=False)
    assert resent.count() == 2


def test_a_backfill_survives_a_redis_restart_mid_run_within_seconds(
    private_broker: StartBroker, settings: Settings, tmp_path: Path
) -> None:
    server = private_broker()
    data_dir = tmp_path / "data"
    settings.FLOWSTONE = flowstone_settings_for(data_dir)
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=n) for n in range(60)]
    with running_services(server.url(), data_dir) as stack:
        stack.extra_env["FLOWSTONE_REQUEUE_AFTER_SECONDS"] = "600"  # no help from the backstop
        stack.start_beat()
        stack.start_worker("w1", concurrency=2)
        _wait_for(BrokerEpoch.objects.exists)  # the relay ran once
        handle = flowstone.backfill_async("c_daily", days)
        steps = Materialization.objects.filter(run_id=handle.run_id)
        _wait_for(lambda: steps.filter(status=StepStatus.SUCCESS).count() >= 10)

        server.kill()
        lost = steps.filter(status=StepStatus.QUEUED, dispatched_at__isnull=False).count()
        time.sleep(1)
        server.start()
        restarted = time.monotonic()
        try:
            result = handle.wait(60)
        except RunWaitTimeoutError:
            pytest.fail(f"the run stalled: {_statuses(handle.run_id)}\n{_log_tails(stack)}")
        elapsed = time.monotonic() - restarted

    assert lost > 0
    assert result.status == RunStatus.SUCCESS
    assert elapsed < 30, f"took {elapsed:.1f} s after Redis came back"
    assert BrokerEpoch.objects.get().losses >= 1
    assert steps.count() == steps.filter(status=StepStatus.SUCCESS).count() == len(days)
    assert not (
        Materialization.objects.values("asset", "partition_key", "run")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .exists()
    )
    audits = AuditEvent.objects.filter(run_id=handle.run_id, action="asset.materialized")
    assert audits.count() == len(days)
    assert len(stack.executions()) == len(days)  # no body ran twice


def _statuses(run_id: str) -> dict[str, int]:
    rows = (
        Materialization.objects.filter(run_id=run_id).values_list("status").annotate(n=Count("id"))
    )
    return dict(rows.values_list("status", "n"))


def _log_tails(stack: Services) -> str:
    """Each process's log: its warnings and errors first (why a worker stopped), then its tail."""
    logs = sorted(stack.data_dir.glob("*.log"))
    return "\n".join(
        f"--- {log.name}\n{_log_digest(log.read_text(errors='replace'))}" for log in logs
    )


def _log_digest(text: str) -> str:
    notable = [
        line
        for line in text.splitlines()
        if any(word in line for word in ("WARNING/", "ERROR/", "CRITICAL/", "shutdown"))
    ]
    return "\n".join(notable[:40]) + "\n...\n" + text[-3000:]


def _wait_for(predicate: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
