"""Stale approvals, bulk decisions and the reason limit in the admin, the API and the command."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

import flowstone
from approvals.models import Approval
from assets.cli import EXIT_INVALID
from flowstone.status import RunStatus
from lineage.models import AuditEvent
from tests.conftest import UseDefinitions
from tests.pipelines import stale_gates

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

TOO_LONG = "r" * 2001
TOO_LONG_MESSAGE = "the reason is 2001 characters long; at most 2000 are allowed"
EXIT_REFUSED = 1


@pytest.fixture(autouse=True)
def _stale_gates(
    use_definitions: UseDefinitions, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLOWSTONE_DATA_DIR", str(tmp_path))
    use_definitions("tests.pipelines.stale_gates", resources={})


@pytest.fixture
def reviewer() -> User:
    user = User.objects.create_user("bob", is_staff=True)
    for codename in ("decide_approval", "view_approval", "view_run"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def _admin(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _api(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def _stale() -> Approval:
    result = flowstone.materialize_all("s_invoice", "eu", requested_by="alice")
    assert result.status == RunStatus.WAITING_APPROVAL
    stale_gates.set_rate("eu", 12)
    flowstone.materialize("s_rate", "eu")
    approval = Approval.objects.get(run_id=result.run_id)
    assert approval.status == "stale"
    return approval


def _days(count: int) -> list[Approval]:
    first = dt.date(2025, 1, 1)
    flowstone.backfill(
        "s_daily", [first + dt.timedelta(days=n) for n in range(count)], requested_by="alice"
    )
    return list(Approval.objects.filter(asset="s_daily").order_by("partition_key"))


def _nothing_decided() -> None:
    assert not Approval.objects.exclude(status__in=("pending", "stale")).exists()
    assert not AuditEvent.objects.filter(
        action__in=("checkpoint.approved", "checkpoint.rejected", "checkpoint.modified")
    ).exists()


def test_api_refuses_a_stale_approval_with_409_and_rereviews_it(reviewer: User) -> None:
    stale = _stale()
    refused = _api(reviewer).post(
        f"/api/approvals/{stale.pk}/decide/", {"decision": "approve"}, format="json"
    )
    assert refused.status_code == 409
    assert "is stale" in refused.json()["detail"]
    shown = _api(reviewer).get(f"/api/approvals/{stale.pk}/").json()
    assert shown["status"] == "stale"
    assert shown["inputs"][0]["asset"] == "s_rate"
    again = _api(reviewer).post(f"/api/approvals/{stale.pk}/rereview/")
    assert again.status_code == 200, again.content
    assert again.json()["rereviewed_by"] == "bob"
    fresh = Approval.objects.get(status="pending")
    assert fresh.proposed_value == {"rate": 12, "price": 36}
    twice = _api(reviewer).post(f"/api/approvals/{stale.pk}/rereview/")
    assert twice.status_code == 409
    assert _api(reviewer).post("/api/approvals/999999/rereview/").status_code == 404
    assert _api(None).post(f"/api/approvals/{fresh.pk}/rereview/").status_code in (401, 403)


def test_api_bulk_decision_by_ids_and_by_asset(reviewer: User) -> None:
    first, second, third = _days(3)
    _api(reviewer).post(
        f"/api/approvals/{first.pk}/decide/", {"decision": "reject", "reason": "no"}, format="json"
    )
    by_ids = _api(reviewer).post(
        "/api/approvals/decide/",
        {"decision": "approve", "ids": [first.pk, second.pk, 999_999]},
        format="json",
    )
    assert by_ids.status_code == 200, by_ids.content
    body = by_ids.json()
    assert (body["decision"], body["decided"], body["voted"], body["refused"]) == (
        "approve",
        1,
        0,
        2,
    )
    assert [(r["id"], r["status"], r["refused"]) for r in body["results"]] == [
        (first.pk, "", "already_decided"),
        (second.pk, "approved", ""),
        (999_999, "", "not_found"),
    ]
    by_asset = _api(reviewer).post(
        "/api/approvals/decide/",
        {"decision": "reject", "reason": "wrong day", "asset": "s_daily"},
        format="json",
    )
    assert [(r["id"], r["status"]) for r in by_asset.json()["results"]] == [(third.pk, "rejected")]
    assert AuditEvent.objects.filter(action="checkpoint.rejected", actor="bob").count() == 2


@pytest.mark.parametrize(
    "body",
    [
        {"decision": "approve"},
        {"decision": "approve", "ids": [1], "asset": "s_daily"},
        {"decision": "approve", "ids": []},
        {"decision": "approve", "ids": ["x"]},
        {"decision": "approve", "ids": [-1]},
        {"decision": "approve", "ids": [2**63]},  # beyond any 64-bit key (a 500 on SQLite once)
        {"decision": "approve", "ids": [10**30]},
        {"decision": "approve", "ids": list(range(1, 1002))},
        {"decision": "approve", "ids": [1], "partition_keys": ["d:2025-01-01"]},
        {"decision": "modify", "ids": [1]},
        {"decision": "reject", "asset": "s_daily"},
        {"decision": "reject", "asset": "s_daily", "reason": TOO_LONG},
        {"decision": "approve", "asset": "s_daily", "partition_keys": "d:2025-01-01"},
    ],
)
def test_api_bulk_bad_input_is_400_and_decides_nothing(reviewer: User, body: object) -> None:
    _days(2)
    response = _api(reviewer).post("/api/approvals/decide/", body, format="json")
    assert response.status_code == 400, response.content
    _nothing_decided()


def test_api_bulk_needs_the_decide_permission_and_json(reviewer: User) -> None:
    (approval,) = _days(1)
    viewer = User.objects.create_user("victor")
    viewer.user_permissions.add(Permission.objects.get(codename="view_approval"))
    body = {"decision": "approve", "ids": [approval.pk]}
    assert _api(viewer).post("/api/approvals/decide/", body, format="json").status_code == 403
    assert _api(None).post("/api/approvals/decide/", body, format="json").status_code in (401, 403)
    broken = _api(reviewer).post(
        "/api/approvals/decide/", "{not json", content_type="application/json"
    )
    assert broken.status_code == 400
    _nothing_decided()


def test_the_openapi_schema_documents_bulk_decisions_and_rereview() -> None:
    schema = SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-untyped-call]
    bulk = schema["paths"]["/api/approvals/decide/"]["post"]
    assert "BulkResult" in json.dumps(bulk["responses"]["200"])
    result = schema["components"]["schemas"]["BulkResult"]
    assert {"decided", "voted", "refused"} <= set(result["required"])
    assert "quorum" in result["properties"]["voted"]["description"]
    assert "post" in schema["paths"]["/api/approvals/{id}/rereview/"]


def test_the_over_long_reason_is_refused_alike_in_every_console(reviewer: User) -> None:
    (approval,) = _days(1)
    page = _admin(reviewer).post(
        f"/admin/approvals/approval/{approval.pk}/decide/",
        {"decision": "reject", "reason": TOO_LONG},
    )
    assert page.status_code == 200
    assert TOO_LONG_MESSAGE in page.content.decode()
    api = _api(reviewer).post(
        f"/api/approvals/{approval.pk}/decide/",
        {"decision": "reject", "reason": TOO_LONG},
        format="json",
    )
    assert (api.status_code, api.json()["detail"]) == (400, TOO_LONG_MESSAGE)
    with pytest.raises(CommandError, match=TOO_LONG_MESSAGE) as raised:
        call_command("approvals", "reject", str(approval.pk), "--user", "bob", "--reason", TOO_LONG)
    assert raised.value.returncode == EXIT_INVALID
    with pytest.raises(CommandError, match=TOO_LONG_MESSAGE) as bulk:
        call_command(
            "approvals", "reject", "--asset", "s_daily", "--pending", "--user", "bob",
            "--reason", TOO_LONG,
        )  # fmt: skip
    assert bulk.value.returncode == EXIT_INVALID
    _nothing_decided()
    assert Approval.objects.get(pk=approval.pk).reason == ""


def test_admin_bulk_reject_asks_one_reason_and_shows_the_limit_on_the_form(
    reviewer: User,
) -> None:
    approvals = _days(3)
    selected = {"action": "reject_selected", "_selected_action": [a.pk for a in approvals]}
    client = _admin(reviewer)
    ask = client.post("/admin/approvals/approval/", selected)
    assert ask.status_code == 200
    assert "One reason for every selected approval" in ask.content.decode()
    too_long = client.post(
        "/admin/approvals/approval/", {**selected, "reject_reason": "1", "reason": TOO_LONG}
    )
    assert TOO_LONG_MESSAGE in too_long.content.decode()
    _nothing_decided()
    done = client.post(
        "/admin/approvals/approval/",
        {**selected, "reject_reason": "1", "reason": "wrong month"},
        follow=True,
    )
    assert "Rejected 3 approval(s)." in done.content.decode()
    assert {a.reason for a in Approval.objects.all()} == {"wrong month"}
    assert AuditEvent.objects.filter(action="checkpoint.rejected", actor="bob").count() == 3


def test_admin_bulk_approve_reports_each_refusal(reviewer: User) -> None:
    first, second = _days(2)
    Approval.objects.filter(pk=first.pk).update(status="stale")
    done = _admin(reviewer).post(
        "/admin/approvals/approval/",
        {"action": "approve_selected", "_selected_action": [first.pk, second.pk]},
        follow=True,
    )
    html = done.content.decode()
    assert f"Approval {first.pk}: approval {first.pk} is stale" in html
    assert "Approved 1 approval(s)." in html
    assert Approval.objects.get(pk=second.pk).status == "approved"


def test_admin_shows_a_stale_approval_refuses_approving_and_rereviews(reviewer: User) -> None:
    stale = _stale()
    client = _admin(reviewer)
    url = f"/admin/approvals/approval/{stale.pk}/decide/"
    page = client.get(url).content.decode()
    assert 'id="stale-note"' in page
    assert "Re-review against the new value" in page
    refused = client.post(url, {"decision": "approve"}, follow=True).content.decode()
    assert "is stale" in refused
    assert Approval.objects.get(pk=stale.pk).status == "stale"
    assert client.get(f"/admin/approvals/approval/{stale.pk}/rereview/").status_code == 403
    sent = client.post(f"/admin/approvals/approval/{stale.pk}/rereview/", follow=True)
    assert "a fresh approval follows" in sent.content.decode()
    fresh = Approval.objects.get(status="pending")
    assert fresh.proposed_value == {"rate": 12, "price": 36}
    again = client.post(f"/admin/approvals/approval/{stale.pk}/rereview/", follow=True)
    assert "already reviewed again" in again.content.decode()


def test_command_bulk_decides_by_asset_and_by_ids_with_per_approval_lines(
    reviewer: User,
) -> None:
    first, second, third = _days(3)
    out = io.StringIO()
    call_command("approvals", "approve", str(first.pk), "--user", "bob", stdout=out)
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 of 2 approval") as refused:
        call_command(
            "approvals", "approve", str(first.pk), str(second.pk), "--user", "bob", stdout=out
        )
    assert refused.value.returncode == EXIT_REFUSED
    assert out.getvalue().splitlines() == [
        (
            f"approval {first.pk}: refused (already_decided): approval {first.pk} is already "
            "approved by bob"
        ),
        f"approval {second.pk}: approved",
    ]
    out = io.StringIO()
    call_command(
        "approvals", "reject", "--asset", "s_daily", "--pending", "--user", "bob",
        "--reason", "closed", "--json", stdout=out,
    )  # fmt: skip
    assert json.loads(out.getvalue()) == [
        {"id": third.pk, "status": "rejected", "refused": "", "message": ""}
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["approve", "--user", "bob"],
        ["approve", "--asset", "s_daily", "--user", "bob"],
        ["approve", "1", "--asset", "s_daily", "--pending", "--user", "bob"],
        ["approve", "1", "--pending", "--user", "bob"],
        ["approve", "1", "x2", "--user", "bob"],
        ["rereview", "abc", "--user", "bob"],
    ],
)
def test_command_bulk_bad_input_exits_2(reviewer: User, argv: list[str]) -> None:
    _days(1)
    with pytest.raises(CommandError) as raised:
        call_command("approvals", *argv)
    assert raised.value.returncode == EXIT_INVALID
    _nothing_decided()


def test_command_rereviews_a_stale_approval(reviewer: User) -> None:
    stale = _stale()
    with pytest.raises(CommandError, match="is stale") as refused:
        call_command("approvals", "approve", str(stale.pk), "--user", "bob")
    assert refused.value.returncode == EXIT_REFUSED
    out = io.StringIO()
    call_command("approvals", "rereview", str(stale.pk), "--user", "bob", stdout=out)
    assert out.getvalue().startswith(f"approval {stale.pk}: stale")
    assert Approval.objects.get(status="pending").proposed_value == {"rate": 12, "price": 36}
    with pytest.raises(CommandError, match="already reviewed again") as twice:
        call_command("approvals", "rereview", str(stale.pk), "--user", "bob")
    assert twice.value.returncode == EXIT_REFUSED


BAD_IDS = [
    "999999",
    "\u00b2",  # "²".isdigit() is true; int() refuses it
    "\u0663",  # an Arabic-Indic three: int() reads it, no approval has that id
    "1_0",
    " 7",
    "-1",
    "99999999999999999999999",
    "x" * 200,
]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_command_an_unknown_or_non_ascii_id_is_invalid_input_alone_or_in_a_list(
    reviewer: User, bad: str
) -> None:
    first, second = _days(2)
    for argv in ([bad], [str(first.pk), bad, str(second.pk)], [str(first.pk), str(second.pk), bad]):
        out = io.StringIO()
        with pytest.raises(CommandError) as raised:
            call_command("approvals", "approve", *argv, "--user", "bob", stdout=out)
        assert raised.value.returncode == EXIT_INVALID
        assert len(str(raised.value).splitlines()) == 1
        assert "unknown approval" in str(raised.value)
        assert out.getvalue() == ""
    _nothing_decided()


def test_command_names_every_unknown_id_of_a_list(reviewer: User) -> None:
    (day,) = _days(1)
    with pytest.raises(CommandError) as raised:
        call_command("approvals", "reject", "999998", str(day.pk), "999999", "999998",
                     "--user", "bob", "--reason", "no")  # fmt: skip
    assert raised.value.returncode == EXIT_INVALID
    assert "unknown approval(s): 999998, 999999; nothing was decided" in str(raised.value)
    _nothing_decided()


def test_admin_rereview_sends_an_inbox_only_reviewer_back_to_the_inbox() -> None:
    stale = _stale()
    inbox_only = User.objects.create_user("ivo", is_staff=True)
    inbox_only.user_permissions.add(Permission.objects.get(codename="decide_approval"))
    client = _admin(inbox_only)
    response = client.post(f"/admin/approvals/approval/{stale.pk}/rereview/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/approvals/approval/mine/"
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert "a fresh approval follows" in page.content.decode()
    assert Approval.objects.get(pk=stale.pk).rereviewed_by == "ivo"
