"""Read-only DRF endpoint for the tick history: ``/api/schedules/ticks/``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework import permissions, serializers, viewsets

from schedules.models import Tick

if TYPE_CHECKING:
    from django.db.models import QuerySet

FILTERS = ("kind", "name", "status")


class TickSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """A tick as the API shows it."""

    class Meta:
        model = Tick
        fields = (
            "id",
            "kind",
            "name",
            "run_key",
            "tick_time",
            "status",
            "reason",
            "run",
            "selection",
            "partition_keys",
            "created_at",
        )
        read_only_fields = fields


class TickViewSet(viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    """Ticks, newest first; filter with ``?kind=``, ``?name=`` and ``?status=``."""

    serializer_class = TickSerializer
    permission_classes = (permissions.IsAuthenticated,)

    def get_queryset(self) -> QuerySet[Tick]:
        """Ticks, filtered by the query parameters that are given."""
        queryset = Tick.objects.all().order_by("-tick_time", "-id")
        for name in FILTERS:
            value = self.request.query_params.get(name)
            if value:
                queryset = queryset.filter(**{name: value})
        return queryset
