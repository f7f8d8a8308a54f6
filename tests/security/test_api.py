"""The API under hostile input: oversized bodies, hostile names and keys, who may call what.

``tests/api/test_endpoints.py`` already covers anonymous access to the main endpoints, the
add/change permissions on runs and ordinary 400s; these tests cover the rest (see
``tests/security/test_index.py``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from rest_framework.test import APIClient

import flowstone
from approvals.models import Approval
from assets.models import ASSET_NAME_LENGTH, Materialization, Run
from flowstone.partitions import MAX_PARTITION_KEY_LENGTH
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db]

TEN_MEGABYTES = 10 * 1024 * 1024
HOSTILE_NAMES = [
    "os.system",
    "__import__('os').system('id')",
    "../../etc/passwd",
    "sink'; DROP TABLE assets_run; --",
    "sink\x00",
    "\uff53\uff49\uff4e\uff4b",  # fullwidth letters: not the asset "sink"
    "sink\n",
    "a" * 129,
    "flowstone.settings",
]
HOSTILE_PARTITIONS = [
    "../../etc/passwd",
    "eu/../../us",
    "eu'; DROP TABLE assets_materialization; --",
    "eu\x00",
    "%2e%2e%2f",
    "x" * 600,
]
HOSTILE_KEYS = ["s:../../etc/passwd", "s:eu\x00", "p:os.system", "s:" + "x" * 600, "../eu"]


@pytest.fixture(autouse=True)
def _pipelines(use_definitions: UseDefinitions) -> None:
    use_definitions(
        "tests.pipelines.diamond",
        "tests.pipelines.gates",
        resources={
            "counter": {"CLASS": "tests.pipelines.resources.CountingResource", "OPTIONS": {}}
        },
    )


def _user(name: str, *codenames: str, is_staff: bool = False) -> User:
    user = User.objects.create_user(name, password="pw-" + name, is_staff=is_staff)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def _api(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def operator() -> User:
    return _user("operator", "add_run", "change_run", "view_run", "view_materialization")


@pytest.fixture
def reviewer() -> User:
    return _user("bob", "decide_approval", "view_approval")


def test_a_10_mb_json_body_is_refused_cleanly_not_a_server_error(operator: User) -> None:
    body = json.dumps(
        {"kind": "backfill", "asset": "source", "config": {"padding": "x" * TEN_MEGABYTES}}
    )
    response = _api(operator).post("/api/runs/", body, content_type="application/json")
    assert response.status_code in (400, 413), response.status_code
    assert Run.objects.count() == 0


def test_a_10_mb_decision_body_is_refused_cleanly(reviewer: User) -> None:
    flowstone.materialize_all("g_ledger", "large", requested_by="alice")
    approval = Approval.objects.get()
    body = json.dumps({"decision": "modify", "value": {"memo": "x" * TEN_MEGABYTES}})
    response = _api(reviewer).post(
        f"/api/approvals/{approval.pk}/decide/", body, content_type="application/json"
    )
    assert response.status_code in (400, 413), response.status_code
    assert Approval.objects.get(pk=approval.pk).status == "pending"


def test_oversized_fields_under_the_body_limit_are_field_errors(operator: User) -> None:
    client = _api(operator)
    too_many = {"kind": "backfill", "asset": "source", "partitions": ["eu"] * 10_001}
    assert "partitions" in client.post("/api/runs/", too_many, format="json").json()
    long_name = client.post("/api/runs/", {"kind": "materialize", "asset": "a" * 10_000})
    assert long_name.status_code == 400
    assert "asset" in long_name.json()
    long_key = client.post(
        "/api/runs/", {"kind": "materialize", "asset": "source", "partition_key": "s:" + "x" * 600}
    )
    assert long_key.status_code == 400
    assert "partition_key" in long_key.json()
    assert (
        client.post(
            "/api/runs/", {"kind": "materialize", "asset": "source"}, HTTP_IDEMPOTENCY_KEY="k" * 129
        ).status_code
        == 400
    )
    assert Run.objects.count() == 0


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_asset_names_are_unknown_assets_and_import_nothing(
    operator: User, name: str
) -> None:
    modules = set(sys.modules)
    client = _api(operator)
    response = client.post("/api/runs/", {"kind": "materialize", "asset": name}, format="json")
    assert response.status_code in (400, 404), (name, response.status_code)
    lineage = client.get("/api/lineage/upstream/", {"asset": name})
    assert lineage.status_code in (400, 404), (name, lineage.status_code)
    listing = client.get("/api/materializations/", {"asset": name})
    if "\x00" in name or len(name) > ASSET_NAME_LENGTH:
        assert listing.status_code == 400
        assert "asset" in listing.json()
    else:
        assert listing.json()["results"] == []
    assert set(sys.modules) == modules
    assert Run.objects.count() == 0


@pytest.mark.parametrize(
    "path", ["..%2F..%2Fetc%2Fpasswd", "os.system", "sink%00", "sink%27%3B--", "a" * 200]
)
def test_hostile_asset_names_in_urls_are_404(operator: User, path: str) -> None:
    assert _api(operator).get(f"/api/assets/{path}/").status_code == 404


@pytest.mark.parametrize("partition", HOSTILE_PARTITIONS)
def test_hostile_partitions_are_refused_before_a_run_exists(operator: User, partition: str) -> None:
    response = _api(operator).post(
        "/api/runs/", {"kind": "materialize", "asset": "source", "partition": partition}
    )
    assert response.status_code == 400, (partition, response.content)
    backfill = _api(operator).post(
        "/api/runs/",
        {"kind": "backfill", "asset": "source", "partitions": ["eu", partition]},
        format="json",
    )
    assert backfill.status_code == 400, (partition, backfill.content)
    assert Run.objects.count() == 0
    assert Materialization.objects.count() == 0


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_hostile_partition_keys_are_refused_by_runs_and_lineage(operator: User, key: str) -> None:
    client = _api(operator)
    response = client.post(
        "/api/runs/", {"kind": "materialize", "asset": "source", "partition_key": key}
    )
    assert response.status_code == 400, (key, response.content)
    lineage = client.get("/api/lineage/upstream/", {"asset": "sink", "partition_key": key})
    assert lineage.status_code in (400, 404), (key, lineage.content)
    filtered = client.get("/api/materializations/", {"partition_key": key})
    if "\x00" in key or len(key) > MAX_PARTITION_KEY_LENGTH:
        assert filtered.status_code == 400
        assert "partition_key" in filtered.json()
    else:
        assert filtered.status_code == 200
        assert filtered.json()["results"] == []
    assert Run.objects.count() == 0


def test_nul_bytes_in_materialization_filters_are_a_400(operator: User) -> None:
    client = _api(operator)
    for name in ("asset", "partition_key", "status"):
        response = client.get("/api/materializations/", {name: "eu\x00"})
        assert response.status_code == 400, (name, response.status_code)


def test_unauthenticated_calls_are_refused_on_every_remaining_endpoint() -> None:
    client = _api(None)
    for url in [
        "/api/lineage/upstream/?asset=sink&partition_key=s:eu",
        "/api/lineage/downstream/?asset=source&partition_key=s:eu",
        "/api/lineage/impact/?asset=source&partition_key=s:eu",
        "/api/lineage/staleness/?asset=sink&partition_key=s:eu",
        "/api/schedules/ticks/",
        "/api/docs/",
        "/api/runs/00000000-0000-0000-0000-000000000000/",
        "/api/runs/00000000-0000-0000-0000-000000000000/steps/",
        "/api/approvals/1/",
    ]:
        assert client.get(url).status_code in (401, 403), url
    for url in [
        "/api/runs/00000000-0000-0000-0000-000000000000/cancel/",
        "/api/approvals/1/decide/",
    ]:
        assert client.post(url, {}, format="json").status_code in (401, 403), url


def test_a_wrong_or_malformed_token_is_refused() -> None:
    for header in ["Token wrong", "Token ", "Bearer abc", "Token a b", "Token " + "x" * 5000]:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=header)
        assert client.get("/api/assets/").status_code in (401, 403), header


def test_users_see_and_touch_only_their_own_runs(operator: User) -> None:
    run = flowstone.materialize_all("source", "eu", requested_by="operator")
    plain = _user("plain")
    client = _api(plain)
    assert client.get(f"/api/runs/{run.run_id}/").status_code == 404
    assert client.get(f"/api/runs/{run.run_id}/steps/").status_code == 404
    assert client.post(f"/api/runs/{run.run_id}/cancel/").status_code in (403, 404)
    assert client.get("/api/approvals/").status_code == 403
    assert _api(operator).get(f"/api/runs/{run.run_id}/").status_code == 200


def test_session_authenticated_api_writes_need_the_csrf_token(operator: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    body: dict[str, Any] = {"kind": "materialize", "asset": "source", "partition": "eu"}
    refused = client.post("/api/runs/", body, content_type="application/json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    assert Run.objects.count() == 0
    client.get("/admin/login/")  # any page that sets the cookie
    token = client.cookies["csrftoken"].value
    accepted = client.post(
        "/api/runs/", body, content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    assert accepted.status_code == 201, accepted.content
