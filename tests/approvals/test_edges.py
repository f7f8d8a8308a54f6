"""The approval features together, each pair on one approval row: a quorum with options, a
quorum with inputs that change, options on a stale approval, bulk decisions under a quorum, and
notices for votes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client
from pytest_django import Settings
from rest_framework.test import APIClient

import flowstone
from approvals import services
from approvals.models import Approval, Notification
from assets.models import Materialization, Run
from flowstone.errors import ApprovalStaleError
from flowstone.execution.resume import continue_after_decision
from flowstone.status import RunStatus, StepStatus
from lineage.models import AuditEvent
from tests.conftest import UseDefinitions
from tests.pipelines import approval_edges

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


@pytest.fixture(autouse=True)
def _edges(
    use_definitions: UseDefinitions,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("FLOWSTONE_DATA_DIR", str(tmp_path))
    use_definitions("tests.pipelines.approval_edges", resources={})
    settings.FLOWSTONE = {**settings.FLOWSTONE, "APPROVAL_EMAIL_RECIPIENTS": ["ops@example.com"]}
    finance = Group.objects.create(name="finance")
    decide = Permission.objects.get(codename="decide_approval")
    for name in ("fiona", "frank"):
        user = User.objects.create_user(name)
        user.user_permissions.add(decide)
        user.groups.add(finance)


def _waiting(region: str = "eu") -> tuple[str, Approval]:
    result = flowstone.materialize_all("e_booking", region, requested_by="alice")
    assert result.status == RunStatus.WAITING_APPROVAL
    return result.run_id, Approval.objects.get(run_id=result.run_id)


def _decide(approval: Approval, actor: str, decision: str = "approve", **extra: Any) -> bool:
    """Decide (or vote) as ``actor``; whether the decision was taken (not only a vote)."""
    continuation = services.decide_approval(approval.pk, decision, actor=actor, **extra)
    continue_after_decision(continuation)
    return continuation is not None


def _statuses(run_id: str) -> dict[str, str]:
    steps = Materialization.objects.filter(run_id=run_id)
    return dict(steps.values_list("asset", "status"))


def _run_status(run_id: str) -> str:
    return str(Run.objects.get(pk=run_id).status)


def _decided_notices(approval: Approval) -> int:
    return Notification.objects.filter(key=f"approval:{approval.pk}:decided").count()


def test_a_continue_option_under_a_quorum_is_a_vote_and_the_second_one_decides() -> None:
    run_id, approval = _waiting()
    assert _decide(approval, "fiona", services.OPTION, option="pay") is False
    approval.refresh_from_db()
    assert (approval.status, approval.option, len(approval.current_votes())) == ("pending", "", 1)
    assert _decided_notices(approval) == 0  # a vote decides nothing: no "decided" notice

    assert _decide(approval, "frank", services.OPTION, option="pay") is True
    approval.refresh_from_db()
    assert (approval.status, approval.option, approval.decided_by) == ("approved", "pay", "frank")
    assert _statuses(run_id) == {
        "e_rate": "success",
        "e_payment": "success",
        "e_booking": "success",
    }
    assert _decided_notices(approval) == 1
    votes = AuditEvent.objects.filter(action="checkpoint.approved").order_by("id")
    assert [(e.actor, e.details["option"], e.details["votes"]) for e in votes] == [
        ("fiona", "pay", 1),
        ("frank", "pay", 2),
    ]


def test_a_skip_option_under_a_quorum_decides_at_once() -> None:
    run_id, approval = _waiting()
    assert _decide(approval, "fiona", services.OPTION, option="hold") is True
    approval.refresh_from_db()
    assert (approval.status, approval.option) == ("skipped", "hold")
    assert _statuses(run_id) == {
        "e_rate": "success",
        "e_payment": "skipped",
        "e_booking": "skipped",
    }
    assert _run_status(run_id) == RunStatus.SUCCESS
    assert AuditEvent.objects.filter(action="checkpoint.skipped").count() == 1


def test_votes_on_a_stale_approval_count_for_nothing_and_a_re_review_starts_afresh() -> None:
    run_id, approval = _waiting()
    assert _decide(approval, "fiona") is False
    approval_edges.set_rate("eu", 12)
    assert flowstone.materialize("e_rate", "eu").status == RunStatus.SUCCESS
    approval.refresh_from_db()
    assert approval.status == "stale"
    with pytest.raises(ApprovalStaleError):
        _decide(approval, "frank")  # fiona's vote and frank's would make a quorum of old numbers
    assert _decided_notices(approval) == 0

    continue_after_decision(
        services.rereview_approval(approval.pk, actor="frank", actor_type="user")
    )
    fresh = Approval.objects.filter(run_id=run_id, status="pending").get()
    assert fresh.pk != approval.pk
    assert fresh.proposed_value == {"rate": 12, "amount": 120}
    assert fresh.current_votes() == []  # the quorum starts again against the new value
    assert _decide(fresh, "fiona") is False
    assert _decide(fresh, "frank") is True
    assert _statuses(run_id)["e_booking"] == StepStatus.SUCCESS
    assert flowstone.load_value("e_booking", "eu") == 120


def test_a_stale_approval_may_still_be_skipped_but_not_continued() -> None:
    run_id, approval = _waiting()
    approval_edges.set_rate("eu", 11)
    flowstone.materialize("e_rate", "eu")
    with pytest.raises(ApprovalStaleError):
        _decide(approval, "fiona", services.OPTION, option="pay")
    assert _decide(approval, "fiona", services.OPTION, option="hold") is True
    approval.refresh_from_db()
    assert approval.status == "skipped"
    assert _statuses(run_id)["e_booking"] == StepStatus.SKIPPED


def test_a_bulk_approve_under_a_quorum_is_one_vote_each_and_a_second_bulk_decides() -> None:
    first_run, first = _waiting("eu")
    second_run, second = _waiting("us")
    outcomes = services.decide_many([first.pk, second.pk], "approve", actor="fiona")
    assert [(o.approval_id, o.status, o.refused) for o in outcomes] == [
        (first.pk, "pending", ""),
        (second.pk, "pending", ""),
    ]
    assert all(o.continuation is None for o in outcomes)
    again = services.decide_many([first.pk, second.pk], "approve", actor="fiona")
    assert [o.refused for o in again] == ["already_decided", "already_decided"]  # voted already

    decided = services.decide_many([first.pk, second.pk], "approve", actor="frank")
    assert [o.status for o in decided] == ["approved", "approved"]
    for outcome in decided:
        continue_after_decision(outcome.continuation)
    assert _run_status(first_run) == _run_status(second_run) == RunStatus.SUCCESS
    assert Notification.objects.filter(key__endswith=":decided").count() == 2


def test_the_api_bulk_answer_counts_votes_apart_from_decisions() -> None:
    _, first = _waiting("eu")
    _, second = _waiting("us")
    api = APIClient()
    api.force_authenticate(User.objects.get(username="fiona"))
    ids = {"decision": "approve", "ids": [first.pk, second.pk]}
    voted = api.post("/api/approvals/decide/", ids, format="json").json()
    assert (voted["decided"], voted["voted"], voted["refused"]) == (0, 2, 0)
    assert [r["status"] for r in voted["results"]] == ["pending", "pending"]
    api.force_authenticate(User.objects.get(username="frank"))
    decided = api.post("/api/approvals/decide/", ids, format="json").json()
    assert (decided["decided"], decided["voted"], decided["refused"]) == (2, 0, 0)
    again = api.post("/api/approvals/decide/", ids, format="json").json()
    assert (again["decided"], again["voted"], again["refused"]) == (0, 0, 2)


def test_the_admin_says_a_continue_option_under_a_quorum_is_a_recorded_vote() -> None:
    _, approval = _waiting()
    fiona = User.objects.get(username="fiona")
    fiona.is_staff = True
    fiona.save()
    client = Client()
    client.force_login(fiona)
    url = f"/admin/approvals/approval/{approval.pk}/decide/"
    page = client.post(url, {"decision": "option:pay"}, follow=True).content.decode()
    assert f"Approval {approval.pk}: your vote is recorded (1 of 2)." in page
    approval.refresh_from_db()
    assert (approval.status, len(approval.current_votes())) == ("pending", 1)
