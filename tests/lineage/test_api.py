"""The lineage API: authentication, answers, 400 with field errors, 404, never a 500."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import pytest
from rest_framework.test import APIClient

import flowstone
from lineage.queries import downstream, impact, staleness, upstream

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

QUERIES = ("upstream", "downstream", "impact", "staleness")


@pytest.fixture(autouse=True)
def _lineage_graph(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.lineage_graph")


@pytest.fixture
def api(django_user_model: type[User]) -> APIClient:
    client = APIClient()
    client.force_authenticate(django_user_model.objects.create_user("viewer"))
    return client


def _get(client: APIClient, query: str, **params: Any) -> Any:
    return client.get(f"/api/lineage/{query}/", params)


@pytest.mark.parametrize("query", QUERIES)
def test_anonymous_requests_are_refused(query: str) -> None:
    flowstone.materialize_all("sink", "eu")
    response = _get(APIClient(), query, asset="sink", partition_key="s:eu")

    assert response.status_code in (401, 403)
    assert response.json() == {"detail": "Authentication credentials were not provided."}


def test_answers_are_the_queries_json(api: APIClient) -> None:
    flowstone.materialize_all("sink", "eu")
    flowstone.materialize("source", "eu")
    params = {"asset": "sink", "partition_key": "s:eu"}

    assert _get(api, "upstream", **params).json() == upstream("sink", "eu").as_dict()
    assert _get(api, "upstream", **params, depth=1).json() == upstream("sink", "eu", 1).as_dict()
    assert (
        _get(api, "downstream", asset="source", partition_key="s:eu").json()
        == downstream("source", "eu").as_dict()
    )
    assert (
        _get(api, "impact", asset="source", partition_key="s:eu").json()
        == impact("source", "eu").as_dict()
    )
    body = _get(api, "staleness", **params).json()
    assert body == staleness("sink", "eu").as_dict()
    assert body["is_stale"] is True
    assert body["causes"][0]["kind"] == "upstream_newer"


def test_unpartitioned_and_by_materialization_id(api: APIClient) -> None:
    run = flowstone.materialize_all("weekly_summary", dt.date(2025, 12, 1))
    catalog = run.step("catalog").materialization_id

    by_key = _get(api, "downstream", asset="catalog", partition_key="")
    assert by_key.status_code == 200
    assert _get(api, "downstream", asset="catalog").json() == by_key.json()
    by_id = _get(api, "downstream", asset="catalog", materialization_id=catalog)
    assert by_id.json() == by_key.json()
    assert by_key.json()["start"]["materialization_id"] == catalog
    assert len(by_key.json()["nodes"]) == 8


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "asset"),
        ({"asset": ""}, "asset"),
        ({"asset": "x" * 129}, "asset"),
        ({"asset": "sink", "partition_key": "s:eu", "depth": "0"}, "depth"),
        ({"asset": "sink", "partition_key": "s:eu", "depth": "ten"}, "depth"),
        ({"asset": "sink", "partition_key": "s:eu", "depth": "1001"}, "depth"),
        ({"asset": "sink", "partition_key": "eu"}, "partition_key"),
        ({"asset": "sink", "partition_key": "s:nowhere"}, "partition_key"),
        ({"asset": "sink", "partition_key": "s:e\x00u"}, "partition_key"),
        ({"asset": "sink", "partition_key": "s:" + "e" * 600}, "partition_key"),
        ({"asset": "sink"}, "partition_key"),
        ({"asset": "catalog", "partition_key": "s:eu"}, "partition_key"),
        ({"asset": "sink", "materialization_id": "-1"}, "materialization_id"),
        ({"asset": "sink", "materialization_id": str(2**63)}, "materialization_id"),
        (
            {"asset": "sink", "materialization_id": "1", "partition_key": "s:eu"},
            "materialization_id",
        ),
    ],
)
@pytest.mark.parametrize("query", ["upstream", "impact"])
def test_invalid_parameters_are_400_with_field_errors(
    api: APIClient, query: str, params: dict[str, str], field: str
) -> None:
    flowstone.materialize_all("sink", "eu")
    response = _get(api, query, **params)

    assert response.status_code == 400
    body = response.json()
    assert list(body) == [field]
    assert isinstance(body[field], list)
    assert body[field]


@pytest.mark.parametrize("query", QUERIES)
def test_unknown_assets_and_missing_materializations_are_404(api: APIClient, query: str) -> None:
    flowstone.materialize_all("sink", "eu")

    unknown = _get(api, query, asset="os.system", partition_key="s:eu")
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "unknown asset 'os.system'", "kind": "asset_not_found"}
    missing = _get(api, query, asset="sink", partition_key="s:us")
    assert missing.status_code == 404
    assert "no successful materialization" in missing.json()["detail"]
    assert _get(api, query, asset="sink", materialization_id=10**12).status_code == 404


def test_staleness_takes_no_depth_and_only_get_is_allowed(api: APIClient) -> None:
    flowstone.materialize_all("sink", "eu")

    ignored = _get(api, "staleness", asset="sink", partition_key="s:eu", depth="0")
    assert ignored.status_code == 200
    assert api.post("/api/lineage/upstream/", {"asset": "sink"}).status_code == 405


def test_the_openapi_schema_lists_the_queries_and_their_parameters(api: APIClient) -> None:
    paths = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()["paths"]

    for query in QUERIES:
        get = paths[f"/api/lineage/{query}/"]["get"]
        names = {parameter["name"] for parameter in get["parameters"]}
        expected = {"asset", "partition_key", "materialization_id"}
        assert names == (expected if query == "staleness" else expected | {"depth"})
        assert set(get["responses"]) == {"200", "400", "401", "404"}
