"""The query-parameter filters of the API's list endpoints, one serializer per list.

A list's filters are the fields of a ``FilterSerializer``: the same class validates the query
parameters (a bad value is a 400 with field errors, never a database error) and, given to
``extend_schema(parameters=[...])``, documents them in the OpenAPI schema, so the two cannot
drift apart. An empty value means "any", except for the fields named in ``blank_values`` (an
empty partition key is the key of an unpartitioned asset).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from django.db.models import Model
from rest_framework import serializers

if TYPE_CHECKING:
    from collections.abc import Mapping

    from django.db.models import QuerySet

_M = TypeVar("_M", bound=Model)


class FilterSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """Validates a list's query parameters and applies them to its queryset."""

    blank_values: ClassVar[frozenset[str]] = frozenset()
    """Fields whose empty value is a value to match rather than "any"."""

    def lookups(self) -> dict[str, Any]:
        """The validated filters as ``QuerySet.filter`` keyword arguments."""
        return {
            name: value
            for name, value in self.validated_data.items()
            if value != "" or name in self.blank_values
        }

    @classmethod
    def apply(cls, queryset: QuerySet[_M], query_params: Mapping[str, Any]) -> QuerySet[_M]:
        """``queryset`` filtered by the query parameters; a bad parameter raises a 400.

        An empty parameter means "any" and is dropped before it is validated (an empty
        ``?run_id=`` is not a malformed id), unless its field is in ``blank_values``.
        """
        given = {
            name: value
            for name, value in query_params.items()
            if value != "" or name in cls.blank_values
        }
        params = cls(data=given)
        params.is_valid(raise_exception=True)
        return queryset.filter(**params.lookups())


def choice_filter(choices: Any, *, help_text: str) -> serializers.ChoiceField:
    """An optional enum filter; empty means any."""
    return serializers.ChoiceField(
        choices=choices, required=False, allow_blank=True, help_text=help_text
    )


__all__ = ["FilterSerializer", "choice_filter"]
