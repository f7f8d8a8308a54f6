"""End to end in headless Chromium: log in, open the pending queue, approve, see the run end."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User

import flowstone
from approvals.models import Approval
from assets.models import Run
from flowstone.status import RunStatus
from tests.browser import browser_page, log_in
from tests.conftest import UseDefinitions

__all__ = ["browser_page"]

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PASSWORD = "test-only-password"  # noqa: S105  # a throwaway user in the test database


def test_a_reviewer_approves_in_the_admin_and_the_run_finishes(
    use_definitions: UseDefinitions, live_server: Any, browser_page: Any
) -> None:
    use_definitions("tests.pipelines.gates", resources={})
    reviewer = User.objects.create_user("reviewer", password=PASSWORD, is_staff=True)
    for codename in ("decide_approval", "view_approval", "view_run"):
        reviewer.user_permissions.add(Permission.objects.get(codename=codename))
    result = flowstone.materialize_all("g_ledger", "large", requested_by="alice")
    assert result.status == RunStatus.WAITING_APPROVAL
    approval = Approval.objects.get(run_id=result.run_id)

    page = browser_page
    log_in(page, live_server.url, "reviewer", PASSWORD, "/admin/approvals/approval/")
    assert "Pay 500 EUR to large?" in page.content()

    page.click(f"a[href='/admin/approvals/approval/{approval.pk}/decide/']")
    assert json.loads(page.inner_text("#proposed-value")) == {"account": "large", "amount": 500}
    page.check("input[name=decision][value=approve]")
    page.click("#record-decision")
    page.wait_for_url("**/admin/approvals/approval/")
    assert f"Approval {approval.pk}: approve recorded." in page.content()

    page.goto(f"{live_server.url}/admin/assets/run/{result.run_id}/change/")
    assert "success" in page.content()
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by) == ("approved", "reviewer")
    assert Run.objects.get(pk=result.run_id).status == RunStatus.SUCCESS


def test_a_typed_review_form_shows_errors_by_the_field_then_decides(
    use_definitions: UseDefinitions, live_server: Any, browser_page: Any
) -> None:
    use_definitions("tests.pipelines.review_forms", resources={})
    reviewer = User.objects.create_user("reviewer", password=PASSWORD, is_staff=True)
    for codename in ("decide_approval", "view_approval", "view_run"):
        reviewer.user_permissions.add(Permission.objects.get(codename=codename))
    result = flowstone.materialize_all("rf_report", requested_by="alice")
    approval = Approval.objects.get(run_id=result.run_id)

    page = browser_page
    decide = f"/admin/approvals/approval/{approval.pk}/decide/"
    log_in(page, live_server.url, "reviewer", PASSWORD, decide)
    assert page.input_value("#id_value_0") == "120.5"  # amount, from the proposed value
    assert page.get_attribute("#id_value_0", "type") == "number"
    assert page.input_value("#id_value_2") == '"EUR"'  # currency, an enum

    page.check("input[name=decision][value=modify]")
    page.fill("#id_value_0", "")  # the schema requires the amount
    page.fill("#id_value_4", '[1, "two"]')  # lines: integers only
    page.click("#record-decision")
    page.wait_for_selector("#id_value_0_error")
    assert page.inner_text("#id_value_0_error") == "This field is required."
    assert "'two' is not of type 'integer'" in page.inner_text("#id_value_4_error")
    beside = "document.querySelector('#id_value_0_error').nextElementSibling"
    assert page.evaluate(f"{beside}.querySelector('#id_value_0') !== null")
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING

    page.check("input[name=decision][value=modify]")
    page.fill("#id_value_0", "75")
    page.fill("#id_value_4", "[3]")
    page.select_option("#id_value_2", '"USD"')
    page.click("#record-decision")
    page.wait_for_url("**/admin/approvals/approval/")
    assert f"Approval {approval.pk}: modify recorded." in page.content()
    approval.refresh_from_db()
    assert approval.status == Approval.Status.MODIFIED
    assert flowstone.load_value("rf_payment") == {
        "amount": 75,
        "currency": "USD",
        "note": "March",
        "lines": [3],
        "urgent": False,
    }
    assert Run.objects.get(pk=result.run_id).status == RunStatus.SUCCESS


def test_a_group_member_finds_and_votes_in_my_pending_decisions(
    use_definitions: UseDefinitions, live_server: Any, browser_page: Any
) -> None:
    use_definitions("tests.pipelines.deciders", resources={})
    finance = Group.objects.create(name="finance")
    for name in ("fiona", "frank"):
        member = User.objects.create_user(name, password=PASSWORD, is_staff=True)
        member.user_permissions.add(Permission.objects.get(codename="decide_approval"))
        member.groups.add(finance)
    quorum = flowstone.materialize_all("d_quorum", "large", requested_by="alice")
    # for bob only; the same invoice (a new one would make the first approval stale)
    flowstone.materialize("d_escalating", "large", requested_by="alice")
    approval = Approval.objects.get(run_id=quorum.run_id)

    page = browser_page
    log_in(page, live_server.url, "fiona", PASSWORD, "/admin/")
    page.click("a[href='/admin/approvals/approval/mine/']")
    rows = page.locator("tr.pending-decision")
    assert rows.count() == 1  # bob's approval is not hers
    assert rows.first.get_attribute("data-approval") == str(approval.pk)
    assert page.inner_text("tr.pending-decision td.votes") == "0 of 2"

    page.click(f"a[href='/admin/approvals/approval/{approval.pk}/decide/']")
    page.check("input[name=decision][value=approve]")
    page.click("#record-decision")
    page.wait_for_url("**/admin/approvals/approval/mine/")  # she may not view the full list
    assert f"Approval {approval.pk}: your vote is recorded (1 of 2)." in page.content()
    assert page.inner_text("tr.pending-decision td.votes") == "1 of 2 (you voted)"
    assert Run.objects.get(pk=quorum.run_id).status == RunStatus.WAITING_APPROVAL
