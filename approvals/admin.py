"""The approval console: pending approvals first, decided with a dedicated permission."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Case, IntegerField, QuerySet, Value, When
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince, timeuntil

from approvals import services
from approvals.forms import BulkRejectForm, DecisionForm
from approvals.models import Approval, Notification
from flowstone.errors import FlowStoneError, ValidationFailedError
from flowstone.execution.resume import continue_after_decision

if TYPE_CHECKING:
    from django.urls import URLPattern

DECIDE_PERMISSION = services.DECIDE_PERMISSION
MESSAGE_PREVIEW = 80
INBOX_PAGE_SIZE = 50


def decide_as(request: HttpRequest, approval_id: int, decision: str, **extra: Any) -> bool:
    """Decide one approval (or vote) as the logged-in user and dispatch any continuation.

    ``False``: the decision was a vote that left its quorum incomplete.
    """
    continuation = services.decide_approval(
        approval_id,
        decision,
        actor=request.user.get_username(),
        actor_type=Approval.ActorType.USER,
        **extra,
    )
    continue_after_decision(continuation)
    return continuation is not None


def decide_many_as(
    request: HttpRequest, approval_ids: list[int], decision: str, reason: str = ""
) -> list[services.BulkOutcome]:
    """Decide many approvals as the logged-in user and dispatch each continuation."""
    outcomes = services.decide_many(
        approval_ids,
        decision,
        actor=request.user.get_username(),
        actor_type=Approval.ActorType.USER,
        reason=reason,
    )
    for outcome in outcomes:
        if outcome.continuation is not None:
            continue_after_decision(outcome.continuation)
    return outcomes


def rereview_as(request: HttpRequest, approval_id: int) -> None:
    """Send a stale approval's step back to compute, as the logged-in user."""
    continuation = services.rereview_approval(
        approval_id, actor=request.user.get_username(), actor_type=Approval.ActorType.USER
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
    actions = ("approve_selected", "reject_selected", "rereview_selected")

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
        """Link to the decision form of a pending approval, or of a stale one to re-review."""
        if not obj.is_pending and not (obj.is_stale and obj.rereviewed_at is None):
            return ""
        url = reverse("admin:approvals_approval_decide", args=[obj.pk])
        label = "Review" if obj.is_pending else "Re-review"
        return format_html('<a class="button" href="{}">{}</a>', url, label)

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
        """Approve (or vote for) each selected approval on its own; report each refusal."""
        ids = list(queryset.values_list("pk", flat=True))
        self._report(request, "Approved", decide_many_as(request, ids, "approve"))

    @admin.action(description="Reject selected pending approvals", permissions=["decide"])
    def reject_selected(
        self, request: HttpRequest, queryset: QuerySet[Approval]
    ) -> TemplateResponse | None:
        """Ask for one reason, then reject each selected approval on its own."""
        form = BulkRejectForm(request.POST if "reject_reason" in request.POST else None)
        if form.is_bound and form.is_valid():
            ids = list(queryset.values_list("pk", flat=True))
            outcomes = decide_many_as(request, ids, "reject", form.cleaned_data["reason"])
            self._report(request, "Rejected", outcomes)
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Reject {queryset.count()} approval(s)",
            "form": form,
            "selected": queryset.values_list("pk", flat=True),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/approvals/approval/reject_selected.html", context)

    @admin.action(description="Re-review selected stale approvals", permissions=["decide"])
    def rereview_selected(self, request: HttpRequest, queryset: QuerySet[Approval]) -> None:
        """Send each selected stale approval's step to compute again; report each refusal."""
        sent = 0
        for approval_id in queryset.values_list("pk", flat=True):
            try:
                rereview_as(request, approval_id)
            except FlowStoneError as exc:
                self.message_user(request, f"Approval {approval_id}: {exc}", messages.ERROR)
            else:
                sent += 1
        if sent:
            self.message_user(request, f"Sent {sent} step(s) to compute again.", messages.SUCCESS)

    def _report(
        self, request: HttpRequest, verb: str, outcomes: list[services.BulkOutcome]
    ) -> None:
        """One message for the decided approvals, one per refusal."""
        for outcome in outcomes:
            if outcome.refused:
                self.message_user(
                    request, f"Approval {outcome.approval_id}: {outcome.message}", messages.ERROR
                )
        voted = sum(1 for o in outcomes if o.status == Approval.Status.PENDING)
        decided = sum(1 for o in outcomes if not o.refused) - voted
        if decided:
            self.message_user(request, f"{verb} {decided} approval(s).", messages.SUCCESS)
        if voted:
            self.message_user(
                request,
                f"Voted for {voted} approval(s) still short of their quorum.",
                messages.INFO,
            )

    def get_urls(self) -> list[URLPattern]:
        """Add the decision form and the reviewer's inbox."""
        decide = path(
            "<int:approval_id>/decide/",
            self.admin_site.admin_view(self.decide_view),
            name="approvals_approval_decide",
        )
        rereview = path(
            "<int:approval_id>/rereview/",
            self.admin_site.admin_view(self.rereview_view),
            name="approvals_approval_rereview",
        )
        inbox = path(
            "mine/",
            self.admin_site.admin_view(self.inbox_view),
            name="approvals_approval_inbox",
        )
        return [decide, rereview, inbox, *super().get_urls()]

    def rereview_view(self, request: HttpRequest, approval_id: int) -> HttpResponse:
        """POST: send a stale approval's step to compute again from the newest inputs."""
        if not self.has_decide_permission(request) or request.method != "POST":
            raise PermissionDenied
        try:
            rereview_as(request, approval_id)
        except FlowStoneError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(
                reverse("admin:approvals_approval_decide", args=[approval_id])
            )
        self.message_user(
            request,
            f"Approval {approval_id}: its step computes again; a fresh approval follows.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(self._after_decision(request))

    def _after_decision(self, request: HttpRequest) -> str:
        """Back to the approvals list, or to the inbox for a reviewer who may not view the list."""
        if self.has_view_permission(request):
            return reverse("admin:approvals_approval_changelist")
        return reverse("admin:approvals_approval_inbox")

    def inbox_view(self, request: HttpRequest) -> HttpResponse:
        """My pending decisions: what the logged-in user may decide, oldest first, paginated."""
        if not self.has_decide_permission(request):
            raise PermissionDenied
        pending = services.pending_for(request.user)
        page = Paginator(pending, INBOX_PAGE_SIZE).get_page(request.GET.get("page"))
        now = timezone.now()
        rows = [
            {
                "approval": approval,
                "waiting": timesince(approval.requested_at, now),
                "time_left": self.time_left(approval),
            }
            for approval in page.object_list
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "My pending decisions",
            "rows": rows,
            "page": page,
        }
        return TemplateResponse(request, "admin/approvals/approval/inbox.html", context)

    def decide_view(self, request: HttpRequest, approval_id: int) -> HttpResponse:
        """Show an approval with its value and take the reviewer's decision."""
        if not self.has_decide_permission(request):
            raise PermissionDenied
        approval = get_object_or_404(
            Approval.objects.select_related("run").prefetch_related("deciders", "votes"),
            pk=approval_id,
        )
        spec = services.checkpoint_of(approval)
        form = DecisionForm(
            request.POST or None,
            proposed=approval.proposed_value,
            form_schema=spec.form if spec is not None else None,
            options=spec.options if spec is not None else (),
        )
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            option = form.chosen_option()
            try:
                decide_as(
                    request,
                    approval.pk,
                    services.OPTION if option is not None else data["decision"],
                    reason=data.get("reason", ""),
                    value=data.get("parsed_value"),
                    option=option.name if option is not None else "",
                )
            except ValidationFailedError as exc:
                form.refuse(exc)
            except FlowStoneError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(
                    request, _recorded(approval.pk, data["decision"]), messages.SUCCESS
                )
                return HttpResponseRedirect(self._after_decision(request))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Review approval {approval.pk}",
            "approval": approval,
            "form": form,
            "proposed": json.dumps(approval.proposed_value, indent=2, ensure_ascii=False),
            "refusal": services.decision_refusal(approval, request.user.get_username()),
            "votes": approval.votes.all(),
        }
        return TemplateResponse(request, "admin/approvals/approval/decide.html", context)


def _recorded(approval_id: int, decision: str) -> str:
    """The message after a decision: a vote that left the quorum incomplete says how far it is.

    Only a vote leaves the approval pending (an approve, or a ``continue`` option).
    """
    approval = Approval.objects.prefetch_related("votes").get(pk=approval_id)
    if approval.is_pending:
        votes = len(approval.current_votes())
        return f"Approval {approval_id}: your vote is recorded ({votes} of {approval.quorum})."
    return f"Approval {approval_id}: {decision} recorded."


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
