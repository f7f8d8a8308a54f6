"""DRF endpoints for lineage queries: upstream, downstream, impact and staleness.

``GET /api/lineage/<query>/?asset=...&partition_key=...&depth=...`` (or ``materialization_id=``
instead of ``partition_key``). Authenticated users only. Invalid parameters are a 400 with field
errors; an unknown asset, or a partition with no successful materialization, is a 404 (from the
API's exception handler, ``flowstone.api_errors``, like every other ``FlowStoneError``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from assets.models import ASSET_NAME_LENGTH
from flowstone.api_errors import error_response
from flowstone.errors import PartitionKeyError
from flowstone.partitions import MAX_PARTITION_KEY_LENGTH
from lineage import queries

if TYPE_CHECKING:
    from collections.abc import Callable

    from rest_framework.request import Request

_View = TypeVar("_View", bound="LineageQueryView")

MAX_MATERIALIZATION_ID: Final = 2**63 - 1
"""The largest id a ``BigAutoField`` holds; larger ones are a 400, not a database error."""


class LineageQuerySerializer(serializers.Serializer):  # type: ignore[type-arg]
    """The query parameters of upstream, downstream and impact."""

    asset = serializers.CharField(max_length=ASSET_NAME_LENGTH)
    partition_key = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=MAX_PARTITION_KEY_LENGTH,
        help_text="Encoded partition key; empty or absent for an unpartitioned asset.",
    )
    materialization_id = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_MATERIALIZATION_ID
    )
    depth = serializers.IntegerField(required=False, min_value=1, max_value=queries.MAX_DEPTH)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """A partition key or a materialization id, not both."""
        if "partition_key" in attrs and "materialization_id" in attrs:
            raise serializers.ValidationError(
                {"materialization_id": "Give partition_key or materialization_id, not both."}
            )
        return attrs


class StalenessQuerySerializer(LineageQuerySerializer):
    """The query parameters of staleness (no depth: every input is looked at)."""

    depth = None  # type: ignore[assignment]


class LineageQueryView(APIView):
    """Validate the query parameters, run one query, return its JSON form."""

    permission_classes = (IsAuthenticated,)
    params_class: ClassVar[type[serializers.Serializer]] = LineageQuerySerializer  # type: ignore[type-arg]
    query: ClassVar[Callable[..., Any]]

    def get(self, request: Request) -> Response:
        """Answer the query for the asset partition named by the parameters."""
        params = self.params_class(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = dict(params.validated_data)
        asset = data.pop("asset")
        try:
            result = type(self).query(asset, **data)
        except PartitionKeyError as exc:  # a field error: the key came from one parameter
            raise ValidationError({"partition_key": [exc.message]}) from exc
        return Response(result.as_dict())


def _documented(
    params: type[serializers.Serializer],  # type: ignore[type-arg]
    answer: str,
) -> Callable[[type[_View]], type[_View]]:
    """Describe a query view in the OpenAPI schema: its docstring, parameters and answers."""

    def decorate(view_class: type[_View]) -> type[_View]:
        schema = extend_schema(
            description=view_class.__doc__,
            parameters=[params],
            responses={
                200: OpenApiResponse(OpenApiTypes.OBJECT, description=answer),
                400: error_response(status.HTTP_400_BAD_REQUEST),
                404: OpenApiResponse(
                    error_response(status.HTTP_404_NOT_FOUND).response,
                    description="Unknown asset, or no successful materialization to start from.",
                ),
            },
        )
        documented: type[_View] = schema(view_class)
        return documented

    return decorate


@_documented(LineageQuerySerializer, "``LineageResult.as_dict()``: start, nodes, links.")
class UpstreamView(LineageQueryView):
    """What the latest success of an asset partition was made from."""

    query = staticmethod(queries.upstream)


@_documented(LineageQuerySerializer, "``LineageResult.as_dict()``: start, nodes, links.")
class DownstreamView(LineageQueryView):
    """What was made from the latest success of an asset partition."""

    query = staticmethod(queries.downstream)


@_documented(LineageQuerySerializer, "``ImpactResult.as_dict()``: start, superseded, stale.")
class ImpactView(LineageQueryView):
    """The latest materializations that are stale because the partition has a newer success."""

    query = staticmethod(queries.impact)


@_documented(StalenessQuerySerializer, "``Staleness.as_dict()``: start, is_stale, causes.")
class StalenessView(LineageQueryView):
    """Whether the latest success of an asset partition is stale, and why."""

    params_class = StalenessQuerySerializer
    query = staticmethod(queries.staleness)
