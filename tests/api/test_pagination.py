"""Every list endpoint pages (``flowstone/pagination.py``) and validates its filters."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

import flowstone
from approvals.models import Approval
from assets.models import Materialization
from flowstone.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from flowstone.registry import get_registry
from flowstone.status import RunStatus
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

LISTS = [
    "/api/assets/",
    "/api/runs/",
    "/api/materializations/",
    "/api/approvals/",
    "/api/schedules/ticks/",
]


@pytest.fixture(autouse=True)
def _pipelines(use_definitions: UseDefinitions) -> None:
    use_definitions(
        "tests.pipelines.diamond",
        "tests.pipelines.gates",
        resources={
            "counter": {"CLASS": "tests.pipelines.resources.CountingResource", "OPTIONS": {}}
        },
    )


@pytest.fixture
def client() -> APIClient:
    api = APIClient()
    api.force_authenticate(User.objects.create_superuser("admin", password=None))
    return api


def _pages(client: APIClient, url: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every page of a list, following ``next``."""
    pages = [client.get(url, params).json()]
    while pages[-1]["next"] is not None:
        pages.append(client.get(pages[-1]["next"]).json())
    return pages


def test_a_runs_steps_page_by_cursor_in_planned_order(client: APIClient) -> None:
    run_id = flowstone.materialize_all_async("sink", "eu").run_id
    first = client.get(f"/api/runs/{run_id}/steps/", {"page_size": 3}).json()
    assert set(first) == {"next", "previous", "results"}  # a cursor page: no count
    assert first["previous"] is None
    pages = _pages(client, f"/api/runs/{run_id}/steps/", {"page_size": 3})
    assert [len(page["results"]) for page in pages] == [3, 1]
    steps = [step for page in pages for step in page["results"]]
    expected = Materialization.objects.filter(run_id=run_id).order_by("id")
    assert [s["id"] for s in steps] == [m.pk for m in expected]
    assert {s["run_id"] for s in steps} == {run_id}
    previous = client.get(pages[1]["previous"]).json()
    assert previous["results"] == pages[0]["results"]


def test_rows_inserted_while_paging_neither_shift_nor_repeat(client: APIClient) -> None:
    for region in ("eu", "us"):
        flowstone.materialize_all("sink", region)
    before = list(Materialization.objects.order_by("-id").values_list("id", flat=True))
    first = client.get("/api/materializations/", {"page_size": 3}).json()
    flowstone.materialize_all("sink", "a|b:c")  # four newer rows, ahead of the cursor
    seen = [m["id"] for m in first["results"]]
    while first["next"] is not None:
        first = client.get(first["next"]).json()
        seen += [m["id"] for m in first["results"]]
    assert seen == before


def test_the_default_page_size_holds_a_page(client: APIClient) -> None:
    flowstone.materialize_all("sink", "eu")
    page = client.get("/api/materializations/").json()
    assert len(page["results"]) == 4 <= DEFAULT_PAGE_SIZE
    assert page["next"] is None


def test_assets_and_approvals_page_by_number_with_a_count(client: APIClient) -> None:
    order = list(get_registry().graph.order)
    first = client.get("/api/assets/", {"page_size": 2}).json()
    assert first["count"] == len(order)
    assert [a["name"] for a in first["results"]] == order[:2]
    assert "page=2" in first["next"]
    every = [
        a["name"]
        for page in _pages(client, "/api/assets/", {"page_size": 2})
        for a in page["results"]
    ]
    assert every == order
    for requester in ("someone", "someone-else"):
        result = flowstone.materialize_all("g_ledger", "large", requested_by=requester)
        assert result.status == RunStatus.WAITING_APPROVAL
    approvals = client.get("/api/approvals/", {"page_size": 1}).json()
    assert approvals["count"] == Approval.objects.count()
    assert approvals["results"][0]["run_id"] == str(
        Approval.objects.order_by("requested_at", "id")[0].run_id
    )
    assert client.get("/api/approvals/", {"page": 99}).status_code == 404


