"""Runs, their durable configs, and materializations (one row per step)."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from flowstone.status import RunKind, RunStatus, StepStatus

ASSET_NAME_LENGTH = 128


class Run(models.Model):
    """One request to materialize a selection of assets and partitions."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=32, choices=[(k.value, k.name.lower()) for k in RunKind])
    selection = models.JSONField(default=list, help_text="Asset names the caller asked for.")
    status = models.CharField(
        max_length=32,
        choices=[(s.value, s.value) for s in RunStatus],
        default=RunStatus.PENDING.value,
        db_index=True,
    )
    requested_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return f"run {self.id} ({self.status})"


class RunConfig(models.Model):
    """The durable options of a run, keyed by run id; workers load everything from here."""

    run = models.OneToOneField(
        Run, primary_key=True, on_delete=models.CASCADE, related_name="config"
    )
    options = models.JSONField(default=dict, blank=True)
    io_overrides = models.JSONField(default=dict, blank=True)
    resource_overrides = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=dict, blank=True)
    requested_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"config of run {self.run_id}"


class Materialization(models.Model):
    """One step (asset x partition in a run) and its outcome."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="materializations")
    asset = models.CharField(max_length=ASSET_NAME_LENGTH)
    partition_key = models.TextField(blank=True, help_text="Encoded key; empty = unpartitioned.")
    status = models.CharField(
        max_length=32,
        choices=[(s.value, s.value) for s in StepStatus],
        default=StepStatus.PENDING.value,
    )
    attempt = models.PositiveIntegerField(default=0)
    code_version = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = (
            models.UniqueConstraint(
                fields=("asset", "partition_key", "run"), name="materialization_unique_step"
            ),
        )
        indexes = (
            models.Index(
                fields=("asset", "partition_key", "status", "-finished_at", "-id"),
                name="materialization_latest",
            ),
            models.Index(fields=("run", "status"), name="materialization_run_status"),
        )

    def __str__(self) -> str:
        return f"{self.asset}[{self.partition_key}] in run {self.run_id}: {self.status}"


class DynamicPartitionKey(models.Model):
    """A key added at run time to a ``DynamicPartitions`` definition."""

    partitions_name = models.CharField(max_length=ASSET_NAME_LENGTH)
    key = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = (
            models.UniqueConstraint(
                fields=("partitions_name", "key"), name="dynamic_partition_key_unique"
            ),
        )
        ordering = ("partitions_name", "created_at", "id")

    def __str__(self) -> str:
        return f"{self.partitions_name}: {self.key}"
