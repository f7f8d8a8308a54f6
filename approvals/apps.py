"""App configuration for ``approvals``."""

from __future__ import annotations

from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    """Checkpoint approvals (the models arrive with checkpoints)."""

    name = "approvals"
    verbose_name = "FlowStone approvals"
    default_auto_field = "django.db.models.BigAutoField"
