"""The admin for runs and materializations: lists, run pages with steps in DAG order, the graph."""

from __future__ import annotations

import shutil

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

import flowstone
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


@pytest.fixture
def admin_client(use_definitions: UseDefinitions) -> Client:
    use_definitions(
        "tests.pipelines.diamond",
        "tests.pipelines.gates",
        resources={
            "counter": {"CLASS": "tests.pipelines.resources.CountingResource", "OPTIONS": {}}
        },
    )
    client = Client()
    client.force_login(User.objects.create_superuser("root", password=None))
    return client


def test_run_page_lists_steps_in_dag_order(admin_client: Client) -> None:
    result = flowstone.materialize_all("sink", "eu")
    page = admin_client.get(f"/admin/assets/run/{result.run_id}/change/").content.decode()
    table = page[page.index('id="run-steps"') :]
    positions = [table.index(f">{asset}</a>") for asset in ("source", "left", "right", "sink")]
    assert positions == sorted(positions)
    assert table.count("step-success") == 4


def test_lists_have_no_n_plus_one_queries(admin_client: Client) -> None:
    flowstone.materialize_all("sink", "eu")
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get("/admin/assets/materialization/").status_code == 200
    for region in ("us", "a|b:c"):
        flowstone.materialize_all("sink", region)
    with CaptureQueriesContext(connection) as many:
        assert admin_client.get("/admin/assets/materialization/").status_code == 200
    assert len(many) == len(few)
    with CaptureQueriesContext(connection) as runs:
        page = admin_client.get("/admin/assets/run/?status__exact=success")
    assert page.status_code == 200
    assert len(runs) < 15
    assert admin_client.get("/admin/assets/materialization/?q=sink").status_code == 200


def test_asset_graph_page(admin_client: Client) -> None:
    page = admin_client.get("/admin/assets/run/asset-graph/")
    assert page.status_code == 200
    html = page.content.decode()
    if shutil.which("dot"):
        assert "<svg" in html
    else:
        assert "Graphviz&#x27;s `dot` is not installed" in html
    assert "left &rarr; sink" in html
    assert "Asset graph" in admin_client.get("/admin/assets/run/").content.decode()


def test_asset_graph_needs_the_view_permission(admin_client: Client) -> None:
    client = Client()
    client.force_login(User.objects.create_user("nobody", is_staff=True))
    assert client.get("/admin/assets/run/asset-graph/").status_code == 403
