"""App configuration for ``approvals``."""

from __future__ import annotations

from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    """Checkpoint approvals: models, services, admin console, API, notifications."""

    name = "approvals"
    verbose_name = "FlowStone approvals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Cancel a canceled run's approvals (notifications are recorded by the services)."""
        from approvals import services  # noqa: PLC0415  # apps are loading
        from assets.services import waiting_steps_canceled  # noqa: PLC0415

        waiting_steps_canceled.connect(
            services.cancel_approvals_of_steps, dispatch_uid="approvals.cancel_with_run"
        )
