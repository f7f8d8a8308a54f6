"""Read-only tick history and sensor cursors in the admin.

Schedules and sensors themselves are django-celery-beat's periodic tasks (``flowstone.schedule.*``
and ``flowstone.sensor.*``): pause one there by unticking "enabled". Their definitions come from
code, so nothing here can add or edit them.
"""

from __future__ import annotations

from django.contrib import admin

from assets.admin import ReadOnlyAdmin
from schedules.models import SensorCursor, Tick


@admin.register(Tick)
class TickAdmin(ReadOnlyAdmin):
    """Every schedule tick and sensor run request: requested, skipped or failed, and why."""

    list_display = (
        "tick_time",
        "kind",
        "name",
        "status",
        "run_key",
        "run",
        "selection",
        "partition_keys",
        "reason",
    )
    list_filter = ("kind", "status", "name")
    search_fields = ("name", "run_key", "reason")
    date_hierarchy = "tick_time"
    list_select_related = ("run",)


@admin.register(SensorCursor)
class SensorCursorAdmin(ReadOnlyAdmin):
    """The cursor each sensor stored after its last poll."""

    list_display = ("name", "cursor", "updated_at")
    search_fields = ("name",)
