"""Schema-driven fuzzing of every operation in the OpenAPI schema: only documented answers.

Schemathesis generates cases (valid and invalid bodies, query, path and header parameters) from
the schema the app serves and calls the Django app in process through WSGI, on real PostgreSQL.
Every answer must be a status code the schema documents for that operation (never a 5xx), with
the documented content type and, where the schema describes it, body (the error handler's
``Error``/``BadRequest`` shapes included). Besides those generated cases, every operation is swept
with the inputs that used to reach the database or the JSON parser unchecked: NUL characters and
lone surrogates in every field, query parameter and path parameter, bodies nested 100,000 deep,
and non-object JSON bodies; their answers are held to the same documented status codes.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

import flowstone
from approvals.models import Approval
from flowstone.status import RunStatus
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

_document = SchemaGenerator().get_schema(request=None, public=True)  # type: ignore[no-untyped-call]
schema = schemathesis.openapi.from_dict(_document)
schema.app = get_wsgi_application()


@pytest.fixture
def token(use_definitions: UseDefinitions) -> Iterator[str]:
    use_definitions(
        "tests.pipelines.diamond",
        "tests.pipelines.gates",
        resources={
            "counter": {"CLASS": "tests.pipelines.resources.CountingResource", "OPTIONS": {}}
        },
    )
    admin = User.objects.create_superuser("fuzzer", password=None)
    # As Django's test client does: a request must not close the test transaction's connection.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield str(Token.objects.create(user=admin).key)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def _transport_files() -> Iterator[None]:
    """Collect the transport's unclosed spool files while this test's warning filter applies.

    Left to the garbage collector, they would be finalized, and their ResourceWarning reported,
    during whichever test happens to run next.
    """
    yield
    gc.collect()


# The in-process WSGI transport (werkzeug's test client) spools some generated bodies to temporary
# files it does not close; that ResourceWarning is the transport's, not the application's.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.usefixtures("_transport_files")
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation_answers_only_documented_responses(case: Any, token: str) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Token {token}"},
        checks=[
            schemathesis.checks.not_a_server_error,
            schemathesis.checks.status_code_conformance,
            schemathesis.checks.content_type_conformance,
            schemathesis.checks.response_schema_conformance,
        ],
    )


def _documented_codes(path: str, method: str) -> set[int]:
    return {int(code) for code in _document["paths"][path][method]["responses"]}


_METHODS = ("get", "post", "put", "patch", "delete")
_OPERATIONS = [
    (path, method)
    for path, item in sorted(_document["paths"].items())
    for method in _METHODS
    if method in item
]
_NUL_FIELDS: dict[str, Any] = {
    "kind": "materialize",
    "asset": "source",
    "partition": "eu",
    "config": {"s": "a\x00b", "k\x00": ["\x00"]},
    "tags": {"t": "\x00"},
    "decision": "modify",
    "value": {"account": "large\x00", "amount": 1},
    "reason": "r\x00",
}
_FORTY_DEEP = json.loads("[" * 40 + "]" * 40)
_BODIES = {
    "nul": json.dumps(_NUL_FIELDS),
    "nul-everywhere": json.dumps(dict.fromkeys(_NUL_FIELDS, "\x00")),
    "nul-in-config-key": json.dumps({**_NUL_FIELDS, "config": {"\x00": 1}, "decision": "approve"}),
    "lone-surrogate": json.dumps({**_NUL_FIELDS, "config": {"s": "\ud800"}, "value": "\udc00"}),
    "deep-array": "[" * 100_000 + "]" * 100_000,
    "deep-object": '{"a": ' * 100_000 + "1" + "}" * 100_000,
    "deep-unclosed": "[" * 100_000,
    "deep-config": json.dumps(
        {**_NUL_FIELDS, "config": {"x": _FORTY_DEEP}, "value": _FORTY_DEEP, "reason": "r"}
    ),
    "number": "5",
    "string": '"x"',
    "null": "null",
    "array": "[1, 2]",
    "empty": "",
    "huge-int": '{"kind": "materialize", "asset": "source", "config": {"n": 1' + "0" * 5000 + "}}",
}


def _path_values(run_id: str, approval_id: int) -> list[dict[str, str]]:
    return [
        {"id": run_id, "pk": run_id},
        {"id": str(approval_id), "pk": str(approval_id)},
        {"id": "source", "pk": "source"},
        {"id": "a%00b", "pk": "a%00b"},  # a NUL character
        {"id": "%ED%A0%80", "pk": "%ED%A0%80"},  # a lone surrogate's UTF-8 bytes
    ]


@pytest.mark.parametrize(("path", "method"), _OPERATIONS, ids=[f"{m} {p}" for p, m in _OPERATIONS])
def test_no_operation_answers_bad_input_with_an_undocumented_status(
    path: str, method: str, token: str
) -> None:
    result = flowstone.materialize_all("g_ledger", "large", requested_by="someone")
    assert result.status == RunStatus.WAITING_APPROVAL
    approval = Approval.objects.get(run_id=result.run_id)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    params = [p["name"] for p in _document["paths"][path][method].get("parameters", [])]
    query = dict.fromkeys(params, "a\x00b")
    for values in _path_values(result.run_id, approval.pk):
        url = path.format(**values)
        send = getattr(client, method)
        if method == "get":
            answers = {"query": send(url, query)}
        else:
            answers = {
                name: send(url, body, content_type="application/json")
                for name, body in _BODIES.items()
            }
        documented = _documented_codes(path, method)
        for name, response in answers.items():
            assert response.status_code in documented, (url, name, response.content[:300])
