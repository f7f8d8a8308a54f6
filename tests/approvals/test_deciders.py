"""Who decides: assignees, groups, escalation handing over, quorum votes, the reviewer's inbox."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_django import Settings
from rest_framework.test import APIClient

import flowstone
from approvals import services
from approvals.models import Approval, ApprovalDecider, ApprovalVote
from assets.models import Materialization
from flowstone.checkpoints import checkpoint, decider_name, decider_names
from flowstone.errors import (
    ApprovalDecidedError,
    ApprovalForbiddenError,
    DefinitionError,
    ValidationFailedError,
)
from flowstone.execution.resume import continue_after_decision
from flowstone.status import RunStatus, StepStatus
from lineage.models import AuditEvent
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

HOSTILE_NAMES = [
    "",
    " bob",
    "bob ",
    "bob\x00",
    "a\nb",
    "x" * 151,
    "group:",
    "group:" + "x" * 151,
    "group:\tfinance",
    "<script>alert(1)</script>",
    "bob; drop table auth_user",
]


@pytest.fixture(autouse=True)
def _deciders(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.deciders", resources={})


def _user(name: str, *groups: str, decide: bool = True, **extra: Any) -> User:
    user = User.objects.create_user(name, is_staff=True, **extra)  # no password: no hashing
    codenames = ["view_approval", "view_run", *(["decide_approval"] if decide else [])]
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    for group in groups:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


@pytest.fixture
def people() -> dict[str, User]:
    """bob (named), fiona and frank (group finance), lea (group leads), oscar (no group),
    nora (finance, without the permission), ina (finance, inactive), alice (the requester)."""
    return {
        "bob": _user("bob"),
        "fiona": _user("fiona", "finance"),
        "frank": _user("frank", "finance"),
        "fred": _user("fred", "finance"),
        "lea": _user("lea", "leads"),
        "oscar": _user("oscar"),
        "nora": _user("nora", "finance", decide=False),
        "ina": _user("ina", "finance", is_active=False),
        "alice": _user("alice", "finance"),
    }


def _pending(asset: str, partition: str = "large") -> Approval:
    """A pending approval of ``asset`` that reads the partition's one invoice.

    The invoice is materialized once: a second one would make the earlier approvals that read
    it stale (approvals are bound to the data they reviewed).
    """
    invoiced = Materialization.objects.filter(
        asset="d_invoice", partition_key=f"s:{partition}", status=StepStatus.SUCCESS
    ).exists()
    materialize = flowstone.materialize if invoiced else flowstone.materialize_all
    result = materialize(asset, partition, requested_by="alice")
    assert result.status == RunStatus.WAITING_APPROVAL
    return Approval.objects.get(run_id=result.run_id, asset=asset)


def _decide(approval: Approval, actor: str, decision: str = "approve", **extra: Any) -> None:
    continue_after_decision(services.decide_approval(approval.pk, decision, actor=actor, **extra))


def _status(approval: Approval) -> str:
    return str(Approval.objects.get(pk=approval.pk).status)


# Definitions


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_refused_at_definition(name: str) -> None:
    with pytest.raises(DefinitionError):
        checkpoint(assignees=[name])
    with pytest.raises(DefinitionError):
        checkpoint(timeout=dt.timedelta(hours=1), on_timeout="escalate", escalate_to=name)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"assignees": "bob"}, "must be a list"),
        ({"assignees": [1]}, "a decider must be"),
        ({"assignees": ["bob"] * 101}, "at most 100"),
        ({"quorum": 0}, "quorum must be"),
        ({"quorum": True}, "quorum must be"),
        ({"quorum": 2.0}, "quorum must be"),
        ({"assignees": ["bob"], "decide": lambda _review: None}, "automated gate"),
    ],
)
def test_bad_assignees_and_quorums_are_definition_errors(
    kwargs: dict[str, Any], error: str
) -> None:
    with pytest.raises(DefinitionError, match=error):
        checkpoint(**kwargs)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=160))
def test_a_decider_name_is_either_refused_or_safe(name: str) -> None:
    try:
        checked = decider_name(name)
    except DefinitionError:
        return
    bare = checked.removeprefix("group:")
    assert bare
    assert len(bare) <= 150
    assert bare.isprintable()
    assert bare == bare.strip()


def test_names_keep_their_order_once() -> None:
    assert decider_names(["bob", "group:finance", "bob"]) == ("bob", "group:finance")


# Assignees


def test_assignees_are_recorded_on_the_approval(people: dict[str, User]) -> None:
    approval = _pending("d_assigned")
    assert approval.decider_names == ["bob", "group:finance"]
    assert approval.quorum == 1


@pytest.mark.parametrize("actor", ["bob", "fiona"])
def test_an_assigned_user_or_group_member_decides(people: dict[str, User], actor: str) -> None:
    approval = _pending("d_assigned")
    _decide(approval, actor)
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by) == ("approved", actor)


@pytest.mark.parametrize(
    ("actor", "why"),
    [
        ("oscar", "may not decide approval"),  # holds the permission, not assigned
        ("lea", "may not decide approval"),  # another group
        ("nora", "may not decide approval"),  # in the group, no permission
        ("ina", "may not decide approval"),  # in the group, inactive
        ("nobody", "may not decide approval"),  # no such user
        ("group:finance", "may not decide approval"),  # a group name is not a user
        ("alice", "requested run"),  # in the group, but the requester
        ("bob\x00<script>", "may not decide approval"),
    ],
)
def test_everyone_else_is_refused_and_nothing_is_recorded(
    people: dict[str, User], actor: str, why: str
) -> None:
    approval = _pending("d_assigned")
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("approve", {}),
        ("reject", {"reason": "no"}),
        ("modify", {"value": {"amount": 1}}),
    ]
    for decision, extra in attempts:
        with pytest.raises(ApprovalForbiddenError, match=why):
            services.decide_approval(approval.pk, decision, actor=actor, **extra)
    assert _status(approval) == "pending"
    assert not AuditEvent.objects.filter(action__startswith="checkpoint.").exists()
    assert not ApprovalVote.objects.exists()


def test_self_approval_setting_lets_an_assigned_requester_decide(
    people: dict[str, User], settings: Settings
) -> None:
    approval = _pending("d_assigned")
    settings.FLOWSTONE = {**settings.FLOWSTONE, "ALLOW_SELF_APPROVAL": True}
    _decide(approval, "alice")
    assert _status(approval) == "approved"


def test_without_assignees_anyone_but_the_requester_decides(people: dict[str, User]) -> None:
    approval = _pending("d_open")
    assert approval.decider_names == []
    with pytest.raises(ApprovalForbiddenError, match="requested run"):
        _decide(approval, "alice")
    _decide(approval, "oscar")
    assert _status(approval) == "approved"


def test_callable_assignees_are_evaluated_when_requested(people: dict[str, User]) -> None:
    small = _pending("d_dynamic", "small")
    large = _pending("d_dynamic", "large")
    assert small.decider_names == ["bob"]
    assert large.decider_names == ["group:finance"]
    with pytest.raises(ApprovalForbiddenError):
        _decide(small, "fiona")
    _decide(large, "fiona")
    assert _status(large) == "approved"


@pytest.mark.parametrize(
    ("partition", "error"),
    [("hostile", "is not a valid user or group name"), ("broken", "must be a list")],
)
def test_callable_assignees_with_bad_names_fail_the_step(partition: str, error: str) -> None:
    result = flowstone.materialize_all("d_dynamic", partition, requested_by="alice")
    assert result.status == RunStatus.FAILED
    step = result.step("d_dynamic", partition)
    assert step.status == StepStatus.FAILED
    assert step.error is not None
    assert error in step.error.message
    assert not Approval.objects.exists()
    assert not ApprovalDecider.objects.exists()


# Escalation


def _escalate(approval: Approval) -> None:
    later = timezone.now() + dt.timedelta(hours=1, minutes=1)
    assert services.expire_overdue(now=later) == []
    approval.refresh_from_db()


def test_escalation_hands_the_decision_over(people: dict[str, User]) -> None:
    approval = _pending("d_escalating")
    _decide(approval, "bob")  # one of two votes
    _escalate(approval)
    assert (approval.status, approval.escalations, approval.quorum) == ("pending", 1, 1)
    assert (approval.decider_names, approval.assignee) == (["group:leads"], "group:leads")
    with pytest.raises(ApprovalForbiddenError, match="it is for group:leads"):
        _decide(approval, "bob")
    audit = AuditEvent.objects.get(action="checkpoint.escalated")
    assert (audit.actor, audit.details["policy"]) == ("timeout", "group:leads")
    _decide(approval, "lea")
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by) == ("approved", "lea")
    assert [(v.voter, v.escalation) for v in approval.votes.all()] == [("bob", 0)]
    assert approval.current_votes() == []


# Quorum


def test_a_quorum_needs_two_distinct_eligible_votes(people: dict[str, User]) -> None:
    approval = _pending("d_quorum")
    assert services.decide_approval(approval.pk, "approve", actor="fiona", reason="ok") is None
    assert _status(approval) == "pending"
    with pytest.raises(ApprovalDecidedError, match="'fiona' already voted"):
        _decide(approval, "fiona")
    with pytest.raises(ApprovalForbiddenError):
        _decide(approval, "bob")  # not in finance: no vote
    _decide(approval, "frank")
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by) == ("approved", "frank")
    assert [v.voter for v in approval.votes.all()] == ["fiona", "frank"]
    assert Approval.objects.get(pk=approval.pk).run.status == RunStatus.SUCCESS
    audits = AuditEvent.objects.filter(action="checkpoint.approved").order_by("id")
    assert [(a.actor, a.details["votes"], a.details["quorum"]) for a in audits] == [
        ("fiona", 1, 2),
        ("frank", 2, 2),
    ]
    with pytest.raises(ApprovalDecidedError, match="already approved by frank"):
        _decide(approval, "fred")


def test_one_eligible_rejection_rejects_a_quorum_approval(people: dict[str, User]) -> None:
    approval = _pending("d_quorum")
    _decide(approval, "fiona")
    _decide(approval, "frank", "reject", reason="wrong account")
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by) == ("rejected", "frank")
    assert approval.run.status == RunStatus.FAILED


def test_modify_is_refused_under_a_quorum(people: dict[str, User]) -> None:
    approval = _pending("d_quorum")
    with pytest.raises(ValidationFailedError, match="needs 2 approvals"):
        _decide(approval, "fiona", "modify", value={"amount": 1})
    assert _status(approval) == "pending"
    assert not ApprovalVote.objects.exists()


# Consoles


def _api(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_api_enforces_assignees_and_shows_votes(people: dict[str, User]) -> None:
    approval = _pending("d_quorum")
    url = f"/api/approvals/{approval.pk}/decide/"
    refused = _api(people["oscar"]).post(url, {"decision": "approve"}, format="json")
    assert refused.status_code == 403
    assert "may not decide approval" in refused.json()["detail"]
    voted = _api(people["fiona"]).post(url, {"decision": "approve"}, format="json")
    assert voted.status_code == 200
    body = voted.json()
    assert (body["status"], body["deciders"], body["quorum"]) == ("pending", ["group:finance"], 2)
    assert [(v["voter"], v["counts"]) for v in body["votes"]] == [("fiona", True)]
    again = _api(people["fiona"]).post(url, {"decision": "approve"}, format="json")
    assert again.status_code == 409
    assert "already voted" in again.json()["detail"]
    with CaptureQueriesContext(connection) as one:
        _api(people["fiona"]).get("/api/approvals/")
    _pending("d_quorum", "small")
    _pending("d_assigned")
    with CaptureQueriesContext(connection) as three:
        listing = _api(people["fiona"]).get("/api/approvals/").json()["results"]
    assert len(three.captured_queries) == len(one.captured_queries)  # no query per approval
    assert [a["votes"] and a["votes"][0]["voter"] for a in listing] == ["fiona", [], []]


def test_command_enforces_assignees_and_lists_votes(people: dict[str, User]) -> None:
    approval = _pending("d_quorum")
    with pytest.raises(CommandError, match="may not decide approval") as refused:
        call_command("approvals", "approve", str(approval.pk), "--user", "oscar")
    assert refused.value.returncode == 1
    out = io.StringIO()
    call_command("approvals", "approve", str(approval.pk), "--user", "fiona", stdout=out)
    assert out.getvalue().strip() == f"approval {approval.pk}: pending; 1 of 2 votes"
    with pytest.raises(CommandError, match="already voted") as again:
        call_command("approvals", "approve", str(approval.pk), "--user", "fiona")
    assert again.value.returncode == 1
    out = io.StringIO()
    call_command("approvals", "list", "--json", stdout=out)
    (listed,) = json.loads(out.getvalue())
    assert (listed["deciders"], listed["quorum"]) == (["group:finance"], 2)
    assert [v["voter"] for v in listed["votes"]] == ["fiona"]
    call_command("approvals", "approve", str(approval.pk), "--user", "frank", stdout=io.StringIO())
    assert _status(approval) == "approved"


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_admin_refuses_a_non_assignee_and_shows_votes(people: dict[str, User]) -> None:
    approval = _pending("d_quorum")
    url = f"/admin/approvals/approval/{approval.pk}/decide/"
    page = _client(people["oscar"]).get(url).content.decode()
    assert "it is for group:finance" in page
    assert 'id="decision-form"' not in page
    response = _client(people["oscar"]).post(url, {"decision": "approve"}, follow=True)
    assert "may not decide approval" in response.content.decode()
    assert not ApprovalVote.objects.exists()
    response = _client(people["fiona"]).post(url, {"decision": "approve"}, follow=True)
    assert f"Approval {approval.pk}: your vote is recorded (1 of 2)." in response.content.decode()
    page = _client(people["frank"]).get(url).content.decode()
    assert 'id="approval-votes"' in page
    assert "fiona" in page
    assert "2 approvals" in page
    response = _client(people["fiona"]).post(url, {"decision": "approve"}, follow=True)
    assert "already voted" in response.content.decode()
    _client(people["frank"]).post(url, {"decision": "approve"})
    assert _status(approval) == "approved"


# The inbox

INBOX = "/admin/approvals/approval/mine/"


def test_the_inbox_lists_what_the_user_may_decide_oldest_first(people: dict[str, User]) -> None:
    open_one = _pending("d_open")
    quorum = _pending("d_quorum")
    mine = _pending("d_assigned")
    escalating = _pending("d_escalating")  # bob's only
    _decide(quorum, "frank")

    def listed(user: str) -> list[int]:
        response = _client(people[user]).get(INBOX)
        assert response.status_code == 200
        return [row["approval"].pk for row in response.context["rows"]]

    assert listed("fiona") == [open_one.pk, quorum.pk, mine.pk]
    assert listed("bob") == [open_one.pk, mine.pk, escalating.pk]
    assert listed("oscar") == [open_one.pk]
    assert listed("alice") == []  # every one is her own run
    assert _client(people["nora"]).get(INBOX).status_code == 403
    page = _client(people["frank"]).get(INBOX).content.decode()
    assert "1 of 2 (you voted)" in page
    assert "Pay" not in page  # the default message
    assert "Approve this value?" in page


def test_the_inbox_is_one_query_and_paginated(people: dict[str, User]) -> None:
    for partition in ("small", "large"):
        _pending("d_quorum", partition)
    client = _client(people["fiona"])
    client.get(INBOX)
    with CaptureQueriesContext(connection) as few:
        client.get(INBOX)
    for partition in ("hostile", "broken"):
        _pending("d_quorum", partition)
    _pending("d_assigned")
    with CaptureQueriesContext(connection) as more:
        client.get(INBOX)
    assert len(more.captured_queries) == len(few.captured_queries)
    listing = [q["sql"] for q in more.captured_queries if "approvals_approval" in q["sql"]]
    assert len(listing) == 2  # the page's count and the page itself


def test_the_inbox_pages_long_lists(people: dict[str, User], monkeypatch: Any) -> None:
    monkeypatch.setattr("approvals.admin.INBOX_PAGE_SIZE", 2)
    ids = [_pending("d_open", p).pk for p in ("small", "large", "hostile")]
    client = _client(people["oscar"])
    first = client.get(INBOX)
    assert [r["approval"].pk for r in first.context["rows"]] == ids[:2]
    assert "page 1 of 2" in first.content.decode()
    second = client.get(INBOX + "?page=2")
    assert [r["approval"].pk for r in second.context["rows"]] == ids[2:]
    assert client.get(INBOX + "?page=<script>").status_code == 200


def test_the_admin_index_links_the_inbox(people: dict[str, User]) -> None:
    assert INBOX in _client(people["bob"]).get("/admin/").content.decode()
    assert INBOX not in _client(people["nora"]).get("/admin/").content.decode()


def test_unknown_and_hostile_names_at_decision_time_match_nobody(people: dict[str, User]) -> None:
    approval = _pending("d_assigned")
    approval.deciders.all().delete()
    for name in ("ghost", "group:ghosts", "group:<b>finance</b>"):
        ApprovalDecider.objects.create(approval=approval, name=name)
    Group.objects.create(name="<b>finance</b>").user_set.add(people["frank"])
    for actor in ("fiona", "ghost", "group:ghosts", "bob"):
        with pytest.raises(ApprovalForbiddenError, match="it is for ghost, group:ghosts"):
            _decide(approval, actor)
    page = _client(people["fiona"]).get(f"/admin/approvals/approval/{approval.pk}/decide/")
    assert "group:&lt;b&gt;finance&lt;/b&gt;" in page.content.decode()
    assert "<b>finance</b>" not in page.content.decode()
    _decide(approval, "frank")  # a member of the group with the odd (but valid) name
    assert _status(approval) == "approved"


def test_the_bulk_action_votes_and_refuses_per_approval(people: dict[str, User]) -> None:
    quorum = _pending("d_quorum")
    mine = _pending("d_assigned")
    bobs = _pending("d_escalating")
    response = _client(people["fiona"]).post(
        "/admin/approvals/approval/",
        {"action": "approve_selected", "_selected_action": [quorum.pk, mine.pk, bobs.pk]},
        follow=True,
    )
    page = response.content.decode()
    assert "Approved 1 approval(s)." in page
    assert "Voted for 1 approval(s) still short of their quorum." in page
    assert f"&#x27;fiona&#x27; may not decide approval {bobs.pk}: it is for bob" in page
    assert [_status(a) for a in (quorum, mine, bobs)] == ["pending", "approved", "pending"]
    assert [v.voter for v in ApprovalVote.objects.filter(approval=quorum)] == ["fiona"]


def test_a_stale_escalated_approval_is_re_reviewed_by_its_deciders_and_asks_the_assignees_anew(
    people: dict[str, User],
) -> None:
    approval = _pending("d_escalating")
    _escalate(approval)
    assert (approval.decider_names, approval.quorum, approval.escalations) == (
        ["group:leads"],
        1,
        1,
    )
    flowstone.materialize("d_invoice", "large")  # a new invoice: the approval goes stale
    assert _status(approval) == "stale"
    for refused in ("bob", "alice", "oscar"):  # the original assignee, the requester, a stranger
        with pytest.raises(ApprovalForbiddenError):
            services.rereview_approval(approval.pk, actor=refused, actor_type="user")
    assert Approval.objects.get(pk=approval.pk).rereviewed_at is None
    before = timezone.now()
    continue_after_decision(services.rereview_approval(approval.pk, actor="lea", actor_type="user"))
    fresh = Approval.objects.get(run_id=approval.run_id, status="pending")
    # a new review of new numbers: the checkpoint's assignees, quorum and deadline again
    assert (fresh.decider_names, fresh.quorum, fresh.escalations) == (["bob"], 2, 0)
    assert fresh.expires_at is not None
    assert fresh.expires_at >= before + dt.timedelta(minutes=59)
    with pytest.raises(ApprovalForbiddenError):
        _decide(fresh, "lea")
    _decide(fresh, "bob")
    assert _status(fresh) == "pending"  # one vote of two
