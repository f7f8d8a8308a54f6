"""Worker heartbeat rows (``assets.services.workers``)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from assets import services
from assets.models import WorkerHeartbeat
from assets.services.workers import FORGET_WORKERS_AFTER

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


def test_a_heartbeat_upserts_one_row_per_worker() -> None:
    services.record_worker_heartbeat("w1@a")
    first = WorkerHeartbeat.objects.get().last_seen_at
    services.record_worker_heartbeat("w1@a")
    services.record_worker_heartbeat("w2@b")
    rows = dict(WorkerHeartbeat.objects.values_list("hostname", "last_seen_at"))
    assert set(rows) == {"w1@a", "w2@b"}
    assert rows["w1@a"] >= first


def test_workers_seen_within_the_window_only() -> None:
    services.record_worker_heartbeat("recent@a")
    services.record_worker_heartbeat("old@b")
    WorkerHeartbeat.objects.filter(hostname="old@b").update(
        last_seen_at=timezone.now() - dt.timedelta(minutes=5)
    )
    seen = services.workers_seen_within(60)
    assert [w.hostname for w in seen] == ["recent@a"]
    assert 0 <= seen[0].seconds_ago < 60
    assert [w.hostname for w in services.workers_seen_within(600)] == ["old@b", "recent@a"]


def test_a_worker_silent_for_a_day_is_forgotten_by_the_next_heartbeat() -> None:
    services.record_worker_heartbeat("gone@a")
    WorkerHeartbeat.objects.update(
        last_seen_at=timezone.now() - FORGET_WORKERS_AFTER - dt.timedelta(minutes=1)
    )
    services.record_worker_heartbeat("alive@b")
    assert list(WorkerHeartbeat.objects.values_list("hostname", flat=True)) == ["alive@b"]


def test_forget_worker_deletes_its_row_only() -> None:
    services.record_worker_heartbeat("w1@a")
    services.record_worker_heartbeat("w2@b")
    services.forget_worker("w1@a")
    services.forget_worker("never-seen@c")
    assert list(WorkerHeartbeat.objects.values_list("hostname", flat=True)) == ["w2@b"]
