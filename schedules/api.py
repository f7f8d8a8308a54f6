"""Read-only DRF endpoint for the tick history: ``/api/schedules/ticks/``, paginated by cursor."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, viewsets

from flowstone.filters import FilterSerializer, choice_filter
from flowstone.pagination import TickPagination
from schedules.models import Tick

if TYPE_CHECKING:
    from django.db.models import QuerySet
    from rest_framework.request import Request
    from rest_framework.response import Response


class TickFilters(FilterSerializer):
    """The filters of ``GET /api/schedules/ticks/``."""

    kind = choice_filter(Tick.Kind.choices, help_text="Schedule or sensor ticks only.")
    name = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=cast("int", Tick._meta.get_field("name").max_length),  # noqa: SLF001  # documented model API
        help_text="The schedule's or sensor's name.",
    )
    status = choice_filter(Tick.Status.choices, help_text="Only ticks in this status.")
    is_catch_up = serializers.BooleanField(
        required=False,
        help_text="Only catch-up ticks (true) or only ticks evaluated on time (false).",
    )


class TickSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """A tick as the API shows it; ``run_id`` is the ``id`` of the run it launched, if any."""

    run_id = serializers.UUIDField(
        read_only=True, allow_null=True, help_text="The id of the run the tick launched."
    )

    class Meta:
        model = Tick
        fields = (
            "id",
            "kind",
            "name",
            "run_key",
            "tick_time",
            "status",
            "is_catch_up",
            "local_tick_time",
            "reason",
            "run_id",
            "selection",
            "partition_keys",
            "created_at",
        )
        read_only_fields = fields


class TickViewSet(viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    """Ticks, newest first; filter by ``kind``, ``name``, ``status`` and ``is_catch_up``."""

    serializer_class = TickSerializer
    permission_classes = (permissions.IsAuthenticated,)
    pagination_class = TickPagination

    def get_queryset(self) -> QuerySet[Tick]:
        """Ticks, newest first."""
        return Tick.objects.all().order_by("-tick_time", "-id")

    @extend_schema(parameters=[TickFilters])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Ticks, newest first, filtered by ``kind``, ``name``, ``status`` and ``is_catch_up``."""
        ticks = TickFilters.apply(self.get_queryset(), request.query_params)
        page = self.paginate_queryset(ticks)
        return self.get_paginated_response(TickSerializer(page, many=True).data)
