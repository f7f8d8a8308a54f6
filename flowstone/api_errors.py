"""The HTTP API's one exception handler: every ``FlowStoneError`` answers from one table.

Views raise; they do not map errors to status codes. ``exception_handler`` is
``REST_FRAMEWORK["EXCEPTION_HANDLER"]`` (``flowstone/settings.py``). A ``FlowStoneError`` becomes
``{"detail": message, "kind": kind}`` with the status of its nearest class in ``STATUS_CODES``
(an unlisted subclass takes its base's code); anything else goes to DRF's own handler (its
``APIException``, ``Http404`` and ``PermissionDenied``), and what that leaves is a server error.
A ``FlowStoneError`` answered with a 5xx code is logged with its traceback first.

The bodies are described for the OpenAPI schema by ``ErrorSerializer`` (``{"detail", "kind"}``,
``kind`` present for a ``FlowStoneError``) and ``FieldErrorsSerializer`` (a 400's
``{field: [message, ...]}``); ``error_response(code)`` is the documented response of each status
code, which ``flowstone.openapi.AutoSchema`` adds to every operation that can answer it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from django.http import JsonResponse
from django.views import defaults
from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from flowstone.errors import (
    ERROR_KINDS,
    ApprovalDecidedError,
    ApprovalForbiddenError,
    ApprovalNotFoundError,
    AssetNotFoundError,
    DefinitionError,
    FlowStoneError,
    LineageCycleError,
    MaterializationNotFoundError,
    PartitionKeyError,
    RunNotFoundError,
    RunStateError,
    ValidationFailedError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)

STATUS_CODES: Final[Mapping[type[FlowStoneError], int]] = {
    ValidationFailedError: status.HTTP_400_BAD_REQUEST,
    PartitionKeyError: status.HTTP_400_BAD_REQUEST,
    DefinitionError: status.HTTP_400_BAD_REQUEST,
    LineageCycleError: status.HTTP_400_BAD_REQUEST,
    AssetNotFoundError: status.HTTP_404_NOT_FOUND,
    RunNotFoundError: status.HTTP_404_NOT_FOUND,
    ApprovalNotFoundError: status.HTTP_404_NOT_FOUND,
    MaterializationNotFoundError: status.HTTP_404_NOT_FOUND,
    ApprovalForbiddenError: status.HTTP_403_FORBIDDEN,
    ApprovalDecidedError: status.HTTP_409_CONFLICT,
    RunStateError: status.HTTP_409_CONFLICT,
    # Run-time failures (a step's IO, resources, timeouts, user code): the server's problem.
    FlowStoneError: status.HTTP_500_INTERNAL_SERVER_ERROR,
}
"""The status code of each ``FlowStoneError`` class; a subclass not listed uses its base's."""


def status_code_for(error: FlowStoneError) -> int:
    """The status code of ``error``: its nearest class in ``STATUS_CODES``."""
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return status.HTTP_500_INTERNAL_SERVER_ERROR  # pragma: no cover  # FlowStoneError is listed


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Answer a ``FlowStoneError`` from ``STATUS_CODES``; anything else as DRF does."""
    if not isinstance(exc, FlowStoneError):
        return drf_exception_handler(exc, context)
    code = status_code_for(exc)
    if code >= status.HTTP_500_INTERNAL_SERVER_ERROR:
        logger.error("%s answered %d", type(exc).__name__, code, exc_info=exc)
    set_rollback()
    return Response({"detail": exc.message, "kind": exc.kind}, status=code)


API_PREFIX: Final = "/api/"


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's ``handler404``: an ``Error`` body under ``/api/``, the HTML page elsewhere.

    A URL no route matches (``/api/approvals/1.5/``) never reaches DRF, so without this an API
    client would get an HTML page where the schema promises JSON.
    """
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    return defaults.page_not_found(request, exception)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's ``handler400``: an ``Error`` body under ``/api/``, the HTML page elsewhere.

    Django answers a request it refuses before DRF parses it (a form body over
    ``DATA_UPLOAD_MAX_NUMBER_FIELDS`` or ``DATA_UPLOAD_MAX_MEMORY_SIZE``, a Host not in
    ``ALLOWED_HOSTS``) with a 400 of its own; it has already logged it to ``django.security``.
    """
    if request.path.startswith(API_PREFIX):
        detail = "Bad request: a body too large or with too many fields, or a bad Host header."
        return JsonResponse({"detail": detail}, status=status.HTTP_400_BAD_REQUEST)
    return defaults.bad_request(request, exception)


class ErrorSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """An error: ``{"detail": message}``, with ``kind`` when it is a ``FlowStoneError``."""

    detail = serializers.CharField(help_text="What went wrong, for people.")
    kind = serializers.ChoiceField(
        choices=sorted(ERROR_KINDS),
        required=False,
        help_text="The FlowStoneError's kind; absent for authentication, permission, "
        "not-found and parse errors.",
    )


class FieldErrorsSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """Invalid fields or query parameters: ``{name: [message, ...]}``, nested for nested fields.

    Its schema is ``flowstone.openapi.FieldErrorsExtension``'s: the field names vary.
    """


_DESCRIPTIONS: Final[Mapping[int, str]] = {
    status.HTTP_400_BAD_REQUEST: "Invalid input: field errors ({name: [message]}), or a "
    '{"detail", "kind"} error (a malformed body, or input refused by a FlowStoneError).',
    status.HTTP_401_UNAUTHORIZED: "No credentials, or a bad token.",
    status.HTTP_403_FORBIDDEN: "Not allowed: a missing permission (or, with session "
    "authentication, a missing CSRF token).",
    status.HTTP_404_NOT_FOUND: "No such object (or not visible to you), or a bad page cursor.",
    status.HTTP_409_CONFLICT: "The object is no longer in a state that allows this.",
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: "The body's content type is not one the operation "
    "reads (JSON, a form, or multipart), or it could not be told from the request.",
}
ERROR_CODES: Final = tuple(_DESCRIPTIONS)
"""The error status codes the API documents."""


def error_response(code: int) -> OpenApiResponse:
    """The documented response of an error status ``code`` (one of ``ERROR_CODES``)."""
    if code == status.HTTP_400_BAD_REQUEST:
        body: Any = PolymorphicProxySerializer(
            component_name="BadRequest",
            serializers=[FieldErrorsSerializer, ErrorSerializer],
            resource_type_field_name=None,
        )
    else:
        body = ErrorSerializer
    return OpenApiResponse(body, description=_DESCRIPTIONS[code])


__all__ = [
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
