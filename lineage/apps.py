"""App configuration for ``lineage``."""

from __future__ import annotations

from django.apps import AppConfig


class LineageConfig(AppConfig):
    """Lineage edges and audit events."""

    name = "lineage"
    verbose_name = "FlowStone lineage and audit"
    default_auto_field = "django.db.models.BigAutoField"