@pytest.mark.parametrize("url", LISTS)
@pytest.mark.parametrize("size", ["0", "-1", str(MAX_PAGE_SIZE + 1), "abc", "", "1.5", "\u0663"])
def test_a_page_size_out_of_range_is_a_400(client: APIClient, url: str, size: str) -> None:
    response = client.get(url, {"page_size": size})
    assert response.status_code == 400, response.content
    assert response.json() == {"page_size": [f"Must be an integer from 1 to {MAX_PAGE_SIZE}."]}


@pytest.mark.parametrize("url", LISTS)
def test_the_largest_page_size_is_accepted(client: APIClient, url: str) -> None:
    assert client.get(url, {"page_size": MAX_PAGE_SIZE}).status_code == 200


@pytest.mark.parametrize(
    "url", ["/api/runs/", "/api/materializations/", "/api/schedules/ticks/", "steps"]
)
def test_a_forged_cursor_is_a_404(client: APIClient, url: str) -> None:
    if url == "steps":
        url = f"/api/runs/{flowstone.materialize_all_async('sink', 'eu').run_id}/steps/"
    response = client.get(url, {"cursor": "not-a-cursor"})
    assert response.status_code == 404
    assert response.json() == {"detail": "Invalid cursor"}


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("/api/runs/", "status"),
        ("/api/materializations/", "status"),
        ("/api/approvals/", "status"),
        ("/api/schedules/ticks/", "status"),
        ("/api/schedules/ticks/", "kind"),
    ],
)
def test_an_unknown_enum_filter_value_is_a_400(client: APIClient, url: str, name: str) -> None:
    response = client.get(url, {name: "bogus"})
    assert response.status_code == 400
    assert response.json() == {name: ['"bogus" is not a valid choice.']}


def test_filters_select_and_an_empty_value_means_any(client: APIClient) -> None:
    run_id = flowstone.materialize_all_async("sink", "eu").run_id
    flowstone.materialize_all("source", "us")
    assert len(client.get("/api/runs/", {"status": ""}).json()["results"]) == 2
    succeeded = client.get("/api/runs/", {"status": "success"}).json()["results"]
    assert [r["kind"] for r in succeeded] == ["materialize_all"]
    queued = client.get(f"/api/runs/{run_id}/steps/", {"status": "queued"}).json()["results"]
    assert [s["asset"] for s in queued] == ["source"]
    by_run = client.get("/api/materializations/", {"run_id": run_id}).json()["results"]
    assert len(by_run) == 4
    assert {m["run_id"] for m in by_run} == {run_id}
    for empty in ({"run_id": ""}, {"run": ""}, {"asset": "", "status": ""}):
        answer = client.get("/api/materializations/", empty)
        assert answer.status_code == 200, (empty, answer.content)
        assert len(answer.json()["results"]) == Materialization.objects.count()


def test_the_deprecated_run_filter_is_run_id_under_its_old_name(client: APIClient) -> None:
    run_id = flowstone.materialize_all_async("sink", "eu").run_id
    other = flowstone.materialize_all("source", "us").run_id
    new = client.get("/api/materializations/", {"run_id": run_id}).json()["results"]
    old = client.get("/api/materializations/", {"run": run_id}).json()["results"]
    assert old == new
    both = client.get("/api/materializations/", {"run": run_id, "run_id": run_id})
    assert both.json()["results"] == new
    conflict = client.get("/api/materializations/", {"run": run_id, "run_id": other})
    assert conflict.status_code == 400
    assert conflict.json() == {"run": ["Give run_id or run, not both."]}
    assert client.get("/api/materializations/", {"run": "zzz"}).status_code == 400


def test_a_call_without_credentials_is_a_401_naming_the_token_scheme() -> None:
    response = APIClient().get("/api/runs/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json() == {"detail": "Authentication credentials were not provided."}
