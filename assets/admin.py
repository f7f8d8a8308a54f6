"""Admin for runs and materializations (read-only: they change only through services)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Final

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse_lazy
from django.utils.html import format_html, format_html_join

from assets import admin_pages, services
from assets.forms import LaunchRunForm
from assets.models import Materialization, Run, StepAttempt
from flowstone import api
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
    fieldsets = (
        (
            None,
            {
                "fields": (
                    ("kind", "status"),
                    "selection",
                    ("requested_by", "parent_run"),
                    ("created_at", "started_at", "finished_at"),
                )
            },
        ),
        (
            "Steps",
            {
                "fields": (
                    "steps_total",
                    ("steps_pending", "steps_active", "steps_waiting"),
                    ("steps_succeeded", "steps_failed", "steps_canceled", "steps_skipped"),
                ),
                "classes": ("collapse",),
            },
        ),
        (
            "Options",
            {
                "fields": (
                    "is_in_process",
                    "max_parallel",
                    "has_step_edges",
                    "cancel_requested_at",
                    "idempotency_key",
                ),
                "classes": ("collapse",),
            },
        ),
    )
    change_form_template = "admin/assets/run/change_form.html"
    change_list_template = "admin/assets/run/change_list.html"
    actions = ("cancel_runs", "reexecute_runs")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        """Cancelling needs the same permission as over the API (``assets.change_run``)."""
        return bool(request.user.has_perm("assets.change_run"))

    def has_launch_permission(self, request: HttpRequest) -> bool:
        """Starting runs needs the same permission as over the API (``assets.add_run``)."""
        return bool(request.user.has_perm("assets.add_run"))

    @admin.action(description="Re-execute selected runs from failure", permissions=["launch"])
    def reexecute_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        """Start, for each finished run, a run of its failed steps and what they held back."""
        actor = request.user.get_username()
        started: list[str] = []
        refused: list[str] = []
        for run_id in queryset.values_list("pk", flat=True):
            try:
                handle = api.reexecute_async(run_id, requested_by=actor, actor_type="user")
            except FlowStoneError as exc:
                refused.append(exc.message)
                continue
            started.append(handle.run_id)
        if started:
            self.message_user(
                request,
                f"Started {len(started)} re-execution run(s): {', '.join(started)}.",
                messages.SUCCESS,
            )
        for reason in refused:
            self.message_user(request, f"Not re-executed: {reason}", messages.WARNING)

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

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """Offer the launch form to those who may start runs."""
        context = {**(extra_context or {}), "can_launch": self.has_launch_permission(request)}
        return super().changelist_view(request, context)

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
        can_reexecute = (
            run is not None
            and run.finished_at is not None
            and bool(run.steps_failed or run.steps_canceled)
            and self.has_launch_permission(request)
        )
        context = {**(extra_context or {}), **pictures, "can_reexecute": can_reexecute}
        return super().change_view(request, object_id, form_url, context)

    def get_urls(self) -> list[URLPattern]:
        """Add the asset graph, the asset pages, a run's timeline fragment and the launch form."""
        view = self.admin_site.admin_view
        pages = [
            path("asset-graph/", view(self.graph_view), name="assets_asset_graph"),
            path("asset/<path:name>/", view(self.asset_view), name="assets_asset_detail"),
            path(
                "<uuid:run_id>/timeline/",
                view(self.timeline_view),
                name="assets_run_timeline",
            ),
            path("launch/", view(self.launch_view), name="assets_run_launch"),
            path(
                "<uuid:run_id>/reexecute/", view(self.reexecute_view), name="assets_run_reexecute"
            ),
        ]
        return [*pages, *super().get_urls()]

    def reexecute_view(self, request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
        """The run page's button: re-execute this run from failure, then show the new run."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not (self.has_launch_permission(request) and self.has_view_permission(request)):
            raise PermissionDenied
        actor = request.user.get_username()
        try:
            handle = api.reexecute_async(run_id, requested_by=actor, actor_type="user")
        except FlowStoneError as exc:
            self.message_user(request, f"Not re-executed: {exc.message}", messages.WARNING)
            return redirect("admin:assets_run_change", run_id)
        self.message_user(request, f"Started re-execution run {handle.run_id}.", messages.SUCCESS)
        return redirect("admin:assets_run_change", handle.run_id)

    def launch_view(self, request: HttpRequest) -> HttpResponse:
        """Launch a materialization or a backfill on the workers, then show the new run."""
        if not self.has_launch_permission(request):
            raise PermissionDenied
        form = LaunchRunForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                handle = form.launch(requested_by=request.user.get_username())
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                self.message_user(request, f"Started run {handle.run_id}.", messages.SUCCESS)
                return redirect("admin:assets_run_change", handle.run_id)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Launch a run",
            "form": form,
        }
        return TemplateResponse(request, "admin/assets/run/launch.html", context)

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


PRE_STYLE: Final = "white-space: pre-wrap; max-height: 30em; overflow: auto"


def error_summary(error: dict[str, Any] | None) -> str:
    """``Type [kind]: message`` of a stored error, and its cause; ``-`` without one."""
    if not error:
        return "-"
    text = f"{error.get('type', 'Error')} [{error.get('kind', '?')}]: {error.get('message', '')}"
    cause = error.get("cause")
    return f"{text} (caused by {cause})" if cause else text


def preformatted(text: str | None) -> str:
    """Text shown as it is, escaped, in a scrolling block."""
    if not text:
        return "-"
    return format_html('<pre style="{}">{}</pre>', PRE_STYLE, text)


def log_lines(records: list[dict[str, str]], dropped: int = 0) -> str:
    """An attempt's kept log as ``time LEVEL message`` lines."""
    if not records and not dropped:
        return "-"
    lines = format_html_join(
        "\n",
        "{} {} {}",
        ((r.get("at", ""), r.get("level", ""), r.get("message", "")) for r in records),
    )
    more = f"\n... {dropped} more record(s) not kept (STEP_LOG_MAX_CHARS)" if dropped else ""
    return format_html('<pre style="{}">{}{}</pre>', PRE_STYLE, lines, more)


class StepAttemptInline(admin.StackedInline):  # type: ignore[type-arg]
    """The attempts of a step that have something to tell: error, traceback, log."""

    model = StepAttempt
    extra = 0
    can_delete = False
    verbose_name_plural = "attempts with an error or a log"
    fields = (
        "attempt",
        "outcome",
        "worker",
        "started_at",
        "finished_at",
        "summary",
        "traceback",
        "kept_log",
    )
    readonly_fields = fields
    ordering = ("-attempt",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Attempts are written by the engine only."""
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Whoever may view a step sees its attempts (as in the API)."""
        return bool(request.user.has_perm("assets.view_materialization"))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Attempts are written by the engine only."""
        return False

    @admin.display(description="error")
    def summary(self, obj: StepAttempt) -> str:
        """The attempt's error in one line."""
        return error_summary(obj.error)

    @admin.display(description="traceback")
    def traceback(self, obj: StepAttempt) -> str:
        """The full traceback of the attempt's error."""
        return preformatted((obj.error or {}).get("traceback"))

    @admin.display(description="log")
    def kept_log(self, obj: StepAttempt) -> str:
        """What the asset logged through ``context.log`` in this attempt."""
        return log_lines(obj.log, obj.log_dropped)


@admin.register(Materialization)
class MaterializationAdmin(ReadOnlyAdmin):
    """Materializations (steps) with their status, timings and errors."""

    list_display = ("id", "asset", "partition_key", "status", "attempt", "run", "finished_at")
    list_filter = ("status", "asset")
    search_fields = ("asset", "partition_key", "=run__id")
    list_select_related = ("run",)
    date_hierarchy = "created_at"
    readonly_fields = ("staleness", "error_summary", "error_traceback")
    inlines = (StepAttemptInline,)
    fieldsets = (
        (None, {"fields": ("run", "asset", "partition_key", "status", "attempt", "staleness")}),
        ("Last error", {"fields": ("error_summary", "error_traceback")}),
        (
            "Times",
            {"fields": ("created_at", "queued_at", "dispatched_at", "started_at", "finished_at")},
        ),
        (
            "Lease and dispatch",
            {
                "fields": (
                    "lease_owner",
                    "lease_expires_at",
                    "not_before",
                    "recoveries",
                    "remaining_upstreams",
                    "code_version",
                ),
                "classes": ("collapse",),
            },
        ),
        ("Metadata", {"fields": ("metadata",)}),
    )

    @admin.display(description="last error")
    def error_summary(self, obj: Materialization) -> str:
        """The step's last error in one line."""
        return error_summary(obj.error)

    @admin.display(description="last traceback")
    def error_traceback(self, obj: Materialization) -> str:
        """The full traceback of the step's last error."""
        return preformatted((obj.error or {}).get("traceback"))

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
