"""Admin for runs and materializations (read-only: they change only through services)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin

from assets.models import Materialization, Run

if TYPE_CHECKING:
    from django.http import HttpRequest


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Rows are written by FlowStone's services, never edited by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Nobody adds rows here."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Nobody edits rows here."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Nobody deletes rows here."""
        return False


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    """Runs, newest first."""

    list_display = ("id", "kind", "status", "requested_by", "created_at", "finished_at")
    list_filter = ("status", "kind")
    date_hierarchy = "created_at"


@admin.register(Materialization)
class MaterializationAdmin(ReadOnlyAdmin):
    """Materializations (steps) with their status, timings and errors."""

    list_display = ("id", "asset", "partition_key", "status", "attempt", "run", "finished_at")
    list_filter = ("status", "asset")
    search_fields = ("asset", "partition_key")
    list_select_related = ("run",)
