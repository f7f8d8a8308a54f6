"""Plain Django views: the health endpoint and Prometheus metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from assets.health import cached_health
from assets.metrics import cached_exposition

if TYPE_CHECKING:
    from django.http import HttpRequest

HTTP_OK = 200
HTTP_UNAVAILABLE = 503


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """``200`` when the database and broker answer and a worker was seen recently, else ``503``.

    Everyone gets the status and each check's ``ok``/``failing``; staff users (logged in to the
    admin) also get the error texts and the workers' names under ``details``.
    """
    report = cached_health()
    body: dict[str, object] = dict(report.summary())
    if request.user.is_active and request.user.is_staff:
        body["details"] = report.details()
    return JsonResponse(body, status=HTTP_OK if report.is_healthy else HTTP_UNAVAILABLE)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:  # noqa: ARG001
    """Prometheus text exposition of FlowStone's metrics, reused for ``METRICS_CACHE_SECONDS``."""
    return HttpResponse(cached_exposition(), content_type=CONTENT_TYPE_LATEST)
