"""DRF endpoints: assets and their graph, runs (start, status, cancel), materializations."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError
from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from assets import services
from assets.models import Materialization, Run, StepAttempt
from assets.serializers import (
    AssetSerializer,
    GraphSerializer,
    RunSerializer,
    StartRunSerializer,
    StepDetailSerializer,
    StepSerializer,
)
from flowstone import api
from flowstone.errors import ValidationFailedError
from flowstone.inputs import validate_text
from flowstone.partitions import decode_partition_key
from flowstone.registry import get_registry

if TYPE_CHECKING:
    from django.db.models import QuerySet
    from rest_framework.request import Request

    from flowstone.definitions import AssetDefinition
    from flowstone.execution.handle import RunHandle
    from flowstone.partitions import PartitionValue

IDEMPOTENCY_HEADER = "Idempotency-Key"


class ReadWithViewPermission(permissions.DjangoModelPermissions):
    """Model permissions, with reads needing the ``view`` permission too."""

    def __init__(self) -> None:
        self.perms_map = {
            **permissions.DjangoModelPermissions.perms_map,
            "GET": ["%(app_label)s.view_%(model_name)s"],
            "HEAD": ["%(app_label)s.view_%(model_name)s"],
        }


def _asset_data(definition: AssetDefinition) -> dict[str, Any]:
    spec = definition.spec
    return {
        "name": spec.name,
        "description": spec.description,
        "deps": list(spec.deps),
        "partitions": None if spec.partitions is None else repr(spec.partitions),
        "io_manager": spec.io_manager,
        "resources": sorted(spec.resources),
        "tags": dict(spec.tags),
        "code_version": spec.code_version,
        "queue": spec.queue,
        "concurrency_limit": spec.concurrency_limit,
        "has_checkpoint": definition.checkpoint is not None,
    }


class AssetViewSet(viewsets.ViewSet):
    """The registry's assets (read-only; definitions live in code)."""

    permission_classes = (permissions.IsAuthenticated,)
    lookup_value_regex = r"[A-Za-z_][A-Za-z0-9_]{0,127}"

    @extend_schema(responses=AssetSerializer(many=True))
    def list(self, request: Request) -> Response:
        """Every asset, in topological order."""
        registry = get_registry()
        return Response([_asset_data(registry.get(name)) for name in registry.graph.order])

    @extend_schema(responses=AssetSerializer)
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        """One asset; 404 for an unknown name."""
        return Response(_asset_data(get_registry().get(str(pk))))

    @extend_schema(responses=GraphSerializer)
    @action(detail=False)
    def graph(self, request: Request) -> Response:
        """The asset graph as nodes and edges."""
        graph = get_registry().graph
        edges = [
            {"from": upstream, "to": name}
            for name in graph.order
            for upstream in graph.upstreams[name]
        ]
        return Response({"nodes": list(graph.order), "edges": edges})


def _partition(
    definition: AssetDefinition, text: str | None, key: str | None
) -> PartitionValue | None:
    if key is not None:
        return decode_partition_key(key)
    if text is None or definition.spec.partitions is None:
        return text
    return definition.spec.partitions.parse(text)


class RunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):  # type: ignore[type-arg]
    """Runs: start one on the workers, list, show with steps, cancel."""

    serializer_class = RunSerializer
    permission_classes = (permissions.IsAuthenticated,)

    def get_queryset(self) -> QuerySet[Run]:
        """Every run for users who may view runs; otherwise only the user's own."""
        runs = Run.objects.order_by("-created_at", "-id")
        if not self.request.user.has_perm("assets.view_run"):
            runs = runs.filter(requested_by=self.request.user.get_username())
        wanted = self.request.query_params.get("status")
        return runs.filter(status=wanted) if wanted else runs

    @extend_schema(
        request=StartRunSerializer,
        responses={201: RunSerializer, 200: RunSerializer},
        parameters=[OpenApiParameter(IDEMPOTENCY_HEADER, str, OpenApiParameter.HEADER)],
    )
    def create(self, request: Request) -> Response:
        """Start a run (always on the workers); the same ``Idempotency-Key`` starts it once.

        Bad options raise ``FlowStoneError`` before any run is recorded, and the API's exception
        handler (``flowstone.api_errors``) answers with their status code (400, 404).
        """
        if not request.user.has_perm("assets.add_run"):
            return Response({"detail": "You may not start runs."}, status=status.HTTP_403_FORBIDDEN)
        body = StartRunSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        user = request.user.get_username()
        key = request.headers.get(IDEMPOTENCY_HEADER) or None
        if key is not None:
            try:
                key = validate_text(
                    key, what=IDEMPOTENCY_HEADER, max_length=api.MAX_IDEMPOTENCY_KEY
                )
            except ValidationFailedError as exc:
                return Response(
                    {IDEMPOTENCY_HEADER: [exc.message]}, status=status.HTTP_400_BAD_REQUEST
                )
        if key is not None and (existing := services.run_for_idempotency_key(user, key)):
            return Response(RunSerializer(existing).data, status=status.HTTP_200_OK)
        definition = get_registry().get(data["asset"])
        try:
            handle = self._start(definition, data, user=user, key=key)
        except IntegrityError:
            existing = services.run_for_idempotency_key(user, str(key))
            return Response(RunSerializer(existing).data, status=status.HTTP_200_OK)
        run = services.get_run(handle.run_id)
        return Response(RunSerializer(run).data, status=status.HTTP_201_CREATED)

    @staticmethod
    def _start(
        definition: AssetDefinition, data: dict[str, Any], *, user: str, key: str | None
    ) -> RunHandle:
        options: dict[str, Any] = {
            "config": data["config"],
            "tags": data["tags"],
            "requested_by": user,
            "idempotency_key": key or "",
            "actor_type": "api",
        }
        if data["kind"] == "backfill":
            texts = data.get("partitions")
            partitions = None if texts is None else [_partition(definition, t, None) for t in texts]
            return api.backfill_async(
                definition.name,
                partitions,
                max_parallel=data.get("max_parallel"),
                force=data["force"],
                **options,
            )
        partition = _partition(definition, data.get("partition"), data.get("partition_key"))
        start = (
            api.materialize_all_async
            if data["kind"] == "materialize_all"
            else api.materialize_async
        )
        return start(definition.name, partition, **options)

    @extend_schema(responses=StepSerializer(many=True))
    @action(detail=True)
    def steps(self, request: Request, pk: str | None = None) -> Response:
        """The run's steps."""
        run = self.get_object()
        steps = Materialization.objects.filter(run=run).order_by("id")
        return Response(StepSerializer(steps, many=True).data)

    @extend_schema(request=None, responses={201: RunSerializer})
    @action(detail=True, methods=["post"])
    def reexecute(self, request: Request, pk: str | None = None) -> Response:
        """Re-execute a finished run from its failures, on the workers.

        The new run holds the failed, upstream-failed and canceled steps and reuses the run's
        successes as their upstreams; ``409`` if the run has not finished or has nothing to
        re-execute.
        """
        run = self.get_object()
        if not request.user.has_perm("assets.add_run"):
            return Response({"detail": "You may not start runs."}, status=status.HTTP_403_FORBIDDEN)
        handle = api.reexecute_async(
            run.pk, requested_by=request.user.get_username(), actor_type="api"
        )
        new = services.get_run(handle.run_id)
        return Response(RunSerializer(new).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=RunSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel the run's steps that have not started."""
        run = self.get_object()
        if not request.user.has_perm("assets.change_run"):
            return Response(
                {"detail": "You may not cancel runs."}, status=status.HTTP_403_FORBIDDEN
            )
        services.cancel_run(run.pk, actor=request.user.get_username(), actor_type="api")
        return Response(RunSerializer(services.get_run(run.pk)).data)


class MaterializationPagination(CursorPagination):
    """Newest first, stable under inserts."""

    ordering = "-id"
    page_size = 100


class MaterializationViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,  # type: ignore[type-arg]
):
    """Materializations, filtered by ``asset``, ``partition_key``, ``status`` and ``run``."""

    serializer_class = StepSerializer
    pagination_class = MaterializationPagination
    permission_classes = (permissions.IsAuthenticated, ReadWithViewPermission)
    filter_fields = ("asset", "partition_key", "status", "run")

    def get_serializer_class(self) -> type[StepSerializer]:
        """One materialization shows its kept attempts (errors, tracebacks, logs); lists do not."""
        return StepDetailSerializer if self.action == "retrieve" else StepSerializer

    def get_queryset(self) -> QuerySet[Materialization]:
        """Filtered by the query parameters given; a malformed run id is a 400."""
        if self.action == "retrieve":
            return Materialization.objects.prefetch_related(
                Prefetch("attempt_history", StepAttempt.objects.order_by("-attempt"))
            )
        rows = Materialization.objects.all()
        for name in self.filter_fields:
            value = self.request.query_params.get(name)
            if value is None:
                continue
            if "\x00" in value:
                raise ValidationError({name: ["NUL characters are not allowed."]})
            if name == "run":
                try:
                    value = str(uuid.UUID(value))
                except ValueError as exc:
                    raise ValidationError({"run": ["Not a run id."]}) from exc
            rows = rows.filter(**{name: value})
        return rows
