"""Notifications and run-status sensors on a real Celery worker and a real beat process."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pytest_django import Settings

import flowstone
from approvals import services
from approvals.models import Approval, Notification
from assets.models import Run
from flowstone.execution.resume import continue_after_decision
from flowstone.status import RunStatus
from schedules.models import Tick
from tests.webhook import closed_port_url, webhook_endpoint
from tests.workers import Services, worker_stack

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

DEFINITIONS = "tests.pipelines.run_status_flow"
DATABASE_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
BASE_URL = "https://flowstone.example.com"
WAIT = 60


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Services]:
    with worker_stack(settings, tmp_path, DEFINITIONS) as started:
        yield started


def _use_channels(stack: Services, settings: Settings, url: str) -> None:
    """The same channels here and in the worker and beat processes; retries after 1, 2, 4 s."""
    channels = {"ops": {"CLASS": "flowstone.notifications.WebhookChannel", "OPTIONS": {"url": url}}}
    settings.FLOWSTONE = {
        **settings.FLOWSTONE,
        "NOTIFICATION_CHANNELS": channels,
        "NOTIFICATION_BASE_URL": BASE_URL,
        "NOTIFICATION_RETRY_SECONDS": 1,
    }
    stack.extra_env.update(
        {
            "FLOWSTONE_NOTIFICATION_CHANNELS": json.dumps(channels),
            "FLOWSTONE_NOTIFICATION_BASE_URL": BASE_URL,
            "FLOWSTONE_NOTIFICATION_RETRY_SECONDS": "1",
        }
    )


def _eventually(check: Callable[[], object], what: str, stack: Services) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            logs = {p.name: p.read_text()[-3000:] for p in stack.data_dir.glob("*.log")}
            pytest.fail(f"timed out waiting for {what}:\n{logs}")
        time.sleep(0.2)


def _status(key: str) -> tuple[str, int] | None:
    return Notification.objects.filter(key=key).values_list("status", "attempts").first()


def test_webhook_retries_and_run_status_sensors_on_a_worker_and_beat(
    stack: Services, settings: Settings
) -> None:
    with webhook_endpoint(failures=2) as endpoint:
        _use_channels(stack, settings, endpoint.url)
        stack.start_worker("w1")
        stack.start_beat(scheduler=DATABASE_SCHEDULER)
        _eventually(
            lambda: Tick.objects.filter(name="flaky_failed").exists(), "the first polls", stack
        )

        # The request's notice fails twice at the endpoint, then beat's retry gets it through.
        gated = flowstone.materialize_async("rs_gated", requested_by="alice")
        _eventually(lambda: Approval.objects.filter(run_id=gated.run_id).exists(), "it", stack)
        approval = Approval.objects.get(run_id=gated.run_id)
        requested = f"approval:{approval.pk}:requested"
        _eventually(lambda: (_status(requested) or ("",))[0] == "delivered", "retries", stack)
        # Both failures are its own unless the waiting notice below (2 s on) took the second.
        attempts = Notification.objects.get(key=requested).attempts
        assert attempts in (2, 3)
        assert len(endpoint.bodies(a=f"Approval: {approval.pk}")) == attempts

        # Left waiting for more than two seconds: the sensor says so, once.
        waiting = f"sensor:approval_too_slow:approval-waiting:{approval.pk}"
        _eventually(lambda: (_status(waiting) or ("",))[0] == "delivered", "the notice", stack)
        titles = [b["blocks"][0]["text"]["text"] for b in endpoint.bodies(a="Ship the release?")]
        assert "Still waiting for a decision" in titles

        # A decision: its notice is sent by the worker after the commit, at the first try.
        started = time.monotonic()
        continue_after_decision(services.decide_approval(approval.pk, "approve", actor="bob"))
        assert time.monotonic() - started < 2
        decided = f"approval:{approval.pk}:decided"
        _eventually(lambda: _status(decided) == ("delivered", 1), "the decision's notice", stack)
        body = endpoint.bodies(a="Approval approved")[0]
        assert body["blocks"][-1]["elements"][0]["url"] == (
            f"{BASE_URL}/admin/approvals/approval/{approval.pk}/decide/"
        )
        assert gated.wait(WAIT).status == RunStatus.SUCCESS

        # Two failed runs: two notices; a successful run: one follow-up run.
        failed = [flowstone.materialize_async("rs_flaky", p) for p in ("bad", "worse")]
        ok = flowstone.materialize_async("rs_flaky", "ok")
        assert [h.wait(WAIT).status for h in (*failed, ok)] == ["failed", "failed", "success"]
        keys = [f"sensor:flaky_failed:run-failed:{h.run_id}" for h in failed]
        _eventually(
            lambda: all(_status(k) == ("delivered", 1) for k in keys), "the failure notices", stack
        )
        _eventually(
            lambda: Run.objects.filter(requested_by="sensor:flaky_succeeded").exists(),
            "the follow-up run",
            stack,
        )
        time.sleep(3)  # more polls of every sensor: nothing new
        assert Tick.objects.filter(name="flaky_failed", status="notified").count() == 2
        assert Tick.objects.filter(name="approval_too_slow", status="notified").count() == 1
        assert Run.objects.filter(requested_by="sensor:flaky_succeeded").count() == 1
        assert [len(endpoint.bodies(a=h.run_id, b="failed in rs_flaky")) for h in failed] == [1, 1]


def test_an_endpoint_down_never_blocks_or_fails_a_decision(
    stack: Services, settings: Settings
) -> None:
    _use_channels(stack, settings, closed_port_url())
    stack.start_worker("w1")
    gated = flowstone.materialize_async("rs_gated", requested_by="alice")
    _eventually(lambda: Approval.objects.filter(run_id=gated.run_id).exists(), "it", stack)
    approval = Approval.objects.get(run_id=gated.run_id)
    started = time.monotonic()
    continue_after_decision(services.decide_approval(approval.pk, "approve", actor="bob"))
    assert time.monotonic() - started < 2
    assert gated.wait(WAIT).status == RunStatus.SUCCESS
    decided = f"approval:{approval.pk}:decided"
    _eventually(lambda: (_status(decided) or ("", 0))[1] >= 1, "a failed try", stack)
    row = Notification.objects.get(key=decided)
    assert (row.status, "unreachable" in row.last_error) == ("pending", True)
