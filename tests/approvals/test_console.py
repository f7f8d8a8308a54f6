"""The approval console (admin), the API and the command: permissions, self-approval, decisions."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from rest_framework.test import APIClient

import flowstone
from approvals.models import Approval
from assets.cli import EXIT_INVALID
from assets.models import Run
from flowstone.checkpoints import CheckpointSpec, Review
from flowstone.status import RunStatus
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


@pytest.fixture(autouse=True)
def _gates(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.gates", resources={})


def _user(name: str, *perms: str) -> User:
    user = User.objects.create_user(name, password="pw-" + name, is_staff=True)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


@pytest.fixture
def reviewer() -> User:
    return _user("bob", "decide_approval", "view_approval", "view_run")


@pytest.fixture
def viewer() -> User:
    return _user("victor", "view_approval")


@pytest.fixture
def requester() -> User:
    return _user("alice", "decide_approval", "view_approval")


def _pending(partition: str = "large") -> Approval:
    result = flowstone.materialize_all("g_ledger", partition, requested_by="alice")
    assert result.status == RunStatus.WAITING_APPROVAL
    return Approval.objects.get(run_id=result.run_id)


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_admin_lists_pending_first_with_age_time_left_and_message(reviewer: User) -> None:
    first = _pending("large")
    second = _pending("a|b")
    page = _client(reviewer).get("/admin/approvals/approval/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Pay 500 EUR to large?" in html
    assert "Pay 700 EUR to a|b?" in html
    assert html.index(f"/admin/approvals/approval/{first.pk}/decide/") < html.index(
        f"/admin/approvals/approval/{second.pk}/decide/"
    )


def test_admin_approve_resumes_the_run_and_audits_the_user(reviewer: User) -> None:
    approval = _pending()
    client = _client(reviewer)
    form = client.get(f"/admin/approvals/approval/{approval.pk}/decide/")
    assert form.status_code == 200
    assert "Record decision" in form.content.decode()
    response = client.post(
        f"/admin/approvals/approval/{approval.pk}/decide/", {"decision": "approve"}
    )
    assert response.status_code == 302
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by, approval.decided_by_type) == (
        "approved",
        "bob",
        "user",
    )
    assert Run.objects.get(pk=approval.run_id).status == RunStatus.SUCCESS


def test_admin_reject_requires_a_reason(reviewer: User) -> None:
    approval = _pending()
    client = _client(reviewer)
    url = f"/admin/approvals/approval/{approval.pk}/decide/"
    page = client.post(url, {"decision": "reject", "reason": ""})
    assert page.status_code == 200
    assert "A rejection needs a reason." in page.content.decode()
    assert Approval.objects.get(pk=approval.pk).status == "pending"
    client.post(url, {"decision": "reject", "reason": "wrong account"})
    assert Approval.objects.get(pk=approval.pk).status == "rejected"
    assert Run.objects.get(pk=approval.run_id).status == RunStatus.FAILED


def test_admin_modify_validates_the_edited_value(reviewer: User) -> None:
    approval = _pending()
    client = _client(reviewer)
    url = f"/admin/approvals/approval/{approval.pk}/decide/"
    bad = client.post(url, {"decision": "modify", "value": "{not json"})
    assert "value: not valid JSON" in bad.content.decode()
    refused = client.post(url, {"decision": "modify", "value": '{"amount": -3}'}, follow=True)
    assert "amount must be a non-negative integer" in refused.content.decode()
    client.post(url, {"decision": "modify", "value": '{"account": "large", "amount": 420}'})
    approval.refresh_from_db()
    assert (approval.status, approval.decided_value) == (
        "modified",
        {"account": "large", "amount": 420},
    )


def test_admin_bulk_approve_action(reviewer: User) -> None:
    approvals = [_pending("large"), _pending("a|b")]
    response = _client(reviewer).post(
        "/admin/approvals/approval/",
        {"action": "approve_selected", "_selected_action": [a.pk for a in approvals]},
    )
    assert response.status_code == 302
    assert set(Approval.objects.values_list("status", flat=True)) == {"approved"}


def test_admin_refuses_users_without_the_permission(viewer: User) -> None:
    approval = _pending()
    client = _client(viewer)
    assert client.get(f"/admin/approvals/approval/{approval.pk}/decide/").status_code == 403
    assert (
        client.post(
            f"/admin/approvals/approval/{approval.pk}/decide/", {"decision": "approve"}
        ).status_code
        == 403
    )
    client.post(
        "/admin/approvals/approval/",
        {"action": "approve_selected", "_selected_action": [approval.pk]},
    )
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_admin_refuses_the_requester_themself(requester: User) -> None:
    approval = _pending()
    client = _client(requester)
    page = client.get(f"/admin/approvals/approval/{approval.pk}/decide/")
    assert (
        f"requested run {approval.run_id} and may not decide its approval" in page.content.decode()
    )
    response = client.post(
        f"/admin/approvals/approval/{approval.pk}/decide/", {"decision": "approve"}, follow=True
    )
    assert "&#x27;alice&#x27; requested run" in response.content.decode()
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_admin_decisions_need_csrf(reviewer: User) -> None:
    approval = _pending()
    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer)
    response = client.post(
        f"/admin/approvals/approval/{approval.pk}/decide/", {"decision": "approve"}
    )
    assert response.status_code == 403
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def _api(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def test_api_lists_and_decides(reviewer: User) -> None:
    approval = _pending()
    listing = _api(reviewer).get("/api/approvals/?status=pending")
    assert listing.status_code == 200
    assert [a["id"] for a in listing.json()["results"]] == [approval.pk]
    assert listing.json()["results"][0]["run_id"] == str(approval.run_id)
    decided = _api(reviewer).post(
        f"/api/approvals/{approval.pk}/decide/",
        {"decision": "modify", "value": {"account": "large", "amount": 1}},
        format="json",
    )
    assert decided.status_code == 200, decided.content
    assert decided.json()["status"] == "modified"
    again = _api(reviewer).post(
        f"/api/approvals/{approval.pk}/decide/", {"decision": "approve"}, format="json"
    )
    assert again.status_code == 409
    assert "already modified by bob" in again.json()["detail"]


def test_api_refusals(reviewer: User, viewer: User, requester: User) -> None:
    approval = _pending()
    url = f"/api/approvals/{approval.pk}/decide/"
    assert _api(None).post(url, {"decision": "approve"}, format="json").status_code in (401, 403)
    assert _api(None).get("/api/approvals/").status_code in (401, 403)
    assert _api(viewer).post(url, {"decision": "approve"}, format="json").status_code == 403
    assert _api(requester).post(url, {"decision": "approve"}, format="json").status_code == 403
    bad = _api(reviewer).post(url, {"decision": "reject"}, format="json")
    assert (bad.status_code, bad.json()) == (400, {"reason": ["A rejection needs a reason."]})
    assert _api(reviewer).post(url, {"decision": "maybe"}, format="json").status_code == 400
    assert (
        _api(reviewer)
        .post("/api/approvals/999999/decide/", {"decision": "approve"}, format="json")
        .status_code
        == 404
    )
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_command_lists_and_decides(reviewer: User, viewer: User) -> None:
    approval = _pending()
    out = io.StringIO()
    call_command("approvals", "list", "--json", stdout=out)
    assert [a["id"] for a in json.loads(out.getvalue())] == [approval.pk]
    api = APIClient()
    api.force_authenticate(reviewer)
    listed = api.get("/api/approvals/").json()["results"][0]
    assert json.loads(out.getvalue())[0]["run_id"] == listed["run_id"]  # one name for the run
    with pytest.raises(CommandError, match="may not decide"):
        call_command("approvals", "approve", str(approval.pk), "--user", "victor")
    with pytest.raises(CommandError, match="required: --reason"):
        call_command("approvals", "reject", str(approval.pk), "--user", "bob")
    with pytest.raises(CommandError, match="needs a reason"):
        call_command("approvals", "reject", str(approval.pk), "--user", "bob", "--reason", " ")
    out = io.StringIO()
    call_command("approvals", "approve", str(approval.pk), "--user", "bob", stdout=out)
    assert out.getvalue().startswith(f"approval {approval.pk}: approved")
    with pytest.raises(CommandError, match="already approved"):
        call_command("approvals", "approve", str(approval.pk), "--user", "bob")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"account": "large\\u0000", "amount": 1}', "string contains a NUL character"),
        ("[" * 100_000 + "]" * 100_000, "nested deeper than 32 levels"),
        ('{"amount": NaN}', "nan is not a finite number"),
    ],
    ids=["nul", "deep", "nan"],
)
def test_admin_modify_refuses_bad_json_values_on_the_form(
    reviewer: User, text: str, error: str
) -> None:
    approval = _pending()
    url = f"/admin/approvals/approval/{approval.pk}/decide/"
    page = _client(reviewer).post(url, {"decision": "modify", "value": text})
    assert page.status_code == 200
    assert error in page.context["form"].errors["value"][0]
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_admin_shows_a_validator_error_on_the_form(
    reviewer: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: CheckpointSpec, review: Review, value: Any) -> Any:
        raise ValueError("amounts over 9 need a second reviewer")

    monkeypatch.setattr(CheckpointSpec, "modified_value", refuse)
    approval = _pending()
    url = f"/admin/approvals/approval/{approval.pk}/decide/"
    page = _client(reviewer).post(url, {"decision": "modify", "value": '{"amount": 10}'})
    assert page.status_code == 200
    refused = "the checkpoint refused the modified value: ValueError: amounts over 9 need a"
    assert page.context["form"].errors["value"] == [f"{refused} second reviewer"]
    assert "amounts over 9 need a second reviewer" in page.content.decode()
    assert Approval.objects.get(pk=approval.pk).status == "pending"


@pytest.mark.parametrize(
    "value",
    ['{"account": "\\u0000"}', "{not json", "[" * 100_000],
    ids=["nul", "malformed", "deep"],
)
def test_command_refuses_bad_values_as_invalid_input(reviewer: User, value: str) -> None:
    approval = _pending()
    with pytest.raises(CommandError) as caught:
        call_command("approvals", "modify", str(approval.pk), "--user", "bob", "--value", value)
    assert caught.value.returncode == EXIT_INVALID
    assert str(caught.value).startswith("--value")
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_command_reports_a_refused_value_as_invalid_input(reviewer: User) -> None:
    approval = _pending()
    with pytest.raises(CommandError, match="amount must be a non-negative") as caught:
        call_command(
            "approvals", "modify", str(approval.pk), "--user", "bob", "--value", '{"amount": -1}'
        )
    assert caught.value.returncode == EXIT_INVALID
