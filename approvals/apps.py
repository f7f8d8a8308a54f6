"""App configuration for ``approvals``."""

from __future__ import annotations

from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    """Checkpoint approvals: models, services, admin console, API, notifications."""

    name = "approvals"
    verbose_name = "FlowStone approvals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Cancel a canceled run's approvals; mark stale the approvals a new success outdates.

        Notifications are recorded by the services, in the deciding transaction.
        """
        from approvals import services  # noqa: PLC0415  # apps are loading
        from assets.services import (  # noqa: PLC0415
            success_recorded,
            waiting_steps_canceled,
        )

        waiting_steps_canceled.connect(
            services.cancel_approvals_of_steps, dispatch_uid="approvals.cancel_with_run"
        )
        success_recorded.connect(
            services.mark_readers_stale, dispatch_uid="approvals.stale_on_new_value"
        )
