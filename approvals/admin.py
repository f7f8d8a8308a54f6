"""The approval console: pending approvals first, decided with a dedicated permission."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
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
from approvals.forms import DecisionForm
from approvals.models import Approval
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
        """Approve (or vote for) each selected approval; report each refusal."""
        approved = voted = 0
        for approval in queryset.filter(status=Approval.Status.PENDING):
            try:
                decided = decide_as(request, approval.pk, "approve")
            except FlowStoneError as exc:
                self.message_user(request, f"Approval {approval.pk}: {exc}", messages.ERROR)
            else:
                approved += decided
                voted += not decided
        if approved:
            self.message_user(request, f"Approved {approved} approval(s).", messages.SUCCESS)
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
        inbox = path(
            "mine/",
            self.admin_site.admin_view(self.inbox_view),
            name="approvals_approval_inbox",
        )
        return [decide, inbox, *super().get_urls()]

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
    """The message after a decision: a vote that left the quorum incomplete says how far it is."""
    approval = Approval.objects.prefetch_related("votes").get(pk=approval_id)
    if decision == "approve" and approval.is_pending:
        votes = len(approval.current_votes())
        return f"Approval {approval_id}: your vote is recorded ({votes} of {approval.quorum})."
    return f"Approval {approval_id}: {decision} recorded."
