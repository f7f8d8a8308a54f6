"""The API's one exception handler: each FlowStoneError class answers with its table's code."""

from __future__ import annotations

import pytest
from rest_framework.exceptions import NotFound

from flowstone import api_errors, errors
from flowstone.api_errors import STATUS_CODES, exception_handler, status_code_for

pytestmark = pytest.mark.embedded


def test_all_is_pinned() -> None:
    assert api_errors.__all__ == [
        "ERROR_CODES",
        "STATUS_CODES",
        "ErrorSerializer",
        "FieldErrorsSerializer",
        "bad_request",
        "error_response",
        "exception_handler",
        "not_found",
        "status_code_for",
    ]


@pytest.mark.parametrize(
    ("error_class", "code"),
    [
        (errors.ValidationFailedError, 400),
        (errors.PartitionKeyError, 400),
        (errors.DefinitionError, 400),
        (errors.LineageCycleError, 400),
        (errors.AssetNotFoundError, 404),
        (errors.RunNotFoundError, 404),
        (errors.ApprovalNotFoundError, 404),
        (errors.MaterializationNotFoundError, 404),
        (errors.ApprovalForbiddenError, 403),
        (errors.ApprovalDecidedError, 409),
        (errors.FlowStoneError, 500),
        (errors.ExecutionError, 500),
        (errors.IOManagerError, 500),
        (errors.StepTimeoutError, 500),
        (errors.ResourceUnavailableError, 500),
    ],
)
def test_each_error_class_answers_with_its_code_and_a_detail_and_kind(
    error_class: type[errors.FlowStoneError], code: int
) -> None:
    error = error_class("it went wrong", asset="a")
    response = exception_handler(error, {})
    assert response is not None
    assert response.status_code == code
    assert response.data == {"detail": "it went wrong", "kind": error.kind}


def test_every_error_class_has_a_code() -> None:
    named = [getattr(errors, name) for name in errors.__all__]
    for error_class in [c for c in named if isinstance(c, type)]:
        assert status_code_for(error_class("x")) in {400, 403, 404, 409, 500}, error_class
    assert set(STATUS_CODES) <= set(named)


def test_an_unlisted_subclass_takes_its_bases_code() -> None:
    class OddInputError(errors.PartitionKeyError):
        pass

    assert status_code_for(OddInputError("x")) == 400


def test_other_exceptions_go_to_drfs_handler() -> None:
    not_found = exception_handler(NotFound("nope"), {})
    assert not_found is not None
    assert (not_found.status_code, not_found.data) == (404, {"detail": "nope"})
    assert exception_handler(ValueError("boom"), {}) is None
