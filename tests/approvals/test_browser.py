"""End to end in headless Chromium: log in, open the pending queue, approve, see the run end."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connections

import flowstone
from approvals.models import Approval
from assets.models import Run
from flowstone.status import RunStatus
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PASSWORD = "test-only-password"  # noqa: S105  # a throwaway user in the test database
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    return os.environ.get("FLOWSTONE_TEST_CHROMIUM") or shutil.which("chromium")


@pytest.fixture
def browser_page(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    executable = _chromium()
    if executable is None:
        pytest.skip("no chromium on this machine (scripts/test.sh installs Debian's as root)")
    from playwright.sync_api import sync_playwright  # noqa: PLC0415  # only when a browser exists

    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls are
    # synchronous and safe, so tell Django's async guard (test-only).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            yield page
        finally:
            browser.close()
            # Connections opened while Playwright's loop ran belong to that context; close them
            # here, or the test database cannot be dropped.
            connections.close_all()


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
    page.goto(f"{live_server.url}/admin/login/?next=/admin/approvals/approval/")
    page.fill("#id_username", "reviewer")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/approvals/approval/")
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
