"""The admin for runs and materializations: lists, run pages with steps in DAG order, the graph."""

from __future__ import annotations

import shutil

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

import flowstone
from assets import services
from assets.models import Run
from flowstone.status import RunKind, RunStatus, StepStatus
from lineage.models import AuditEvent
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


def _unfinished_run() -> services.CreatedRun:
    """A worker run nobody serves: ``source`` queued, ``left`` pending behind it."""
    return services.create_run(
        services.RunRequest(
            kind=RunKind.MATERIALIZE_ALL,
            selection=["left"],
            steps=[
                services.StepRequest(asset="source", partition_key="s:eu"),
                services.StepRequest(
                    asset="left", partition_key="s:eu", upstream_keys=(("source", "s:eu"),)
                ),
            ],
        )
    )


def test_cancel_action_cancels_unfinished_runs_and_is_audited(admin_client: Client) -> None:
    finished = flowstone.materialize_all("sink", "eu")
    waiting = _unfinished_run()
    assert waiting.ready  # source was released (queued), left waits (pending)

    response = admin_client.post(
        "/admin/assets/run/",
        {"action": "cancel_runs", "_selected_action": [str(waiting.run.pk), finished.run_id]},
        follow=True,
    )

    assert response.status_code == 200
    page = response.content.decode()
    assert "Cancelled 1 run(s): 2 step(s) will not run" in page
    assert "1 finished run(s) left as they were" in page
    run = Run.objects.get(pk=waiting.run.pk)
    assert run.status == RunStatus.CANCELED
    assert run.finished_at is not None
    assert set(run.materializations.values_list("status", flat=True)) == {StepStatus.CANCELED}
    assert Run.objects.get(pk=finished.run_id).status == RunStatus.SUCCESS
    event = AuditEvent.objects.get(action=AuditEvent.Action.RUN_CANCELED)
    assert (event.actor, event.actor_type, str(event.run_id)) == ("root", "user", str(run.pk))


def test_cancel_action_needs_the_change_permission(admin_client: Client) -> None:
    waiting = _unfinished_run()
    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_run"))
    client = Client()
    client.force_login(viewer)

    assert "cancel_runs" not in client.get("/admin/assets/run/").content.decode()
    client.post(
        "/admin/assets/run/",
        {"action": "cancel_runs", "_selected_action": [str(waiting.run.pk)]},
    )

    assert Run.objects.get(pk=waiting.run.pk).cancel_requested_at is None
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.RUN_CANCELED).exists()
