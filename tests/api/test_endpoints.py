"""Every API endpoint, with the permission matrix: anonymous, plain user, operator, approver."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

import flowstone
from assets.models import Materialization, Run
from flowstone.registry import get_registry
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


@pytest.fixture(autouse=True)
def _pipelines(use_definitions: UseDefinitions) -> None:
    use_definitions(
        "tests.pipelines.diamond",
        "tests.pipelines.shapes",
        "tests.pipelines.gates",
        resources={
            "counter": {"CLASS": "tests.pipelines.resources.CountingResource", "OPTIONS": {}}
        },
    )


def _user(name: str, *codenames: str) -> User:
    user = User.objects.create_user(name, password=None)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def _client(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def users() -> dict[str, User | None]:
    return {
        "anonymous": None,
        "plain": _user("plain"),
        "operator": _user("operator", "add_run", "change_run", "view_run", "view_materialization"),
        "approver": _user("approver", "decide_approval", "view_approval"),
    }


def _status(user: User | None, method: str, url: str, body: dict[str, Any] | None = None) -> int:
    client = _client(user)
    response = client.post(url, body or {}, format="json") if method == "post" else client.get(url)
    return int(response.status_code)


def test_anonymous_is_refused_everywhere(users: dict[str, User | None]) -> None:
    for url in [
        "/api/assets/",
        "/api/assets/graph/",
        "/api/runs/",
        "/api/materializations/",
        "/api/approvals/",
        "/api/schema/",
    ]:
        assert _status(None, "get", url) in (401, 403), url
    assert _status(None, "post", "/api/runs/", {"kind": "materialize", "asset": "source"}) in (
        401,
        403,
    )


def test_assets_list_detail_graph(users: dict[str, User | None]) -> None:
    client = _client(users["plain"])
    names = [a["name"] for a in client.get("/api/assets/").json()]
    assert names == list(get_registry().graph.order)
    detail = client.get("/api/assets/sink/").json()
    assert detail["deps"] == ["left", "right"]
    assert detail["has_checkpoint"] is False
    assert client.get("/api/assets/g_payout/").json()["has_checkpoint"] is True
    assert client.get("/api/assets/nope/").status_code == 404
    graph = client.get("/api/assets/graph/").json()
    assert {"from": "left", "to": "sink"} in graph["edges"]
    assert set(graph["nodes"]) >= {"source", "left", "right", "sink"}


def test_starting_runs_needs_the_add_permission(users: dict[str, User | None]) -> None:
    body = {"kind": "materialize_all", "asset": "sink", "partition": "eu"}
    assert _status(users["plain"], "post", "/api/runs/", body) == 403
    assert _status(users["approver"], "post", "/api/runs/", body) == 403
    response = _client(users["operator"]).post("/api/runs/", body, format="json")
    assert response.status_code == 201, response.content
    run = response.json()
    assert (run["kind"], run["status"], run["steps_total"], run["requested_by"]) == (
        "materialize_all",
        "pending",
        4,
        "operator",
    )
    steps = _client(users["operator"]).get(f"/api/runs/{run['id']}/steps/").json()
    assert [s["status"] for s in steps] == ["queued", "pending", "pending", "pending"]


def test_invalid_input_is_a_400_with_field_errors_and_unknown_assets_404(
    users: dict[str, User | None],
) -> None:
    client = _client(users["operator"])
    cases = [
        ({"kind": "explode", "asset": "sink"}, "kind"),
        ({"kind": "materialize"}, "asset"),
        (
            {"kind": "materialize", "asset": "source", "partition": "eu", "partition_key": "s:eu"},
            "partition",
        ),
        ({"kind": "materialize", "asset": "source", "max_parallel": 2}, "max_parallel"),
        ({"kind": "backfill", "asset": "calendar", "max_parallel": 0}, "max_parallel"),
        ({"kind": "materialize", "asset": "source", "config": [1]}, "config"),
    ]
    for body, field in cases:
        response = client.post("/api/runs/", body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert field in response.json(), response.json()
    for body in [
        {"kind": "materialize", "asset": "source", "partition": "mars"},
        {"kind": "materialize", "asset": "source", "partition_key": "x:bad"},
        {"kind": "materialize", "asset": "source"},
    ]:
        response = client.post("/api/runs/", body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert response.json()["detail"].startswith("[validation_error]")
    missing = client.post("/api/runs/", {"kind": "materialize", "asset": "nope"}, format="json")
    assert missing.status_code == 404
    assert Run.objects.count() == 0


def test_idempotency_key_starts_one_run(users: dict[str, User | None]) -> None:
    client = _client(users["operator"])
    body = {"kind": "backfill", "asset": "calendar", "max_parallel": 2}
    first = client.post("/api/runs/", body, format="json", HTTP_IDEMPOTENCY_KEY="nightly-42")
    second = client.post("/api/runs/", body, format="json", HTTP_IDEMPOTENCY_KEY="nightly-42")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert Run.objects.count() == 1
    other = client.post("/api/runs/", body, format="json", HTTP_IDEMPOTENCY_KEY="nightly-43")
    assert other.status_code == 201


def test_run_lists_are_filtered_to_what_the_user_may_see(users: dict[str, User | None]) -> None:
    flowstone.materialize_all("source", "eu", requested_by="plain")
    flowstone.materialize_all("source", "us", requested_by="someone-else")
    assert len(_client(users["plain"]).get("/api/runs/").json()) == 1
    assert len(_client(users["operator"]).get("/api/runs/").json()) == 2
    assert len(_client(users["operator"]).get("/api/runs/?status=success").json()) == 2


def test_cancel_needs_the_change_permission(users: dict[str, User | None]) -> None:
    run = (
        _client(users["operator"])
        .post(
            "/api/runs/",
            {"kind": "backfill", "asset": "calendar", "max_parallel": 1},
            format="json",
        )
        .json()
    )
    plain = users["plain"]
    assert _status(plain, "post", f"/api/runs/{run['id']}/cancel/") == 404  # not theirs: invisible
    response = _client(users["operator"]).post(f"/api/runs/{run['id']}/cancel/")
    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    assert _status(users["operator"], "get", "/api/runs/not-a-uuid/") == 404


def test_materializations_filter_and_cursor_pagination(users: dict[str, User | None]) -> None:
    for region in ("eu", "us", "a|b:c"):
        flowstone.materialize_all("sink", region)
    assert _status(users["plain"], "get", "/api/materializations/") == 403
    client = _client(users["operator"])
    page = client.get("/api/materializations/?asset=sink").json()
    assert [m["asset"] for m in page["results"]] == ["sink"] * 3
    assert page["next"] is None
    one = client.get("/api/materializations/", {"asset": "sink", "partition_key": "s:a|b:c"}).json()
    assert [m["partition_key"] for m in one["results"]] == ["s:a|b:c"]
    run_id = Materialization.objects.filter(asset="sink").first().run_id  # type: ignore[union-attr]
    assert len(client.get(f"/api/materializations/?run={run_id}").json()["results"]) == 4
    assert client.get("/api/materializations/?run=zzz").status_code == 400
    assert client.get("/api/materializations/?status=failed").json()["results"] == []


def test_token_authentication(users: dict[str, User | None]) -> None:
    user = users["operator"]
    assert user is not None
    token = Token.objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get("/api/assets/").status_code == 200
    client.credentials(HTTP_AUTHORIZATION="Token wrong")
    refused = client.get("/api/assets/")
    assert refused.status_code in (401, 403)
    assert refused.json() == {"detail": "Invalid token."}


def test_openapi_schema_and_docs(users: dict[str, User | None]) -> None:
    client = _client(users["plain"])
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in [
        "/api/runs/",
        "/api/runs/{id}/cancel/",
        "/api/assets/graph/",
        "/api/materializations/",
        "/api/approvals/{id}/decide/",
    ]:
        assert path in paths, sorted(paths)
    assert client.get("/api/docs/").status_code == 200
