"""DRF endpoints for approvals: list (paginated by page number), detail, decide and re-review.

An approval publishes its checkpoint's review ``form`` (the JSON Schema as declared) and its
``options``; ``decide`` checks a submitted value against the form and answers a mismatch with
per-field errors under ``value``, keyed by JSON pointer: ``{"value": {"/amount": ["..."]}}``.
``POST /api/approvals/decide/`` decides many approvals of one checkpoint at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from approvals import services
from approvals.models import Approval, ApprovalInput, ApprovalVote
from approvals.review_forms import FormValueError
from flowstone.api_errors import error_response
from flowstone.checkpoints import OUTCOMES
from flowstone.execution.resume import continue_after_decision
from flowstone.filters import FilterSerializer, choice_filter

if TYPE_CHECKING:
    from django.db.models import QuerySet
    from rest_framework.request import Request
    from rest_framework.views import APIView


DECISIONS: Final = ("approve", "modify", "reject", services.OPTION)
FORM_SCHEMA: Final = {
    "type": "object",
    "nullable": True,
    "additionalProperties": {},
    "description": "The checkpoint's review form: a JSON Schema (draft 2020-12) that a "
    "modified value must match; null when the checkpoint declares none.",
}


class OptionSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """A named choice of the checkpoint beyond approve/reject, and what choosing it does."""

    name = serializers.CharField(help_text="What ``decide`` takes as ``option``.")
    label = serializers.CharField(help_text="What the reviewer reads.")  # type: ignore[assignment]  # DRF's metaclass takes declared fields off the class
    outcome = serializers.ChoiceField(
        choices=OUTCOMES,
        help_text="continue: store the (submitted) value; skip: end the step and its "
        "downstream 'skipped'; fail: fail the step.",
    )


class ApprovalInputSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """One upstream value the proposed value was computed from, at its recorded version."""

    class Meta:
        model = ApprovalInput
        fields = ("asset", "partition_key", "materialization_id", "version")
        read_only_fields = fields


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
    form = serializers.SerializerMethodField()
    options = serializers.SerializerMethodField()
    inputs = ApprovalInputSerializer(many=True, read_only=True)
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
            "option",
            "form",
            "options",
            "inputs",
            "stale_at",
            "rereviewed_at",
            "rereviewed_by",
        )
        read_only_fields = fields

    @extend_schema_field(FORM_SCHEMA)
    def get_form(self, approval: Approval) -> dict[str, Any] | None:
        """The checkpoint's form as declared (its asset's current definition)."""
        form: dict[str, Any] | None = services.approval_choices(approval)["form"]
        return form

    @extend_schema_field(OptionSerializer(many=True))
    def get_options(self, approval: Approval) -> list[dict[str, str]]:
        """The checkpoint's options, in declaration order."""
        options: list[dict[str, str]] = services.approval_choices(approval)["options"]
        return options


class DecisionSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """A decision: ``approve``, ``modify``, ``reject`` or ``option``, with what each needs.

    ``modify`` takes ``value``, ``reject`` a ``reason``, ``option`` the name of one of the
    approval's ``options`` (a ``continue`` option may take a ``value``).
    """

    decision = serializers.ChoiceField(choices=DECISIONS)
    # The length is checked by ``services.checked_reason``: the same message in every console.
    reason = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    value = serializers.JSONField(required=False)
    option = serializers.CharField(
        required=False,
        max_length=40,
        trim_whitespace=False,  # a name matches exactly or not at all
        help_text="The chosen option's name (decision 'option').",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """A rejection needs a reason; a modification a value; an option decision its name."""
        if attrs["decision"] == "reject" and not attrs.get("reason", "").strip():
            raise serializers.ValidationError({"reason": "A rejection needs a reason."})
        if attrs["decision"] == "modify" and "value" not in attrs:
            raise serializers.ValidationError({"value": "A modification needs a value."})
        if attrs["decision"] == services.OPTION and not attrs.get("option"):
            raise serializers.ValidationError({"option": "Name the option to choose."})
        return attrs


class BulkDecisionSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """One decision for many approvals: ``ids``, or ``asset`` (+ ``partition_keys``)."""

    decision = serializers.ChoiceField(choices=services.BULK_DECISIONS)
    reason = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=services.MAX_APPROVAL_ID),
        required=False,
        allow_empty=False,
        max_length=services.MAX_BULK,
        help_text="The approvals to decide.",
    )
    asset = serializers.CharField(
        required=False, help_text="Instead of ids: every pending approval of this asset."
    )
    partition_keys = serializers.ListField(
        child=serializers.CharField(allow_blank=True),
        required=False,
        max_length=services.MAX_BULK,
        help_text="With asset: only these partitions.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Exactly one of ``ids`` and ``asset``; ``partition_keys`` only with ``asset``."""
        if ("ids" in attrs) == ("asset" in attrs):
            raise serializers.ValidationError("Give either ids or asset.")
        if "partition_keys" in attrs and "asset" not in attrs:
            raise serializers.ValidationError({"partition_keys": "Only with asset."})
        return attrs


class BulkOutcomeSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """What the decision did to one approval: its new ``status``, or why it was ``refused``."""

    id = serializers.IntegerField(source="approval_id")
    status = serializers.CharField(help_text="The approval's new status; empty if refused.")
    refused = serializers.CharField(
        help_text="Empty if decided, else why not: "
        + ", ".join(name for _, name in services.REFUSALS)
        + ".",
    )
    message = serializers.CharField()


class BulkResultSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """The outcome of a bulk decision, one entry per approval in the order given."""

    decision = serializers.CharField()
    decided = serializers.IntegerField(help_text="Approvals this request decided.")
    voted = serializers.IntegerField(
        help_text="Approvals this request voted on, their quorum not yet complete (still pending)."
    )
    refused = serializers.IntegerField(help_text="Approvals refused; see each result's refused.")
    results = BulkOutcomeSerializer(many=True)


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
        """Approvals, oldest first, with inputs, deciders and votes (no query per row)."""
        return Approval.objects.prefetch_related("inputs", "deciders", "votes").order_by(
            "requested_at", "id"
        )

    @extend_schema(parameters=[ApprovalFilters])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Approvals, oldest request first, filtered by ``status``."""
        approvals = ApprovalFilters.apply(self.get_queryset(), request.query_params)
        page = self.paginate_queryset(approvals)
        return self.get_paginated_response(ApprovalSerializer(page, many=True).data)

    @extend_schema(
        request=DecisionSerializer,
        responses={
            200: ApprovalSerializer,
            400: error_response(status.HTTP_400_BAD_REQUEST),
            409: error_response(status.HTTP_409_CONFLICT),
        },
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
        decided, already voted by this user, or stale (an input it reviewed was materialized
        again; re-review it or reject it). A value that does not match the review form is a 400
        with its errors by JSON pointer under ``value``.
        """
        decision = DecisionSerializer(data=request.data)
        decision.is_valid(raise_exception=True)
        data = decision.validated_data
        try:
            continuation = services.decide_approval(
                pk,
                data["decision"],
                actor=request.user.get_username(),
                actor_type=Approval.ActorType.API,
                reason=data.get("reason", ""),
                value=data.get("value"),
                option=data.get("option", ""),
            )
        except FormValueError as exc:
            raise serializers.ValidationError({"value": exc.errors}) from exc
        continue_after_decision(continuation)
        approval = services.get_approval(pk)
        return Response(ApprovalSerializer(approval).data)

    @extend_schema(
        request=None,
        responses={200: ApprovalSerializer, 409: error_response(status.HTTP_409_CONFLICT)},
    )
    @action(
        detail=True,
        methods=["post"],
        permission_classes=[permissions.IsAuthenticated, CanDecideApprovals],
    )
    def rereview(self, request: Request, pk: str | None = None) -> Response:
        """Send a stale approval's step to compute again from the newest inputs and ask anew.

        The stale approval is kept and returned; the fresh one appears when the step has
        computed. 409 if the approval is not stale or was already re-reviewed.
        """
        continuation = services.rereview_approval(
            pk, actor=request.user.get_username(), actor_type=Approval.ActorType.API
        )
        continue_after_decision(continuation)
        return Response(ApprovalSerializer(services.get_approval(pk)).data)

    @extend_schema(
        operation_id="approvals_decide_many",
        request=BulkDecisionSerializer,
        responses={200: BulkResultSerializer, 400: error_response(status.HTTP_400_BAD_REQUEST)},
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="decide",
        permission_classes=[permissions.IsAuthenticated, CanDecideApprovals],
    )
    def decide_many(self, request: Request) -> Response:
        """Approve or reject many approvals with one reason; one result per approval.

        Each approval is decided and audited on its own; refusals (``already_decided``,
        ``stale``, ``forbidden``, ``not_found``) are listed and the others are decided, or voted
        on under a quorum (counted in ``voted``, not ``decided``). Invalid
        input (a too-long reason, more than 1000 approvals) is a 400 and decides nothing.
        """
        bulk = BulkDecisionSerializer(data=request.data)
        bulk.is_valid(raise_exception=True)
        data = bulk.validated_data
        ids = data.get("ids") or services.pending_of(data["asset"], data.get("partition_keys"))
        outcomes = services.decide_many(
            ids,
            data["decision"],
            actor=request.user.get_username(),
            actor_type=Approval.ActorType.API,
            reason=data.get("reason", ""),
        )
        for outcome in outcomes:
            if outcome.continuation is not None:
                continue_after_decision(outcome.continuation)
        refused = sum(1 for outcome in outcomes if outcome.refused)
        voted = sum(1 for outcome in outcomes if outcome.is_vote)
        result = {
            "decision": data["decision"],
            "decided": len(outcomes) - refused - voted,
            "voted": voted,
            "refused": refused,
            "results": outcomes,
        }
        return Response(BulkResultSerializer(result).data)
