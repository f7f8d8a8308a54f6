"""URLs of the schedules API."""

from __future__ import annotations

from rest_framework.routers import DefaultRouter

from schedules.api import TickViewSet

app_name = "schedules"

router = DefaultRouter()
router.register("ticks", TickViewSet, basename="tick")

urlpatterns = router.urls
