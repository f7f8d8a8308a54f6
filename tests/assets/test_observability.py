"""The health endpoint and Prometheus metrics."""

from __future__ import annotations

import pytest
from django.test import Client

import flowstone
from flowstone.celery import app
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db]


def test_health_reports_database_broker_and_workers() -> None:
    response = Client().get("/health/")
    body = response.json()
    assert response.status_code == 200, body
    assert (body["status"], body["database"], body["broker"]) == ("ok", "ok", "ok")
    assert body["workers"]["count"] == len(body["workers"]["names"])


def test_health_with_the_broker_down_reports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Celery reads CELERY_BROKER_URL from the environment before its own settings.
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    response = Client().get("/health/")
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "unavailable"
    assert body["database"] == "ok"
    assert body["broker"].startswith("error: ")
    assert body["workers"] == {"count": 0, "names": []}


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
