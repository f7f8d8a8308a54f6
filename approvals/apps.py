"""App configuration for ``approvals``."""

from __future__ import annotations

from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    """Checkpoint approvals: models, services, admin console, API, notifications."""

    name = "approvals"
    verbose_name = "FlowStone approvals"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Connect the email notifier to the approval signals, and cancels and successes."""
        from approvals import notifications, services, signals  # noqa: PLC0415  # apps are loading
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

        signals.approval_requested.connect(
            notifications.on_requested, dispatch_uid="approvals.notify.requested"
        )
        signals.approval_escalated.connect(
            notifications.on_escalated, dispatch_uid="approvals.notify.escalated"
        )
        signals.approval_decided.connect(
            notifications.on_decided, dispatch_uid="approvals.notify.decided"
        )
        signals.approval_expired.connect(
            notifications.on_expired, dispatch_uid="approvals.notify.expired"
        )
