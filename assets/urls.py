"""URLs of the assets, runs and materializations API."""

from __future__ import annotations

from rest_framework.routers import DefaultRouter

from assets.api import AssetViewSet, MaterializationViewSet, RunViewSet

router = DefaultRouter()
router.register("assets", AssetViewSet, basename="asset")
router.register("runs", RunViewSet, basename="run")
router.register("materializations", MaterializationViewSet, basename="materialization")

urlpatterns = router.urls
