"""``manage.py sync_schedules``: write the schedules and sensors in code into Celery beat."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from schedules.services import sync_periodic_tasks


class Command(BaseCommand):
    """Create, update and delete beat's periodic tasks to match the definitions."""

    help = (
        "Sync @schedule and sensor definitions into django-celery-beat's periodic tasks "
        "(paused tasks stay paused)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        """Sync and report what changed."""
        report = sync_periodic_tasks()
        for label, names in (
            ("created", report.created),
            ("updated", report.updated),
            ("deleted", report.deleted),
        ):
            for name in names:
                self.stdout.write(f"{label} {name}")
        self.stdout.write(
            f"{len(report.created)} created, {len(report.updated)} updated, "
            f"{len(report.deleted)} deleted, {len(report.unchanged)} unchanged"
        )
