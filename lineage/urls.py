"""URLs of the lineage API (included under ``api/lineage/``)."""

from __future__ import annotations

from django.urls import path

from lineage.api import DownstreamView, ImpactView, StalenessView, UpstreamView

app_name = "lineage"

urlpatterns = [
    path("upstream/", UpstreamView.as_view(), name="upstream"),
    path("downstream/", DownstreamView.as_view(), name="downstream"),
    path("impact/", ImpactView.as_view(), name="impact"),
    path("staleness/", StalenessView.as_view(), name="staleness"),
]
