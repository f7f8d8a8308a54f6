"""The HTTP API's one exception handler: every ``FlowStoneError`` answers from one table.

Views raise; they do not map errors to status codes. ``exception_handler`` is
``REST_FRAMEWORK["EXCEPTION_HANDLER"]`` (``flowstone/settings.py``). A ``FlowStoneError`` becomes
``{"detail": message, "kind": kind}`` with the status of its nearest class in ``STATUS_CODES``
(an unlisted subclass takes its base's code); anything else goes to DRF's own handler (its
``APIException``, ``Http404`` and ``PermissionDenied``), and what that leaves is a server error.
A ``FlowStoneError`` answered with a 5xx code is logged with its traceback first.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from flowstone.errors import (
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


__all__ = ["STATUS_CODES", "exception_handler", "status_code_for"]
