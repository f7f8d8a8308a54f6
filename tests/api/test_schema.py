"""The OpenAPI schema: valid without warnings, every error and filter listed, stable names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from drf_spectacular.generators import SchemaGenerator

from flowstone.api_errors import ERROR_CODES

pytestmark = pytest.mark.embedded

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-untyped-call,no-any-return]


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, item[method])
        for path, item in sorted(document["paths"].items())
        for method in METHODS
        if method in item
    ]


def _query_parameters(operation: dict[str, Any]) -> set[str]:
    return {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}


def test_spectacular_validates_the_schema_without_a_warning(tmp_path: Path) -> None:
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    assert target.read_text().startswith("openapi: 3.0.3")


def test_every_enum_has_a_stable_meaningful_name(document: dict[str, Any]) -> None:
    enums = {name for name in document["components"]["schemas"] if name.endswith("Enum")}
    assert enums == {
        "ApprovalStatusEnum",
        "AttemptOutcomeEnum",
        "BulkDecisionEnum",
        "DecisionEnum",
        "ErrorKindEnum",
        "OptionOutcomeEnum",
        "RunKindEnum",
        "RunStatusEnum",
        "StartRunKindEnum",
        "StepStatusEnum",
        "TickKindEnum",
        "TickStatusEnum",
    }


def test_every_error_response_has_the_error_handlers_body(document: dict[str, Any]) -> None:
    for path, method, operation in _operations(document):
        codes = {int(code) for code in operation["responses"] if int(code) >= 400}
        assert codes <= set(ERROR_CODES), (method, path)  # documented codes only, never 5xx
        for code in codes:
            schema = operation["responses"][str(code)]["content"]["application/json"]["schema"]
            expected = "BadRequest" if code == 400 else "Error"
            assert schema == {"$ref": f"#/components/schemas/{expected}"}, (method, path, code)
        assert 401 in codes, (method, path)
        if "{" in path:
            assert 404 in codes, (method, path)
        if method == "post":
            assert 403 in codes, (method, path)
        if "requestBody" in operation:
            assert 400 in codes, (method, path)
        if "page_size" in _query_parameters(operation):
            assert {400, 404} <= codes, (method, path)
    schemas = document["components"]["schemas"]
    assert schemas["Error"]["required"] == ["detail"]
    assert schemas["BadRequest"]["oneOf"] == [
        {"$ref": "#/components/schemas/FieldErrors"},
        {"$ref": "#/components/schemas/Error"},
    ]


def test_the_codes_an_operation_declares_itself_are_listed(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert "409" in paths["/api/approvals/{id}/decide/"]["post"]["responses"]
    assert "404" in paths["/api/runs/"]["post"]["responses"]  # an unknown asset
    assert "403" in paths["/api/runs/{id}/cancel/"]["post"]["responses"]
    assert "403" not in paths["/api/assets/"]["get"]["responses"]  # any logged-in user


def _documented_lists() -> dict[str, tuple[str, set[str]]]:
    """The table of docs/api.md's "Lists" section: path -> (pagination, filters)."""
    section = API_DOC.read_text().split("## Lists", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `GET (/api/\S+)` \| (\w+) \| (.*?) \|$", section, re.MULTILINE)
    assert rows, "docs/api.md has no list table"
    return {
        path: (paging, set(re.findall(r"`(\w+)`", filters)) - {"none"})
        for path, paging, filters in rows
    }


def test_every_list_is_paginated_and_its_documented_filters_are_parameters(
    document: dict[str, Any],
) -> None:
    lists = {
        path
        for path, method, operation in _operations(document)
        if method == "get" and "page_size" in _query_parameters(operation)
    }
    documented = _documented_lists()
    assert set(documented) == lists
    for path, (paging, filters) in documented.items():
        params = _query_parameters(document["paths"][path]["get"])
        marker = {"cursor": "cursor", "number": "page"}[paging]
        assert params == filters | {marker, "page_size"}, path


def test_every_representation_names_its_run_run_id(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "id" in schemas["Run"]["properties"]
    for name in ("Step", "Approval", "Tick"):
        properties = schemas[name]["properties"]
        assert properties["run_id"]["format"] == "uuid", name
        assert "run" not in properties, name
    run_filter = next(
        p
        for p in document["paths"]["/api/materializations/"]["get"]["parameters"]
        if p["name"] == "run"
    )
    assert run_filter["deprecated"] is True
