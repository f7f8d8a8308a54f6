"""DRF endpoints for approvals: list (paginated by page number), detail and decide."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from approvals import services
from approvals.models import Approval, ApprovalVote
from flowstone.api_errors import error_response
from flowstone.execution.resume import continue_after_decision
from flowstone.filters import FilterSerializer, choice_filter

if TYPE_CHECKING:
    from django.db.models import QuerySet
    from rest_framework.request import Request
    from rest_framework.views import APIView


DECISIONS: Final = ("approve", "modify", "reject")


class VoteSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """One reviewer's approve under a quorum; ``counts`` is false once the approval escalated."""

    counts = serializers.SerializerMethodField(help_text="Whether it counts toward the quorum.")

    class Meta:
        model = ApprovalVote
        fields = ("voter", "voted_at", "reason", "escalation", "counts")
        read_only_fields = fields

    def get_counts(self, vote: ApprovalVote) -> bool:
        """Votes cast before the approval's last escalation no longer count."""
        return vote.escalation == vote.approval.escalations


class ApprovalSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """An approval as the API shows it; ``run_id`` is the ``id`` of the run it holds."""

    run_id = serializers.UUIDField(read_only=True, help_text="The id of the approval's run.")
    deciders = serializers.ListField(
        source="decider_names",
        child=serializers.CharField(),
        read_only=True,
        help_text="Who may decide: users and group:NAME; empty: anyone with the permission.",
    )
    votes = VoteSerializer(many=True, read_only=True)

    class Meta:
        model = Approval
        fields = (
            "id",
            "asset",
            "partition_key",
            "run_id",
            "status",
            "message",
            "proposed_value",
            "decided_value",
            "requested_by",
            "assignee",
            "deciders",
            "quorum",
            "votes",
            "requested_at",
            "expires_at",
            "decided_at",
            "decided_by",
            "reason",
        )
        read_only_fields = fields


class DecisionSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """A decision: ``approve``, ``modify`` (with ``value``) or ``reject`` (with ``reason``)."""

    decision = serializers.ChoiceField(choices=DECISIONS)
    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    value = serializers.JSONField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """A rejection needs a reason; a modification needs a value."""
        if attrs["decision"] == "reject" and not attrs.get("reason", "").strip():
            raise serializers.ValidationError({"reason": "A rejection needs a reason."})
        if attrs["decision"] == "modify" and "value" not in attrs:
            raise serializers.ValidationError({"value": "A modification needs a value."})
        return attrs


class CanDecideApprovals(permissions.BasePermission):
    """The dedicated ``approvals.decide_approval`` permission."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        """Whether the user holds the permission."""
        return bool(request.user and request.user.has_perm("approvals.decide_approval"))


class ViewApprovals(permissions.DjangoModelPermissions):
    """Reading approvals needs ``approvals.view_approval``."""

    def __init__(self) -> None:
        self.perms_map = {
            **permissions.DjangoModelPermissions.perms_map,
            "GET": ["%(app_label)s.view_%(model_name)s"],
            "HEAD": ["%(app_label)s.view_%(model_name)s"],
        }


class ApprovalFilters(FilterSerializer):
    """The filters of ``GET /api/approvals/``."""

    status = choice_filter(Approval.Status.choices, help_text="Only approvals in this status.")


class ApprovalViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):  # type: ignore[type-arg]
    """List approvals (``?status=pending``), show one, and decide it."""

    serializer_class = ApprovalSerializer
    permission_classes = (permissions.IsAuthenticated, ViewApprovals)

    def get_queryset(self) -> QuerySet[Approval]:
        """Approvals, oldest request first, with their deciders and votes (no query per row)."""
        return (
            Approval.objects.all()
            .prefetch_related("deciders", "votes")
            .order_by("requested_at", "id")
        )

    @extend_schema(parameters=[ApprovalFilters])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Approvals, oldest request first, filtered by ``status``."""
        approvals = ApprovalFilters.apply(self.get_queryset(), request.query_params)
        page = self.paginate_queryset(approvals)
        return self.get_paginated_response(ApprovalSerializer(page, many=True).data)

    @extend_schema(
        request=DecisionSerializer,
        responses={200: ApprovalSerializer, 409: error_response(status.HTTP_409_CONFLICT)},
    )
    @action(
        detail=True,
        methods=["post"],
        permission_classes=[permissions.IsAuthenticated, CanDecideApprovals],
    )
    def decide(self, request: Request, pk: str | None = None) -> Response:
        """Record a decision (under a quorum, an approve is a vote) and resume the run once decided.

        A refused decision raises a ``FlowStoneError`` that the API's exception handler
        (``flowstone.api_errors``) answers: 400 invalid (e.g. the checkpoint refused the value),
        403 the requester themself or not one of the deciders, 404 no such approval, 409 already
        decided or already voted by this user.
        """
        decision = DecisionSerializer(data=request.data)
        decision.is_valid(raise_exception=True)
        data = decision.validated_data
        continuation = services.decide_approval(
            pk,
            data["decision"],
            actor=request.user.get_username(),
            actor_type=Approval.ActorType.API,
            reason=data.get("reason", ""),
            value=data.get("value"),
        )
        continue_after_decision(continuation)
        approval = services.get_approval(pk)
        return Response(ApprovalSerializer(approval).data)
