"""Every API endpoint, with the permission matrix: anonymous, plain user, operator, approver."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

import flowstone
from approvals.models import Approval
from assets.models import Materialization, Run
from flowstone.checkpoints import CheckpointSpec, Review
from flowstone.registry import get_registry
from flowstone.status import RunStatus
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
    page = client.get("/api/assets/").json()
    assert page["count"] == len(get_registry().graph.order)
    assert [a["name"] for a in page["results"]] == list(get_registry().graph.order)
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
        "running",  # a step is queued for a worker
        4,
        "operator",
    )
    steps = _client(users["operator"]).get(f"/api/runs/{run['id']}/steps/").json()["results"]
    assert [s["status"] for s in steps] == ["queued", "pending", "pending", "pending"]
    assert {s["run_id"] for s in steps} == {run["id"]}


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
        assert response.json()["kind"] == "validation_error"
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
    assert len(_client(users["plain"]).get("/api/runs/").json()["results"]) == 1
    assert len(_client(users["operator"]).get("/api/runs/").json()["results"]) == 2
    successes = _client(users["operator"]).get("/api/runs/?status=success").json()["results"]
    assert len(successes) == 2


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
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"] == "Token"
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


def _nested_list(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


DEEP_BODIES = [
    "[" * 100_000 + "]" * 100_000,
    '{"a": ' * 100_000 + "1" + "}" * 100_000,
    "[" * 100_000,
]


def _pending_approval() -> Approval:
    result = flowstone.materialize_all("g_ledger", "large", requested_by="operator")
    assert result.status == RunStatus.WAITING_APPROVAL
    return Approval.objects.get(run_id=result.run_id)


@pytest.mark.parametrize(
    "options",
    [
        {"config": {"s": "a\x00b"}},
        {"config": {"a\x00": 1}},
        {"tags": {"team": ["x\x00"]}},
        {"config": {"s": "\ud800"}},
    ],
)
def test_starting_a_run_with_bad_options_is_a_400_and_records_nothing(
    users: dict[str, User | None], options: dict[str, Any]
) -> None:
    body = {"kind": "materialize", "asset": "source", "partition": "eu", **options}
    response = _client(users["operator"]).post(
        "/api/runs/", json.dumps(body), content_type="application/json"
    )
    assert response.status_code == 400, response.content
    assert response.json()["kind"] == "validation_error"
    assert Run.objects.count() == 0


def test_a_config_nested_too_deep_is_a_400_from_the_parser(users: dict[str, User | None]) -> None:
    client = _client(users["operator"])
    body = {"kind": "materialize", "asset": "source", "partition": "eu"}
    within = client.post(
        "/api/runs/", {**body, "config": {"deep": _nested_list(31)}}, format="json"
    )
    assert within.status_code == 201, within.content
    deep = client.post("/api/runs/", {**body, "config": {"deep": _nested_list(32)}}, format="json")
    assert deep.status_code == 400, deep.content
    assert "nested deeper than" in deep.json()["detail"]
    assert Run.objects.count() == 1


@pytest.mark.parametrize("body", ["5", '"x"', "[1]", "null", "[]", '{"kind": "materialize"'])
def test_non_object_and_malformed_bodies_are_a_400(
    users: dict[str, User | None], body: str
) -> None:
    approval = _pending_approval()
    for user, url in [
        (users["operator"], "/api/runs/"),
        (users["approver"], f"/api/approvals/{approval.pk}/decide/"),
    ]:
        response = _client(user).post(url, body, content_type="application/json")
        assert response.status_code == 400, (url, body, response.content)
    assert Approval.objects.get(pk=approval.pk).status == "pending"


@pytest.mark.parametrize("body", DEEP_BODIES, ids=["array", "object", "unclosed"])
def test_a_body_nested_100000_deep_is_a_400_on_every_post(
    users: dict[str, User | None], body: str
) -> None:
    approval = _pending_approval()
    for user, url in [
        (users["operator"], "/api/runs/"),
        (users["approver"], f"/api/approvals/{approval.pk}/decide/"),
    ]:
        response = _client(user).post(url, body, content_type="application/json")
        assert response.status_code == 400, (url, response.content)
        assert "nested deeper than" in response.json()["detail"]
    # Cancel takes no body (its schema says so) and never reads one: the body is ignored.
    cancel = _client(users["operator"]).post(
        f"/api/runs/{approval.run_id}/cancel/", body, content_type="application/json"
    )
    assert cancel.status_code == 200, cancel.content
    assert Approval.objects.get(pk=approval.pk).status in ("pending", "canceled")


def test_a_modified_value_with_a_nul_character_is_a_400(users: dict[str, User | None]) -> None:
    approval = _pending_approval()
    response = _client(users["approver"]).post(
        f"/api/approvals/{approval.pk}/decide/",
        {"decision": "modify", "value": {"account": "large\x00", "amount": 1}},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert response.json() == {
        "detail": 'the modified value["account"]: string contains a NUL character',
        "kind": "validation_error",
    }
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_a_checkpoint_validator_raising_value_error_is_a_400(
    users: dict[str, User | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: CheckpointSpec, review: Review, value: Any) -> Any:
        raise ValueError("amounts over 9 need a second reviewer")

    monkeypatch.setattr(CheckpointSpec, "modified_value", refuse)
    approval = _pending_approval()
    response = _client(users["approver"]).post(
        f"/api/approvals/{approval.pk}/decide/",
        {"decision": "modify", "value": {"account": "large", "amount": 10}},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert response.json() == {
        "detail": "the checkpoint refused the modified value: "
        "ValueError: amounts over 9 need a second reviewer",
        "kind": "validation_error",
    }
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_refused_decisions_answer_from_the_handlers_table(users: dict[str, User | None]) -> None:
    approval = _pending_approval()
    url = f"/api/approvals/{approval.pk}/decide/"
    approver = _client(users["approver"])
    assert approver.post(url, {"decision": "approve"}, format="json").status_code == 200
    again = approver.post(url, {"decision": "approve"}, format="json")
    assert again.status_code == 409
    assert again.json()["kind"] == "validation_error"
    missing = approver.post("/api/approvals/999999/decide/", {"decision": "approve"}, format="json")
    assert missing.status_code == 404
    assert set(missing.json()) == {"detail", "kind"}
