"""URL configuration: the Django admin (the approval console lives there)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from assets import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health/", views.health, name="health"),
    path("metrics", views.metrics, name="metrics"),
    path("api/", include("assets.urls")),
    path("api/approvals/", include("approvals.urls")),
    path("api/schedules/", include("schedules.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/lineage/", include("lineage.urls")),
]

# A URL no route matches, or a body Django refuses, answers JSON under /api/ like every API error.
handler400 = "flowstone.api_errors.bad_request"
handler404 = "flowstone.api_errors.not_found"
