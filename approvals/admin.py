"""The approval console: pending approvals first, decided with a dedicated permission."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Case, IntegerField, QuerySet, Value, When
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince, timeuntil

from approvals import services
from approvals.forms import DecisionForm
from approvals.models import Approval, Notification
from flowstone.errors import FlowStoneError, ValidationFailedError
from flowstone.execution.resume import continue_after_decision

if TYPE_CHECKING:
    from django.urls import URLPattern

DECIDE_PERMISSION = "approvals.decide_approval"
MESSAGE_PREVIEW = 80


def decide_as(request: HttpRequest, approval_id: int, decision: str, **extra: Any) -> None:
    """Decide one approval as the logged-in user and dispatch the continuation."""
    continuation = services.decide_approval(
        approval_id,
        decision,
        actor=request.user.get_username(),
        actor_type=Approval.ActorType.USER,
        **extra,
    )
    continue_after_decision(continuation)


@admin.register(Approval)
class ApprovalAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Pending approvals first, with their age, time left and message; decisions via a form."""

    list_display = (
        "id",
        "asset",
        "partition_key",
        "run_link",
        "status",
        "age",
        "time_left",
        "short_message",
        "assignee",
        "requested_by",
        "review_link",
    )
    list_filter = ("status", "asset")
    search_fields = ("asset", "partition_key", "message", "requested_by", "assignee")
    list_select_related = ("run",)
    actions = ("approve_selected",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Approval]:
        """Pending approvals first, oldest first within each group."""
        queryset: QuerySet[Approval] = (
            super()
            .get_queryset(request)
            .annotate(
                queue=Case(
                    When(status=Approval.Status.PENDING, then=Value(0)),
                    default=Value(1),
                    output_field=IntegerField(),
                )
            )
            .order_by("queue", "requested_at", "id")
        )
        return queryset

    @admin.display(description="run")
    def run_link(self, obj: Approval) -> str:
        """Link to the run."""
        url = reverse("admin:assets_run_change", args=[obj.run_id])
        return format_html('<a href="{}">{}</a>', url, str(obj.run_id)[:8])

    @admin.display(description="age")
    def age(self, obj: Approval) -> str:
        """How long the approval has been waiting (or waited)."""
        return timesince(obj.requested_at, obj.decided_at or timezone.now())

    @admin.display(description="time left")
    def time_left(self, obj: Approval) -> str:
        """Time until the on-timeout policy applies."""
        if not obj.is_pending or obj.expires_at is None:
            return "-"
        if obj.expires_at <= timezone.now():
            return "overdue"
        return timeuntil(obj.expires_at)

    @admin.display(description="message")
    def short_message(self, obj: Approval) -> str:
        """The reviewer message, shortened."""
        if len(obj.message) <= MESSAGE_PREVIEW:
            return obj.message
        return obj.message[: MESSAGE_PREVIEW - 3] + "..."

    @admin.display(description="")
    def review_link(self, obj: Approval) -> str:
        """Link to the decision form of a pending approval."""
        if not obj.is_pending:
            return ""
        url = reverse("admin:approvals_approval_decide", args=[obj.pk])
        return format_html('<a class="button" href="{}">Review</a>', url)

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Approvals are created by checkpoints only."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Approvals are part of the audit trail."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Nothing is edited in place; decisions go through the decision form."""
        return False

    def has_decide_permission(self, request: HttpRequest) -> bool:
        """The dedicated permission to approve, modify or reject."""
        return request.user.has_perm(DECIDE_PERMISSION)

    @admin.action(description="Approve selected pending approvals", permissions=["decide"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[Approval]) -> None:
        """Approve each selected approval; report each refusal."""
        approved = 0
        for approval in queryset.filter(status=Approval.Status.PENDING):
            try:
                decide_as(request, approval.pk, "approve")
            except FlowStoneError as exc:
                self.message_user(request, f"Approval {approval.pk}: {exc}", messages.ERROR)
            else:
                approved += 1
        if approved:
            self.message_user(request, f"Approved {approved} approval(s).", messages.SUCCESS)

    def get_urls(self) -> list[URLPattern]:
        """Add the decision form."""
        decide = path(
            "<int:approval_id>/decide/",
            self.admin_site.admin_view(self.decide_view),
            name="approvals_approval_decide",
        )
        return [decide, *super().get_urls()]

    def decide_view(self, request: HttpRequest, approval_id: int) -> HttpResponse:
        """Show an approval with its value and take the reviewer's decision."""
        if not self.has_decide_permission(request):
            raise PermissionDenied
        approval = get_object_or_404(Approval.objects.select_related("run"), pk=approval_id)
        form = DecisionForm(
            request.POST or None,
            initial={"value": json.dumps(approval.proposed_value, indent=2, ensure_ascii=False)},
        )
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                decide_as(
                    request,
                    approval.pk,
                    data["decision"],
                    reason=data.get("reason", ""),
                    value=data.get("parsed_value"),
                )
            except ValidationFailedError as exc:
                form.refuse(exc)
            except FlowStoneError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Approval {approval.pk}: {data['decision']} recorded.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:approvals_approval_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Review approval {approval.pk}",
            "approval": approval,
            "form": form,
            "proposed": json.dumps(approval.proposed_value, indent=2, ensure_ascii=False),
            "can_decide": services.can_decide(approval, request.user.get_username()),
        }
        return TemplateResponse(request, "admin/approvals/approval/decide.html", context)


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """The notification outbox, read-only: what was sent, what is retried, what was given up."""

    list_display = ("id", "key", "channel", "status", "attempts", "next_attempt_at", "created_at")
    list_filter = ("status", "channel", "event")
    search_fields = ("key",)
    readonly_fields = (
        "key",
        "channel",
        "event",
        "notice",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
        "created_at",
        "delivered_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Notifications are recorded by the services, never by hand."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """The outbox is written by its delivery only."""
        return False
