"""The admin under hostile use: no login, no staff flag, no CSRF token, deciding one's own run.

``tests/approvals/test_console.py`` covers the decision form (permission, self-approval, CSRF)
and the API/command refusals; these tests cover the rest (see ``tests/security/test_index.py``).
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

import flowstone
from approvals.models import Approval
from flowstone.status import RunStatus
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db]

ADMIN_PAGES = [
    "/admin/",
    "/admin/approvals/approval/",
    "/admin/assets/run/",
    "/admin/assets/materialization/",
    "/admin/lineage/auditevent/",
]


@pytest.fixture(autouse=True)
def _gates(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.gates", resources={})


def _user(name: str, *perms: str, is_staff: bool = True) -> User:
    user = User.objects.create_user(name, password="pw-" + name, is_staff=is_staff)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def _pending(partition: str = "large", requested_by: str = "alice") -> Approval:
    result = flowstone.materialize_all("g_ledger", partition, requested_by=requested_by)
    assert result.status == RunStatus.WAITING_APPROVAL
    return Approval.objects.get(run_id=result.run_id)


def _bulk_approve(client: Client, *approvals: Approval) -> int:
    response = client.post(
        "/admin/approvals/approval/",
        {"action": "approve_selected", "_selected_action": [a.pk for a in approvals]},
    )
    return int(response.status_code)


def test_anonymous_admin_requests_go_to_the_login_page() -> None:
    approval = _pending()
    client = Client()
    for url in [*ADMIN_PAGES, f"/admin/approvals/approval/{approval.pk}/decide/"]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/"), url
    decided = client.post(
        f"/admin/approvals/approval/{approval.pk}/decide/", {"decision": "approve"}
    )
    assert decided.status_code == 302
    assert _bulk_approve(client, approval) == 302
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_users_without_the_staff_flag_cannot_use_the_admin() -> None:
    approval = _pending()
    outsider = _user("mallory", "decide_approval", "view_approval", "view_run", is_staff=False)
    client = Client()
    client.force_login(outsider)
    for url in [*ADMIN_PAGES, f"/admin/approvals/approval/{approval.pk}/decide/"]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/"), url
    assert _bulk_approve(client, approval) == 302
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_staff_without_model_permissions_see_nothing() -> None:
    client = Client()
    client.force_login(_user("sam"))
    for url in ADMIN_PAGES[1:]:
        assert client.get(url).status_code == 403, url


def test_the_bulk_approve_action_needs_csrf() -> None:
    approval = _pending()
    client = Client(enforce_csrf_checks=True)
    client.force_login(_user("bob", "decide_approval", "view_approval", "view_run"))
    assert _bulk_approve(client, approval) == 403
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_the_bulk_approve_action_refuses_self_approval() -> None:
    own = _pending("large", requested_by="alice")
    other = _pending("a|b", requested_by="carol")
    client = Client()
    client.force_login(_user("alice", "decide_approval", "view_approval"))
    page = client.post(
        "/admin/approvals/approval/",
        {"action": "approve_selected", "_selected_action": [own.pk, other.pk]},
        follow=True,
    )
    assert f"Approval {own.pk}:" in page.content.decode()
    assert Approval.objects.get(pk=own.pk).status == "pending"
    assert Approval.objects.get(pk=other.pk).status == "approved"
