"""The OpenAPI schema's view of errors: every operation lists the error codes it can answer.

``AutoSchema`` is ``REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"]``. On top of what drf-spectacular
derives, it adds to each operation the error responses (``flowstone.api_errors.error_response``)
that follow from how DRF handles the request, so a new endpoint is documented without listing
them by hand:

- 401 when the view needs an authenticated user;
- 403 when the method writes (a session needs its CSRF token; writes check permissions) or the
  view checks permissions beyond authentication;
- 404 when the path names an object, or the list is paginated (a bad cursor or page);
- 400 when the operation takes a body or query parameters (field errors, a bad ``page_size``);
- 415 when it takes a body (a content type no parser reads).

A view declares any other code it answers (a ``409``, a ``404`` for a name in the body) with
``extend_schema(responses={..., 409: error_response(409)})``; a declared response wins.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from drf_spectacular import openapi
from drf_spectacular.extensions import OpenApiSerializerExtension
from rest_framework import permissions, status

from flowstone.api_errors import error_response
from flowstone.status import RunKind, RunStatus, StepStatus

RUN_KINDS: Final = tuple(kind.value for kind in RunKind)
"""Run kinds as ``ENUM_NAME_OVERRIDES`` matches them: each value is its own label."""
RUN_STATUSES: Final = tuple(state.value for state in RunStatus)
STEP_STATUSES: Final = tuple(state.value for state in StepStatus)

_AUTHENTICATION_ONLY = (permissions.IsAuthenticated, permissions.AllowAny)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's ``AutoSchema`` with each operation's error responses."""

    def error_codes(self) -> set[int]:
        """The error status codes this operation can answer, from its view's configuration."""
        checks = self.view.get_permissions()
        codes: set[int] = set()
        if not all(isinstance(check, permissions.AllowAny) for check in checks):
            codes.add(status.HTTP_401_UNAUTHORIZED)
        beyond_login = any(type(check) not in _AUTHENTICATION_ONLY for check in checks)
        if self.method not in permissions.SAFE_METHODS or beyond_login:
            codes.add(status.HTTP_403_FORBIDDEN)
        is_paginated = getattr(self.view, "pagination_class", None) is not None
        if "{" in self.path or (self._is_list_view() and is_paginated):
            codes.add(status.HTTP_404_NOT_FOUND)
        if self.method in _BODY_METHODS and self.get_request_serializer() is not None:
            codes.add(status.HTTP_400_BAD_REQUEST)
            codes.add(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE)
        if any(p.get("in") == "query" for p in self._get_parameters()):
            codes.add(status.HTTP_400_BAD_REQUEST)
        return codes

    def _get_response_bodies(
        self, direction: Literal["request", "response"] = "response"
    ) -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        for code in sorted(self.error_codes()):
            if str(code) not in responses:
                responses[str(code)] = self._get_response_for_code(  # type: ignore[no-untyped-call]
                    error_response(code), str(code), direction=direction
                )
        return responses


class FieldErrorsExtension(OpenApiSerializerExtension):  # type: ignore[no-untyped-call]
    """The schema of ``FieldErrorsSerializer``: an object of messages by field name."""

    target_class = "flowstone.api_errors.FieldErrorsSerializer"

    def map_serializer(
        self, auto_schema: openapi.AutoSchema, direction: Literal["request", "response"]
    ) -> dict[str, Any]:
        """``{name: [message, ...]}``; a nested field's messages are nested objects."""
        return {
            "type": "object",
            "description": "Messages by field or query parameter name.",
            "additionalProperties": {
                "oneOf": [
                    {"type": "array", "items": {"type": "string"}},
                    {"type": "object", "additionalProperties": {}},
                ]
            },
        }


__all__ = ["RUN_KINDS", "RUN_STATUSES", "STEP_STATUSES", "AutoSchema", "FieldErrorsExtension"]
