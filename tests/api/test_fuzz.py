"""Property-based fuzzing of every operation in the OpenAPI schema: no server errors, ever."""

from __future__ import annotations

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


# The in-process WSGI transport (werkzeug's test client) spools some generated bodies to temporary
# files it does not close; that ResourceWarning is the transport's, not the application's.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_no_operation_answers_with_a_server_error(case: Any, token: str) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Token {token}"},
        checks=[schemathesis.checks.not_a_server_error],
    )
