"""Admin for lineage edges and the audit log: both read-only, since only services write them.

The audit log is append-only: events are added by services and never added, changed or deleted
here. Both tables grow without bound, so the change lists skip the full result count.
"""

from __future__ import annotations

from django.contrib import admin

from assets.admin import ReadOnlyAdmin
from lineage.models import AuditEvent, LineageEdge


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Who did what, newest first; searchable and filterable, never editable."""

    list_display = (
        "created_at",
        "action",
        "actor_type",
        "actor",
        "run_id",
        "asset",
        "partition_key",
    )
    list_filter = ("action", "actor_type")
    search_fields = ("actor", "asset", "partition_key")
    date_hierarchy = "created_at"
    show_full_result_count = False


@admin.register(LineageEdge)
class LineageEdgeAdmin(ReadOnlyAdmin):
    """Which materialization was made from which, newest first."""

    list_display = (
        "id",
        "downstream_asset",
        "downstream_partition_key",
        "downstream",
        "upstream_asset",
        "upstream_partition_key",
        "upstream",
        "created_at",
    )
    list_select_related = ("downstream", "upstream")
    search_fields = ("downstream_asset", "upstream_asset", "downstream_partition_key")
    ordering = ("-id",)
    show_full_result_count = False
