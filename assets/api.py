"""DRF endpoints: assets and their graph, runs (start, status, cancel), materializations.

Every list is paginated (``flowstone.pagination``) and filtered by a ``FilterSerializer`` that
also documents its query parameters; a step or materialization names its run as ``run_id``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import IntegrityError
from django.db.models import Prefetch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from assets import services
from assets.models import ASSET_NAME_LENGTH, Materialization, Run, StepAttempt
from assets.serializers import (
    AssetSerializer,
    GraphSerializer,
    RunSerializer,
    StartRunSerializer,
    StepDetailSerializer,
    StepSerializer,
)
from flowstone import api
from flowstone.api_errors import error_response
from flowstone.errors import ValidationFailedError
from flowstone.filters import FilterSerializer, choice_filter
from flowstone.inputs import validate_text
from flowstone.openapi import RUN_STATUSES, STEP_STATUSES
from flowstone.pagination import (
    NewestFirstPagination,
    PageNumberPagination,
    RunPagination,
    StepPagination,
)
from flowstone.partitions import MAX_PARTITION_KEY_LENGTH, decode_partition_key
from flowstone.registry import get_registry

if TYPE_CHECKING:
    from collections.abc import Callable

    from django.db.models import QuerySet
    from rest_framework.request import Request

    from flowstone.definitions import AssetDefinition
    from flowstone.execution.handle import RunHandle
    from flowstone.partitions import PartitionValue

IDEMPOTENCY_HEADER = "Idempotency-Key"
RUN_FILTER_REMOVED_IN = "0.3.0"
"""The release that drops the ``?run=`` materialization filter (renamed ``?run_id=``)."""


class RunFilters(FilterSerializer):
    """The filters of ``GET /api/runs/``."""

    status = choice_filter(RUN_STATUSES, help_text="Only runs in this status.")


class StepFilters(FilterSerializer):
    """The filters of ``GET /api/runs/{id}/steps/``."""

    status = choice_filter(STEP_STATUSES, help_text="Only steps in this status.")


class MaterializationFilters(FilterSerializer):
    """The filters of ``GET /api/materializations/``; ``run`` is the old name of ``run_id``."""

    blank_values = frozenset({"partition_key"})

    asset = serializers.CharField(
        required=False, allow_blank=True, max_length=ASSET_NAME_LENGTH, help_text="Asset name."
    )
    partition_key = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=MAX_PARTITION_KEY_LENGTH,
        help_text="Encoded partition key; empty for an unpartitioned asset.",
    )
    status = choice_filter(STEP_STATUSES, help_text="Only materializations in this status.")
    run_id = serializers.UUIDField(required=False, help_text="The id of their run.")
    run = serializers.UUIDField(
        required=False,
        help_text=f"Deprecated name of run_id, removed in {RUN_FILTER_REMOVED_IN}.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """``run`` is ``run_id`` under its old name; giving both, they must agree."""
        old = attrs.pop("run", None)
        if old is not None and attrs.setdefault("run_id", old) != old:
            raise serializers.ValidationError({"run": "Give run_id or run, not both."})
        return attrs


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
    pagination_class = PageNumberPagination
    lookup_value_regex = r"[A-Za-z_][A-Za-z0-9_]{0,127}"

    @extend_schema(responses=AssetSerializer(many=True))
    def list(self, request: Request) -> Response:
        """Every asset, in topological order, a page at a time."""
        registry = get_registry()
        paginator = self.pagination_class()
        # DRF pages any sequence; its stubs only say QuerySet.
        names: list[str] | None = paginator.paginate_queryset(
            list(registry.graph.order),  # type: ignore[arg-type]
            request,
            view=self,
        )
        return paginator.get_paginated_response(
            [_asset_data(registry.get(name)) for name in names or ()]
        )

    @extend_schema(responses={200: AssetSerializer, 404: error_response(404)})
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


def start_run(
    definition: AssetDefinition,
    data: dict[str, Any],
    *,
    requested_by: str,
    actor_type: str,
    idempotency_key: str = "",
) -> RunHandle:
    """Start the run ``data`` describes (``StartRunSerializer``'s fields) on the workers.

    One door for ``POST /api/runs/`` and the admin's launch form.
    """
    options: dict[str, Any] = {
        "config": data["config"],
        "tags": data.get("tags") or {},
        "requested_by": requested_by,
        "idempotency_key": idempotency_key,
        "actor_type": actor_type,
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
        api.materialize_all_async if data["kind"] == "materialize_all" else api.materialize_async
    )
    return start(definition.name, partition, **options)


class RunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):  # type: ignore[type-arg]
    """Runs: start one on the workers, list, show with steps, cancel."""

    serializer_class = RunSerializer
    permission_classes = (permissions.IsAuthenticated,)
    pagination_class = RunPagination

    def get_queryset(self) -> QuerySet[Run]:
        """Every run for users who may view runs; otherwise only the user's own."""
        runs = Run.objects.order_by("-created_at", "-id")
        if not self.request.user.has_perm("assets.view_run"):
            runs = runs.filter(requested_by=self.request.user.get_username())
        return runs

    @extend_schema(parameters=[RunFilters])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Runs you may see, newest first, filtered by ``status``."""
        runs = RunFilters.apply(self.get_queryset(), request.query_params)
        page = self.paginate_queryset(runs)
        return self.get_paginated_response(RunSerializer(page, many=True).data)

    @extend_schema(
        request=StartRunSerializer,
        responses={
            201: RunSerializer,
            200: RunSerializer,
            404: error_response(status.HTTP_404_NOT_FOUND),
        },
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
        definition = get_registry().get(data["asset"])
        return self._started_once(
            request,
            lambda user, key: start_run(
                definition, data, requested_by=user, actor_type="api", idempotency_key=key or ""
            ),
        )

    @staticmethod
    def _started_once(request: Request, start: Callable[[str, str | None], RunHandle]) -> Response:
        """``start(user, key)`` once per ``Idempotency-Key``: 201 the new run, 200 the earlier."""
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
        try:
            handle = start(user, key)
        except IntegrityError:
            existing = services.run_for_idempotency_key(user, str(key))
            return Response(RunSerializer(existing).data, status=status.HTTP_200_OK)
        run = services.get_run(handle.run_id)
        return Response(RunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=StepSerializer(many=True), parameters=[StepFilters])
    @action(detail=True, pagination_class=StepPagination)
    def steps(self, request: Request, pk: str | None = None) -> Response:
        """The run's steps in planned order, a page at a time, filtered by ``status``."""
        run = self.get_object()
        steps = StepFilters.apply(Materialization.objects.filter(run=run), request.query_params)
        page = self.paginate_queryset(steps)
        return self.get_paginated_response(StepSerializer(page, many=True).data)

    @extend_schema(
        request=None,
        responses={
            201: RunSerializer,
            200: RunSerializer,
            409: error_response(status.HTTP_409_CONFLICT),
        },
        parameters=[OpenApiParameter(IDEMPOTENCY_HEADER, str, OpenApiParameter.HEADER)],
    )
    @action(detail=True, methods=["post"])
    def reexecute(self, request: Request, pk: str | None = None) -> Response:
        """Re-execute a finished run from its failures, on the workers.

        The new run holds the failed, upstream-failed and canceled steps and reuses the run's
        successes as their upstreams; ``409`` if the run has not finished or has nothing to
        re-execute. The same ``Idempotency-Key`` starts it once (200 with the earlier run).
        """
        run = self.get_object()
        if not request.user.has_perm("assets.add_run"):
            return Response({"detail": "You may not start runs."}, status=status.HTTP_403_FORBIDDEN)
        return self._started_once(
            request,
            lambda user, key: api.reexecute_async(
                run.pk, requested_by=user, actor_type="api", idempotency_key=key or ""
            ),
        )

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


class MaterializationViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,  # type: ignore[type-arg]
):
    """Materializations, newest first, filtered by asset, partition key, status and run."""

    serializer_class = StepSerializer
    pagination_class = NewestFirstPagination
    permission_classes = (permissions.IsAuthenticated, ReadWithViewPermission)
    queryset = Materialization.objects.all()

    def get_serializer_class(self) -> type[StepSerializer]:
        """One materialization shows its kept attempts (errors, tracebacks, logs); lists do not."""
        return StepDetailSerializer if self.action == "retrieve" else StepSerializer

    def get_queryset(self) -> QuerySet[Materialization]:
        """With its kept attempts, newest first, for one materialization."""
        if self.action == "retrieve":
            return Materialization.objects.prefetch_related(
                Prefetch("attempt_history", StepAttempt.objects.order_by("-attempt"))
            )
        return Materialization.objects.all()

    @extend_schema(
        parameters=[
            MaterializationFilters,
            OpenApiParameter(
                "run",
                OpenApiTypes.UUID,
                deprecated=True,
                description=f"Old name of run_id, removed in {RUN_FILTER_REMOVED_IN}.",
            ),
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Materializations matching every filter given; a malformed filter is a 400."""
        rows = MaterializationFilters.apply(self.get_queryset(), request.query_params)
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(StepSerializer(page, many=True).data)
