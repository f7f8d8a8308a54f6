"""The health endpoint and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client
from pytest_django import Settings

import flowstone
from assets import services
from assets.health import cached_health
from assets.models import Materialization, WorkerHeartbeat
from flowstone.celery import app
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db]

SUMMARY_KEYS = {"status", "database", "broker", "workers"}


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


def _staff_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_user("ops", is_staff=True))
    return client


@pytest.mark.embedded
def test_health_with_a_worker_seen_is_ok_and_anonymous_callers_get_no_details() -> None:
    services.record_worker_heartbeat("w1@host-a")
    response = Client().get("/health/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok", "workers": "ok"}


@pytest.mark.embedded
def test_health_with_no_worker_seen_is_unavailable() -> None:
    response = Client().get("/health/")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "database": "ok",
        "broker": "ok",
        "workers": "failing",
    }


@pytest.mark.embedded
def test_staff_get_the_details() -> None:
    services.record_worker_heartbeat("w1@host-a")
    services.record_worker_heartbeat("w2@host-b")
    body = _staff_client().get("/health/").json()
    assert set(body) == {*SUMMARY_KEYS, "details"}
    details = body["details"]
    assert (details["database"], details["broker"]) == ("ok", "ok")
    assert [w["name"] for w in details["workers"]] == ["w1@host-a", "w2@host-b"]
    assert all(0 <= w["seconds_ago"] < 60 for w in details["workers"])
    assert details["worker_window_seconds"] == 60
    assert "checked_at" in details


@pytest.mark.embedded
def test_a_user_who_is_not_staff_gets_no_details() -> None:
    client = Client()
    client.force_login(User.objects.create_user("analyst"))
    assert set(client.get("/health/").json()) == SUMMARY_KEYS


@pytest.mark.embedded
def test_health_with_the_broker_down_shows_the_error_to_staff_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services.record_worker_heartbeat("w1@host-a")
    # Celery reads CELERY_BROKER_URL from the environment before its own settings; the setting
    # is patched first, so that undoing it restores the real value rather than the variable's.
    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
    anonymous = Client().get("/health/")
    assert anonymous.status_code == 503
    assert anonymous.json() == {
        "status": "unavailable",
        "database": "ok",
        "broker": "failing",
        "workers": "ok",
    }
    assert "127.0.0.1:1" not in anonymous.content.decode()
    staff = _staff_client().get("/health/")
    assert staff.status_code == 503
    assert staff.json()["details"]["broker"].startswith("error: ")


@pytest.mark.embedded
def test_health_checks_are_reused_for_the_cache_period(settings: Settings) -> None:
    settings.FLOWSTONE = {"HEALTH_CACHE_SECONDS": 300}
    assert Client().get("/health/").status_code == 503
    services.record_worker_heartbeat("w1@host-a")
    # Within the period the cached report stands; a settings change drops it.
    assert Client().get("/health/").status_code == 503
    settings.FLOWSTONE = {"HEALTH_CACHE_SECONDS": 300, "WORKER_SEEN_WITHIN_SECONDS": 60}
    assert Client().get("/health/").status_code == 200


@pytest.mark.embedded
def test_health_cache_off_checks_every_time(settings: Settings) -> None:
    settings.FLOWSTONE = {"HEALTH_CACHE_SECONDS": 0}
    assert Client().get("/health/").status_code == 503
    services.record_worker_heartbeat("w1@host-a")
    response = _staff_client().get("/health/")
    assert response.status_code == 200, response.json()
    assert cache.get("flowstone:health") is None


@pytest.mark.embedded
def test_a_worker_outside_the_window_is_not_seen(settings: Settings) -> None:
    services.record_worker_heartbeat("w1@host-a")
    WorkerHeartbeat.objects.update(
        last_seen_at=WorkerHeartbeat.objects.get().last_seen_at.replace(year=2000)
    )
    settings.FLOWSTONE = {"WORKER_SEEN_WITHIN_SECONDS": 60}
    assert cached_health().workers == []
    assert Client().get("/health/").status_code == 503


def test_health_only_answers_get() -> None:
    assert Client().post("/health/").status_code == 405


@pytest.mark.embedded
def test_metrics_expose_steps_durations_and_approvals(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.diamond")
    flowstone.materialize_all("sink", "eu")
    flowstone.materialize_all("after_broken", "us")
    response = Client().get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert 'flowstone_steps_started_total{asset="source"} 2.0' in text
    assert 'flowstone_steps_ended_total{asset="sink",status="success"} 1.0' in text
    assert 'flowstone_steps_ended_total{asset="broken",status="failed"} 1.0' in text
    assert 'flowstone_steps_ended_total{asset="after_broken",status="upstream_failed"} 1.0' in text
    assert 'flowstone_step_duration_seconds_count{asset="sink"} 1.0' in text
    assert 'flowstone_step_duration_seconds_bucket{asset="sink",le="+Inf"} 1.0' in text
    assert "flowstone_queue_wait_seconds_bucket" in text
    assert "flowstone_approvals_pending 0.0" in text


@pytest.mark.embedded
def test_metrics_expose_runs_by_status_and_run_durations(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.diamond")
    flowstone.materialize_all("sink", "eu")
    flowstone.materialize_all("sink", "us")
    flowstone.materialize_all("after_broken", "us")
    text = Client().get("/metrics").content.decode()
    assert 'flowstone_runs{status="success"} 2.0' in text
    assert 'flowstone_runs{status="failed"} 1.0' in text
    assert 'flowstone_runs{status="running"} 0.0' in text
    assert 'flowstone_run_duration_seconds_count{status="success"} 2.0' in text
    assert 'flowstone_run_duration_seconds_bucket{le="+Inf",status="failed"} 1.0' in text
    assert 'flowstone_run_duration_seconds_bucket{le="86400.0",status="success"} 2.0' in text
    assert 'flowstone_unfinished_run_steps{state="pending"} 0.0' in text


@pytest.mark.embedded
def test_metrics_count_the_steps_of_unfinished_runs(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.diamond")
    handle = flowstone.materialize_all_async("sink", "eu")
    steps = Materialization.objects.filter(run_id=handle.run_id).count()
    text = Client().get("/metrics").content.decode()
    assert 'flowstone_runs{status="running"} 1.0' in text
    active = text.split('flowstone_unfinished_run_steps{state="active"} ')[1].split("\n")[0]
    pending = text.split('flowstone_unfinished_run_steps{state="pending"} ')[1].split("\n")[0]
    assert float(active) + float(pending) == steps
    assert float(active) >= 1


@pytest.mark.embedded
def test_metrics_are_reused_for_the_cache_period(
    settings: Settings, use_definitions: UseDefinitions
) -> None:
    use_definitions("tests.pipelines.diamond")
    settings.FLOWSTONE = {**settings.FLOWSTONE, "METRICS_CACHE_SECONDS": 300}
    before = Client().get("/metrics").content.decode()
    flowstone.materialize_all("sink", "eu")
    assert Client().get("/metrics").content.decode() == before
    settings.FLOWSTONE = {**settings.FLOWSTONE, "METRICS_CACHE_SECONDS": 0}
    assert 'flowstone_runs{status="success"} 1.0' in Client().get("/metrics").content.decode()
