"""Stale approvals and bulk decisions with runs on real Celery workers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from pytest_django import Settings
from rest_framework.test import APIClient

import flowstone
from approvals import services
from approvals.models import Approval
from flowstone.errors import ApprovalStaleError
from flowstone.execution.resume import continue_after_decision
from flowstone.status import RunStatus
from lineage.models import AuditEvent
from tests.pipelines import stale_gates
from tests.workers import Services, worker_stack

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WAIT = 120
BACKFILL_DAYS = 365
QUERIES_PER_APPROVAL = 20


@pytest.fixture
def stack(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Services]:
    with worker_stack(settings, tmp_path, "tests.pipelines.stale_gates") as started:
        monkeypatch.setenv("FLOWSTONE_DATA_DIR", str(started.data_dir))  # the rate files
        yield started


def _wait_for(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_new_upstream_value_on_a_worker_makes_the_approval_stale_until_rereviewed(
    stack: Services,
) -> None:
    stack.start_worker("w1")
    gated = flowstone.materialize_all_async("s_invoice", "eu", requested_by="alice")
    _wait_for(lambda: Approval.objects.filter(run_id=gated.run_id, status="pending").exists())
    stale = Approval.objects.get(run_id=gated.run_id)
    assert stale.proposed_value == {"rate": 10, "price": 30}

    stale_gates.set_rate("eu", 12)
    assert flowstone.materialize_async("s_rate", "eu").wait(WAIT).status == RunStatus.SUCCESS
    stale.refresh_from_db()
    assert stale.status == "stale"
    with pytest.raises(ApprovalStaleError):
        services.decide_approval(stale.pk, "approve", actor="bob")

    continue_after_decision(services.rereview_approval(stale.pk, actor="bob", actor_type="user"))
    _wait_for(lambda: Approval.objects.filter(run_id=gated.run_id, status="pending").exists())
    fresh = Approval.objects.get(run_id=gated.run_id, status="pending")
    assert fresh.proposed_value == {"rate": 12, "price": 36}
    continue_after_decision(services.decide_approval(fresh.pk, "approve", actor="bob"))
    assert gated.wait(WAIT).status == RunStatus.SUCCESS
    assert stale_gates.booked() == [{"region": "eu", "rate": 12, "price": 36}]
    assert Approval.objects.get(pk=stale.pk).status == "stale"  # kept for the audit trail
    actions = list(
        AuditEvent.objects.filter(run_id=gated.run_id, action__startswith="checkpoint.")
        .order_by("created_at", "id")
        .values_list("action", flat=True)
    )
    assert actions == ["checkpoint.stale", "checkpoint.rereviewed", "checkpoint.approved"]


def test_one_decision_for_a_365_day_backfill_audits_each_and_the_run_continues(
    stack: Services,
) -> None:
    stack.start_worker("w1", concurrency=2)
    backfill = flowstone.backfill_async("s_daily", requested_by="alice")
    _wait_for(
        lambda: (
            Approval.objects.filter(run_id=backfill.run_id, status="pending").count()
            == BACKFILL_DAYS
        )
    )
    reviewer = User.objects.create_user("bob")
    reviewer.user_permissions.add(Permission.objects.get(codename="decide_approval"))
    api = APIClient()
    api.force_authenticate(reviewer)
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as queries:
        response = api.post(
            "/api/approvals/decide/", {"decision": "approve", "asset": "s_daily"}, format="json"
        )
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.content
    print(  # noqa: T201  # the measurement the test reports
        f"\nbulk approval of {BACKFILL_DAYS} approvals: {elapsed:.2f} s, "
        f"{len(queries)} queries ({len(queries) / BACKFILL_DAYS:.1f} per approval)"
    )
    assert response.json()["decided"] == BACKFILL_DAYS
    assert len(queries) <= QUERIES_PER_APPROVAL * BACKFILL_DAYS
    audited = AuditEvent.objects.filter(
        action="checkpoint.approved", actor="bob", run_id=backfill.run_id
    ).values_list("details__approval_id", flat=True)
    assert len(set(audited)) == len(audited) == BACKFILL_DAYS
    assert backfill.wait(WAIT).status == RunStatus.SUCCESS
