"""Plain Django views: the health endpoint and Prometheus metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from assets.health import check_health
from assets.metrics import FlowStoneCollector

if TYPE_CHECKING:
    from django.http import HttpRequest

HTTP_OK = 200
HTTP_UNAVAILABLE = 503


@require_GET
def health(request: HttpRequest) -> JsonResponse:  # noqa: ARG001
    """``200`` when the database and broker answer, else ``503``; lists live workers."""
    report = check_health()
    return JsonResponse(report.as_dict(), status=HTTP_OK if report.is_healthy else HTTP_UNAVAILABLE)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:  # noqa: ARG001
    """Prometheus text exposition of FlowStone's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FlowStoneCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
