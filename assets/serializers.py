"""DRF serializers for assets, runs and materializations."""

from __future__ import annotations

from typing import Any, Final

from rest_framework import serializers

from assets.models import Materialization, Run, StepAttempt

RUN_KINDS: Final = ("materialize", "materialize_all", "backfill")
"""The kinds of run ``POST /api/runs/`` starts (a re-execution has its own endpoint)."""
MAX_PARTITIONS_PER_REQUEST: Final = 10_000


class AssetSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """An asset definition as the API shows it (read from the registry)."""

    name = serializers.CharField()
    description = serializers.CharField()
    deps = serializers.ListField(child=serializers.CharField())
    partitions = serializers.CharField(allow_null=True)
    io_manager = serializers.CharField()
    resources = serializers.ListField(child=serializers.CharField())
    tags = serializers.DictField()
    code_version = serializers.CharField(allow_null=True)
    queue = serializers.CharField(allow_null=True)
    concurrency_limit = serializers.IntegerField(allow_null=True)
    has_checkpoint = serializers.BooleanField()


class GraphSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """The asset graph: nodes (asset names, in topological order) and edges (upstream → asset)."""

    nodes = serializers.ListField(child=serializers.CharField())
    edges = serializers.ListField(child=serializers.DictField(child=serializers.CharField()))


class StartRunSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """A request to start a run on the workers."""

    kind = serializers.ChoiceField(choices=RUN_KINDS)
    asset = serializers.CharField(max_length=128)
    partition = serializers.CharField(
        required=False, allow_null=True, max_length=512, help_text="Partition as text."
    )
    partition_key = serializers.CharField(
        required=False, allow_null=True, max_length=512, help_text="Encoded partition key."
    )
    partitions = serializers.ListField(
        child=serializers.CharField(max_length=512),
        required=False,
        allow_null=True,
        max_length=MAX_PARTITIONS_PER_REQUEST,
        help_text="backfill: partitions as text (omit for all).",
    )
    max_parallel = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    force = serializers.BooleanField(required=False, default=False)
    config = serializers.DictField(required=False, default=dict)
    tags = serializers.DictField(required=False, default=dict)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """One way to name a partition; backfill options only for backfills."""
        if attrs.get("partition") is not None and attrs.get("partition_key") is not None:
            raise serializers.ValidationError(
                {"partition": "Give partition or partition_key, not both."}
            )
        if attrs["kind"] != "backfill":
            for name in ("partitions", "max_parallel"):
                if attrs.get(name) is not None:
                    raise serializers.ValidationError({name: "Only for backfill runs."})
        return attrs


class StepSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """A step (materialization) of a run; ``run_id`` is the ``id`` of its run."""

    run_id = serializers.UUIDField(read_only=True, help_text="The id of the step's run.")

    class Meta:
        model = Materialization
        fields: tuple[str, ...] = (
            "id",
            "run_id",
            "asset",
            "partition_key",
            "status",
            "attempt",
            "started_at",
            "finished_at",
            "error",
            "metadata",
        )
        read_only_fields: tuple[str, ...] = fields


class StepAttemptSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """An attempt of a step that has something to tell: its error (with the traceback) and log."""

    class Meta:
        model = StepAttempt
        fields = (
            "attempt",
            "outcome",
            "worker",
            "started_at",
            "finished_at",
            "error",
            "log",
            "log_dropped",
        )
        read_only_fields = fields


class StepDetailSerializer(StepSerializer):
    """One step with its kept attempts, newest first."""

    attempts = StepAttemptSerializer(many=True, read_only=True, source="attempt_history")

    class Meta(StepSerializer.Meta):
        fields = (*StepSerializer.Meta.fields, "attempts")
        read_only_fields = fields


class RunSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    """A run and its progress."""

    class Meta:
        model = Run
        fields = (
            "id",
            "kind",
            "selection",
            "status",
            "requested_by",
            "max_parallel",
            "steps_total",
            "steps_remaining",
            "steps_pending",
            "steps_active",
            "steps_waiting",
            "steps_succeeded",
            "steps_failed",
            "steps_canceled",
            "steps_skipped",
            "created_at",
            "started_at",
            "finished_at",
            "cancel_requested_at",
            "idempotency_key",
        )
        read_only_fields = fields
