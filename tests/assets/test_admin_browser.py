"""The admin's asset graph page and a run's page, in headless Chromium."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from django.contrib.auth.models import User

import flowstone
from tests.browser import browser_page, log_in
from tests.conftest import UseDefinitions

__all__ = ["browser_page"]

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

PASSWORD = "test-only-password"  # noqa: S105  # a throwaway user in the test database


def test_the_asset_graph_and_a_run_render_in_a_browser(
    use_definitions: UseDefinitions, live_server: Any, browser_page: Any
) -> None:
    use_definitions("tests.pipelines.diamond")
    User.objects.create_superuser("root", password=PASSWORD)
    result = flowstone.materialize_all("sink", "eu")

    page = browser_page
    log_in(page, live_server.url, "root", PASSWORD, "/admin/assets/run/")
    page.click("text=Asset graph")
    page.wait_for_url("**/admin/assets/run/asset-graph/")
    if shutil.which("dot"):
        nodes = page.locator("#asset-graph svg g.node title").all_text_contents()
        assert {"source", "left", "right", "sink"} <= set(nodes)
        assert page.locator("#asset-graph svg g.edge").count() >= 4
    assert "left → sink" in page.inner_text("#asset-edges")

    page.goto(f"{live_server.url}/admin/assets/run/{result.run_id}/change/")
    rows = page.locator("#run-steps tbody tr").all_inner_texts()
    assert [row.split()[0] for row in rows] == ["source", "left", "right", "sink"]
    assert all("success" in row for row in rows)
