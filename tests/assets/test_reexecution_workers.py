"""Launching and re-executing from the admin and the API, on a real Celery worker.

A run fails on the worker; ``POST /api/runs/{id}/reexecute/``, the admin action and the admin
page in a browser each start a run of what failed, which the worker finishes reading the first
run's upstream success. The launch form starts runs and turns bad input into form errors.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from pytest_django import Settings
from rest_framework.test import APIClient

import flowstone
from assets.models import Materialization, Run
from flowstone.status import RunKind, RunStatus, StepStatus
from lineage.models import LineageEdge
from tests.browser import browser_page, log_in
from tests.workers import Services, worker_stack

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

__all__ = ["browser_page"]  # the fixture, used by name

WAIT = 60
PASSWORD = "test-only-password"  # noqa: S105  # a throwaway user in the test database


@pytest.fixture
def stack(settings: Settings, tmp_path: Path) -> Iterator[Services]:
    flag = tmp_path / "fail"
    with worker_stack(settings, tmp_path, "tests.pipelines.reexec") as started:
        started.extra_env["REEXEC_FAIL_FILE"] = str(flag)
        yield started


def _flag(stack: Services) -> Path:
    return Path(stack.extra_env["REEXEC_FAIL_FILE"])


def _failed_run(stack: Services, partition: str = "a") -> str:
    _flag(stack).write_text("")
    stack.start_worker("w1", concurrency=2)
    result = flowstone.materialize_all_async("r_sink", partition).wait(WAIT)
    assert result.status == RunStatus.FAILED
    _flag(stack).unlink()
    return result.run_id


def _reads_the_first_runs_source(first: str, again: str) -> None:
    result = flowstone.RunHandle(again).wait(WAIT)
    assert result.status == RunStatus.SUCCESS
    assert sorted(s.asset for s in result.steps) == ["r_mid", "r_sink"]
    source = Materialization.objects.get(run_id=first, asset="r_source")
    mid = Materialization.objects.get(run_id=again, asset="r_mid")
    upstreams = LineageEdge.objects.filter(downstream=mid).values_list("upstream_id", flat=True)
    assert list(upstreams) == [source.pk]
    assert flowstone.load_value("r_sink", "a") == f"sink(mid(a@{first}))"


def _user(*permissions: str, staff: bool = False) -> User:
    user = User.objects.create_user("operator", password=PASSWORD, is_staff=staff)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def test_the_api_reexecutes_a_failed_run_on_the_worker(stack: Services) -> None:
    first = _failed_run(stack)
    api = APIClient()
    api.force_authenticate(_user("add_run", "view_run"))

    answer = api.post(f"/api/runs/{first}/reexecute/")

    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert body["kind"] == RunKind.REEXECUTE
    assert body["requested_by"] == "operator"
    _reads_the_first_runs_source(first, body["id"])
    # Each refusal is a documented status code with a clear message; nothing is recorded.
    runs = Run.objects.count()
    assert api.post(f"/api/runs/{first}/reexecute/").status_code == 201  # failed: allowed again
    keyed = api.post(f"/api/runs/{first}/reexecute/", HTTP_IDEMPOTENCY_KEY="retry-1")
    again = api.post(f"/api/runs/{first}/reexecute/", HTTP_IDEMPOTENCY_KEY="retry-1")
    assert (keyed.status_code, again.status_code) == (201, 200)  # a client's retry: one run
    assert again.json()["id"] == keyed.json()["id"]
    assert api.post(f"/api/runs/{body['id']}/reexecute/").status_code == 409  # it succeeded
    assert api.post(f"/api/runs/{uuid.uuid4()}/reexecute/").status_code == 404
    assert api.post("/api/runs/not-a-run/reexecute/").status_code == 404
    assert Run.objects.count() == runs + 2
    viewer = APIClient()
    viewer.force_authenticate(User.objects.create_user("viewer", password=PASSWORD))
    viewer_user = User.objects.get(username="viewer")
    viewer_user.user_permissions.add(Permission.objects.get(codename="view_run"))
    refused = viewer.post(f"/api/runs/{first}/reexecute/")
    assert refused.status_code == 403
    assert Run.objects.count() == runs + 2


def test_the_admin_action_reexecutes_failed_runs_and_says_why_it_skips_others(
    stack: Services,
) -> None:
    first = _failed_run(stack)
    succeeded = flowstone.materialize_async("r_source", "b").wait(WAIT)
    client = Client()
    client.force_login(User.objects.create_superuser("root", password=PASSWORD))

    page = client.post(
        "/admin/assets/run/",
        {"action": "reexecute_runs", "_selected_action": [first, succeeded.run_id]},
        follow=True,
    )

    text = page.content.decode()
    assert "Started 1 re-execution run(s)" in text
    assert "has no failed or canceled step to re-execute" in text
    again = Run.objects.get(parent_run_id=uuid.UUID(first))
    assert again.requested_by == "root"
    _reads_the_first_runs_source(first, str(again.pk))


def test_the_launch_form_starts_runs_and_rejects_bad_input_with_form_errors(
    stack: Services,
) -> None:
    stack.start_worker("w1", concurrency=2)
    client = Client()
    client.force_login(_user("add_run", "view_run", staff=True))
    runs = Run.objects.count()

    bad_partition = client.post(
        "/admin/assets/run/launch/",
        {"kind": "materialize_all", "asset": "r_sink", "partition": "zz", "config": "{}"},
    )
    bad_config = client.post(
        "/admin/assets/run/launch/",
        {"kind": "materialize", "asset": "r_source", "partition": "a", "config": "[1, 2"},
    )
    not_an_object = client.post(
        "/admin/assets/run/launch/",
        {"kind": "materialize", "asset": "r_source", "partition": "a", "config": "[1]"},
    )
    unknown_asset = client.post(
        "/admin/assets/run/launch/",
        {"kind": "materialize", "asset": "<script>x</script>", "config": "{}"},
    )
    assert Run.objects.count() == runs
    assert "errornote" in bad_partition.content.decode()
    assert "zz" in bad_partition.content.decode()
    assert "Enter a valid JSON" in bad_config.content.decode()
    assert "must be a JSON object" in not_an_object.content.decode()
    assert "<script>x</script>" not in unknown_asset.content.decode()
    assert "Select a valid choice" in unknown_asset.content.decode()

    started = client.post(
        "/admin/assets/run/launch/",
        {"kind": "backfill", "asset": "r_source", "partitions": "a\nc\n", "config": '{"n": 1}'},
    )

    assert started.status_code == 302
    run = Run.objects.select_related("config").get(kind=RunKind.BACKFILL)
    assert started["Location"] == f"/admin/assets/run/{run.pk}/change/"
    result = flowstone.RunHandle(str(run.pk)).wait(WAIT)
    assert result.status == RunStatus.SUCCESS
    assert sorted(s.partition_key for s in result.steps) == ["s:a", "s:c"]
    assert (run.requested_by, run.config.options) == ("operator", {"n": 1})


def test_the_run_page_button_reexecutes_and_refuses_what_it_cannot(stack: Services) -> None:
    first = _failed_run(stack)
    client = Client()
    client.force_login(User.objects.create_superuser("root", password=PASSWORD))
    page = client.get(f"/admin/assets/run/{first}/change/").content.decode()
    assert "Re-execute from failure" in page

    started = client.post(f"/admin/assets/run/{first}/reexecute/")
    again = Run.objects.get(parent_run_id=uuid.UUID(first))
    assert started["Location"] == f"/admin/assets/run/{again.pk}/change/"
    _reads_the_first_runs_source(first, str(again.pk))
    page = client.get(f"/admin/assets/run/{again.pk}/change/").content.decode()
    assert "Re-execute from failure" not in page  # it succeeded: nothing to re-execute
    refused = client.post(f"/admin/assets/run/{again.pk}/reexecute/", follow=True)
    assert "Not re-executed:" in refused.content.decode()
    assert client.get(f"/admin/assets/run/{first}/reexecute/").status_code == 405
    viewer = Client()
    viewer.force_login(_user("view_run", staff=True))
    assert viewer.post(f"/admin/assets/run/{first}/reexecute/").status_code == 403
    blind = Client()  # may start runs, may not see this one
    blind.force_login(User.objects.create_user("blind", is_staff=True))
    User.objects.get(username="blind").user_permissions.add(
        Permission.objects.get(codename="add_run")
    )
    assert blind.post(f"/admin/assets/run/{first}/reexecute/").status_code == 403
    assert Run.objects.filter(parent_run_id=uuid.UUID(first)).count() == 1


def test_launching_needs_the_add_permission() -> None:
    client = Client()
    client.force_login(_user("view_run", staff=True))
    assert client.get("/admin/assets/run/launch/").status_code == 403
    assert "Launch a run" not in client.get("/admin/assets/run/").content.decode()


def test_launch_and_reexecute_from_the_admin_in_a_browser(
    stack: Services, live_server: Any, browser_page: Any
) -> None:
    first = _failed_run(stack)
    User.objects.create_superuser("root", password=PASSWORD)
    page = browser_page
    log_in(page, live_server.url, "root", PASSWORD, "/admin/assets/run/")

    page.click("text=Launch a run")
    page.select_option("#id_kind", "materialize")
    page.select_option("#id_asset", "r_source")
    page.fill("#id_partition", "c")
    page.click("input[value=Launch]")
    page.wait_for_url("**/change/")
    launched = page.url.rstrip("/").split("/")[-2]
    assert flowstone.RunHandle(launched).wait(WAIT).status == RunStatus.SUCCESS

    page.goto(f"{live_server.url}/admin/assets/run/{first}/change/")
    page.click("input[value='Re-execute from failure']")
    page.wait_for_selector("text=Started re-execution run")
    again = Run.objects.get(parent_run_id=uuid.UUID(first))
    assert page.url.endswith(f"/admin/assets/run/{again.pk}/change/")
    _reads_the_first_runs_source(first, str(again.pk))
    assert Materialization.objects.filter(run=again, status=StepStatus.SUCCESS).count() == 2
