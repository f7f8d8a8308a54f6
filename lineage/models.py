"""Lineage edges (which materialization consumed which) and the append-only audit log."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from assets.models import ASSET_NAME_LENGTH, Materialization


class LineageEdge(models.Model):
    """A downstream materialization consumed an upstream materialization."""

    downstream = models.ForeignKey(
        Materialization, on_delete=models.CASCADE, related_name="upstream_edges"
    )
    upstream = models.ForeignKey(
        Materialization, on_delete=models.CASCADE, related_name="downstream_edges"
    )
    # Copied from both ends so recursive queries walk one indexed table.
    downstream_asset = models.CharField(max_length=ASSET_NAME_LENGTH)
    downstream_partition_key = models.TextField(blank=True)
    upstream_asset = models.CharField(max_length=ASSET_NAME_LENGTH)
    upstream_partition_key = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = (
            models.UniqueConstraint(fields=("downstream", "upstream"), name="lineage_edge_unique"),
            models.CheckConstraint(
                condition=~models.Q(downstream=models.F("upstream")), name="lineage_edge_not_self"
            ),
        )
        # ``upstream`` and ``downstream`` are indexed as foreign keys; the unique constraint's
        # index leads with ``downstream``.
        indexes = (
            models.Index(
                fields=("downstream_asset", "downstream_partition_key"),
                name="lineage_edge_down_key",
            ),
            models.Index(
                fields=("upstream_asset", "upstream_partition_key"), name="lineage_edge_up_key"
            ),
        )

    def __str__(self) -> str:
        return (
            f"{self.upstream_asset}[{self.upstream_partition_key}] -> "
            f"{self.downstream_asset}[{self.downstream_partition_key}]"
        )


class AuditEvent(models.Model):
    """Something that happened and who did it; rows are only ever added."""

    class Action(models.TextChoices):
        ASSET_MATERIALIZED = "asset.materialized"
        RUN_REQUESTED = "run.requested"
        RUN_CANCELED = "run.canceled"
        CHECKPOINT_APPROVED = "checkpoint.approved"
        CHECKPOINT_MODIFIED = "checkpoint.modified"
        CHECKPOINT_REJECTED = "checkpoint.rejected"
        CHECKPOINT_ESCALATED = "checkpoint.escalated"
        CHECKPOINT_EXPIRED = "checkpoint.expired"
        CHECKPOINT_CANCELED = "checkpoint.canceled"
        CHECKPOINT_EXTENDED = "checkpoint.extended"
        CHECKPOINT_STALE = "checkpoint.stale"
        CHECKPOINT_REREVIEWED = "checkpoint.rereviewed"
        CHECKPOINT_SKIPPED = "checkpoint.skipped"

    class ActorType(models.TextChoices):
        SYSTEM = "system"
        USER = "user"
        API = "api"

    action = models.CharField(max_length=64, choices=Action.choices)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor = models.CharField(max_length=150, blank=True)
    run_id = models.UUIDField(null=True, blank=True, db_index=True)
    asset = models.CharField(max_length=ASSET_NAME_LENGTH, blank=True)
    partition_key = models.TextField(blank=True)
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return f"{self.action} by {self.actor_type}:{self.actor or '-'}"
