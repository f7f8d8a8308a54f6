"""App configuration for ``assets``."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class AssetsConfig(AppConfig):
    """Runs and materializations; registers FlowStone's definition checks."""

    name = "assets"
    verbose_name = "FlowStone assets"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Register the system checks that validate asset definitions."""
        from flowstone.celery_checks import check_celery_settings  # noqa: PLC0415
        from flowstone.checks import (  # noqa: PLC0415  # apps are loading
            check_definitions,
            check_fencing,
            check_notification_channels,
            check_step_log,
            check_worker_window,
        )

        checks.register(check_definitions, "flowstone")
        checks.register(check_fencing, "flowstone")
        checks.register(check_notification_channels, "flowstone")
        checks.register(check_step_log, "flowstone")
        checks.register(check_worker_window, "flowstone")
        checks.register(check_celery_settings, "flowstone")
