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
    """Every schedule tick and sensor run request: requested, skipped, failed or missed, and why.

    "Is catch up" marks a missed schedule tick that a later tick replayed (or recorded as missed);
    "Local tick time" is the tick time the schedule's functions received.
    """

    list_display = (
        "tick_time",
        "kind",
        "name",
        "status",
        "is_catch_up",
        "local_tick_time",
        "run_key",
        "run",
        "selection",
        "partition_keys",
        "reason",
    )
    list_filter = ("kind", "status", "is_catch_up", "name")
    search_fields = ("name", "run_key", "reason")
    date_hierarchy = "tick_time"
    list_select_related = ("run",)


@admin.register(SensorCursor)
class SensorCursorAdmin(ReadOnlyAdmin):
    """The cursor each sensor stored after its last poll."""

    list_display = ("name", "cursor", "updated_at")
    search_fields = ("name",)
