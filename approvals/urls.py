"""URLs of the approvals API."""

from __future__ import annotations

from rest_framework.routers import DefaultRouter

from approvals.api import ApprovalViewSet

app_name = "approvals"

router = DefaultRouter()
router.register("", ApprovalViewSet, basename="approval")

urlpatterns = router.urls
