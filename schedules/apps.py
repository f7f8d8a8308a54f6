"""App configuration for ``schedules``."""

from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class SchedulesConfig(AppConfig):
    """Schedules and sensors: tick history, cursors, tasks, and the sync into Celery beat."""

    name = "schedules"
    verbose_name = "FlowStone schedules"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Sync definitions into beat's periodic tasks after migrate and when beat starts."""
        from celery.signals import beat_init  # noqa: PLC0415  # apps are loading

        from schedules import receivers  # noqa: PLC0415  # apps are loading

        post_migrate.connect(
            receivers.sync_after_migrate, sender=self, dispatch_uid="schedules.sync_after_migrate"
        )
        beat_init.connect(receivers.sync_on_beat_start, dispatch_uid="schedules.sync_on_beat_start")
