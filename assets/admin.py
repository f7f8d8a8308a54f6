"""Admin for runs and materializations (read-only: they change only through services)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.urls import path, reverse_lazy

from assets import admin_pages, services
from assets.models import Materialization, Run
from flowstone.errors import FlowStoneError
from flowstone.status import StepStatus
from lineage import queries as lineage_queries

if TYPE_CHECKING:
    import uuid

    from django.db.models import QuerySet
    from django.http import HttpRequest, HttpResponse
    from django.urls import URLPattern

# The admin is the site: "View site" opens the asset graph, and the index links to it. The URL
# is lazy (the URLconf imports this module); templates render it as the string it becomes.
admin.site.site_url = reverse_lazy("admin:assets_asset_graph")  # type: ignore[assignment]
admin.site.index_template = "admin/assets/index.html"


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
    """Runs, newest first; a run's page: timeline and paged steps; the asset graph and pages."""

    list_display = (
        "id",
        "kind",
        "status",
        "progress",
        "requested_by",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "kind", "is_in_process")
    search_fields = ("=id", "requested_by", "idempotency_key")
    date_hierarchy = "created_at"
    change_form_template = "admin/assets/run/change_form.html"
    change_list_template = "admin/assets/run/change_list.html"
    actions = ("cancel_runs",)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        """Cancelling needs the same permission as over the API (``assets.change_run``)."""
        return bool(request.user.has_perm("assets.change_run"))

    @admin.action(description="Cancel selected runs", permissions=["cancel"])
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        """Cancel unfinished runs: their pending and queued steps end ``canceled``."""
        actor = request.user.get_username()
        runs = steps = 0
        for run_id in queryset.filter(finished_at__isnull=True).values_list("pk", flat=True):
            steps += services.cancel_run(run_id, actor=actor, actor_type="user")
            runs += 1
        skipped = queryset.count() - runs
        self.message_user(
            request,
            f"Cancelled {runs} run(s): {steps} step(s) will not run; running steps finish."
            + (f" {skipped} finished run(s) left as they were." if skipped else ""),
            messages.SUCCESS if runs else messages.WARNING,
        )

    @admin.display(description="steps ended")
    def progress(self, obj: Run) -> str:
        """How many steps have ended, of how many."""
        return f"{obj.steps_total - obj.steps_remaining}/{obj.steps_total}"

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """Add the run's timeline and one page of its steps, in DAG order, to its page."""
        run = self.get_object(request, object_id)
        pictures = admin_pages.run_page_context(request, run) if run else {}
        context = {**(extra_context or {}), **pictures}
        return super().change_view(request, object_id, form_url, context)

    def get_urls(self) -> list[URLPattern]:
        """Add the asset graph, the asset pages and a run's timeline fragment."""
        view = self.admin_site.admin_view
        pages = [
            path("asset-graph/", view(self.graph_view), name="assets_asset_graph"),
            path("asset/<path:name>/", view(self.asset_view), name="assets_asset_detail"),
            path(
                "<uuid:run_id>/timeline/",
                view(self.timeline_view),
                name="assets_run_timeline",
            ),
        ]
        return [*pages, *super().get_urls()]

    def graph_view(self, request: HttpRequest) -> HttpResponse:
        """The asset graph with each asset's status and staleness, drawn by Graphviz."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        return admin_pages.graph_page(request, self)

    def asset_view(self, request: HttpRequest, name: str) -> HttpResponse:
        """One asset: its partition grid and latest materializations."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        return admin_pages.asset_page(request, self, name)

    def timeline_view(self, request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
        """A run's timeline alone, fetched again by the run's page while the run is live."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        return admin_pages.timeline_fragment(request, run_id)


@admin.register(Materialization)
class MaterializationAdmin(ReadOnlyAdmin):
    """Materializations (steps) with their status, timings and errors."""

    list_display = ("id", "asset", "partition_key", "status", "attempt", "run", "finished_at")
    list_filter = ("status", "asset")
    search_fields = ("asset", "partition_key", "=run__id")
    list_select_related = ("run",)
    date_hierarchy = "created_at"
    readonly_fields = ("staleness",)

    @admin.display(description="staleness")
    def staleness(self, obj: Materialization) -> str:
        """Whether this success is stale, and why (one materialization: a few queries, no N+1).

        Staleness looks through every input, so it is shown on the change page only; a list
        column would cost one recursive query per row.
        """
        if obj.status != StepStatus.SUCCESS:
            return "-"
        try:
            return lineage_queries.staleness(obj.asset, materialization_id=obj.pk).summary()
        except FlowStoneError as exc:
            return str(exc)
