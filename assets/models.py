"""Runs, their durable configs, and materializations (one row per step)."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from flowstone.status import RunKind, RunStatus, StepCount, StepStatus

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
    is_in_process = models.BooleanField(
        default=False, help_text="Executed by the calling process, not by Celery workers."
    )
    max_parallel = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most steps of this run queued or running at once."
    )
    has_step_edges = models.BooleanField(
        default=False,
        help_text="Some steps of this run wait for other steps of it (it has StepEdge rows).",
    )
    # The run's counters: how many of its steps are in each ``StepCount``. Only the engine
    # (``assets.services.engine``) writes them, with the status derived from them, in one UPDATE.
    steps_total = models.PositiveIntegerField(default=0)
    steps_pending = models.PositiveIntegerField(default=0)
    steps_active = models.PositiveIntegerField(default=0, help_text="Queued or running steps.")
    steps_waiting = models.PositiveIntegerField(default=0, help_text="Steps waiting for approval.")
    steps_succeeded = models.PositiveIntegerField(default=0)
    steps_failed = models.PositiveIntegerField(
        default=0, help_text="Failed and upstream-failed steps."
    )
    steps_canceled = models.PositiveIntegerField(default=0)
    steps_skipped = models.PositiveIntegerField(
        default=0, help_text="Steps a reviewer's option skipped (not failures)."
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    idempotency_key = models.CharField(
        max_length=128,
        blank=True,
        help_text="A client's key: the same requester and key start one run, however often sent.",
    )
    parent_run = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="reexecutions",
        help_text="The run this one re-executes from failure.",
    )
    metrics_tallied = models.BooleanField(
        default=False,
        help_text="Its steps are counted in StepTotals (done once it finished, by /metrics).",
    )
    born_unsent_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text=(
            "Set while the steps this run was created with, claimed for sending, are being "
            "published; the relay sends them again if their publisher died (ADR 0035)."
        ),
    )

    class Meta:
        ordering = ("-created_at", "-id")
        constraints = (
            models.UniqueConstraint(
                fields=("requested_by", "idempotency_key"),
                condition=~models.Q(idempotency_key=""),
                name="run_idempotency_key_unique",
            ),
        )
        indexes = (
            models.Index(
                fields=("created_at",),
                condition=models.Q(metrics_tallied=False),
                name="run_untallied",
            ),
            models.Index(fields=("status", "finished_at", "id"), name="run_finished"),
            models.Index(
                fields=("born_unsent_at",),
                condition=models.Q(born_unsent_at__isnull=False),
                name="run_born_unsent",
            ),
        )

    def __str__(self) -> str:
        return f"run {self.id} ({self.status})"

    @property
    def steps_remaining(self) -> int:
        """Steps not yet in a terminal state."""
        return self.steps_pending + self.steps_active + self.steps_waiting

    def step_counts(self) -> dict[StepCount, int]:
        """The run's counters by ``StepCount``."""
        return {count: getattr(self, f"steps_{count.value}") for count in StepCount}


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
    reused_runs = models.JSONField(
        default=list,
        blank=True,
        help_text="A re-execution's parent run and its ancestors, nearest first: its steps read "
        "their successes before anything newer.",
    )
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
    remaining_upstreams = models.PositiveIntegerField(
        default=0, help_text="Upstream steps of the same run that have not succeeded yet."
    )
    recoveries = models.PositiveIntegerField(
        default=0, help_text="Times the step was taken back from a worker whose lease expired."
    )
    lease_owner = models.CharField(max_length=255, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True, help_text="Earliest next attempt.")
    created_at = models.DateTimeField(default=timezone.now)
    queued_at = models.DateTimeField(
        null=True, blank=True, help_text="When the step last became queued."
    )
    dispatched_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When its message was handed to the broker; a queued step without it is unsent.",
    )
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
            models.Index(fields=("status", "lease_expires_at"), name="materialization_lease"),
            models.Index(fields=("asset", "status"), name="materialization_asset_status"),
            models.Index(
                fields=("queued_at",),
                condition=models.Q(status="queued", dispatched_at__isnull=True),
                name="materialization_outbox",
            ),
        )

    def __str__(self) -> str:
        return f"{self.asset}[{self.partition_key}] in run {self.run_id}: {self.status}"


class StepAttempt(models.Model):
    """One attempt of a step that has something to tell: an error, a log, or a lost lease.

    Written by the engine in the transaction that ends the attempt (``outcome``). An attempt that
    succeeded without logging anything has no row: the step itself says all there is.
    """

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        RETRIED = "retried", "failed, retried"
        LOST = "lost", "lease lost"
        CANCELED = "canceled"
        PARKED = "parked", "waiting for approval"

    materialization = models.ForeignKey(
        Materialization, on_delete=models.CASCADE, related_name="attempt_history"
    )
    attempt = models.PositiveIntegerField()
    worker = models.CharField(max_length=255, blank=True, help_text="The lease owner.")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.JSONField(
        null=True, blank=True, help_text="Type, message, cause and traceback of a failure."
    )
    log = models.JSONField(
        default=list, blank=True, help_text="What the asset logged through context.log."
    )
    log_dropped = models.PositiveIntegerField(
        default=0, help_text="Log records left out once the attempt's log was full."
    )

    class Meta:
        ordering = ("materialization", "attempt")
        constraints = (
            models.UniqueConstraint(
                fields=("materialization", "attempt"), name="step_attempt_unique"
            ),
        )

    def __str__(self) -> str:
        return f"attempt {self.attempt} of step {self.materialization_id}: {self.outcome}"


class StepTotals(models.Model):
    """The steps of finished runs, summed by asset and status, for ``/metrics``.

    A finished run's steps never change, so they are added here once (``Run.metrics_tallied``)
    and a scrape reads these few rows plus the steps of the runs not tallied yet, instead of
    grouping the whole step table. ``figures`` holds the sums of ``assets.metrics``' grouped
    columns (counts, attempts, histogram buckets and seconds).
    """

    asset = models.CharField(max_length=ASSET_NAME_LENGTH)
    status = models.CharField(max_length=32)
    figures = models.JSONField(default=dict)

    class Meta:
        constraints = (
            models.UniqueConstraint(fields=("asset", "status"), name="step_totals_unique"),
        )

    def __str__(self) -> str:
        return f"totals of {self.asset} {self.status}"


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


class StepEdge(models.Model):
    """Inside one run, ``downstream`` waits for ``upstream`` to succeed."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="step_edges")
    upstream = models.ForeignKey(
        Materialization, on_delete=models.CASCADE, related_name="downstream_step_edges"
    )
    downstream = models.ForeignKey(
        Materialization, on_delete=models.CASCADE, related_name="upstream_step_edges"
    )

    class Meta:
        constraints = (
            models.UniqueConstraint(fields=("upstream", "downstream"), name="step_edge_unique"),
        )
        indexes = (models.Index(fields=("downstream",), name="step_edge_downstream"),)

    def __str__(self) -> str:
        return f"step {self.upstream_id} -> step {self.downstream_id}"


class RejectedMessage(models.Model):
    """A task message a worker refused (bad payload, unknown asset or run, wrong content type)."""

    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    task_name = models.CharField(max_length=255, blank=True)
    task_id = models.CharField(max_length=255, blank=True)
    content_type = models.CharField(max_length=255, blank=True)
    reason = models.TextField()
    payload = models.TextField(blank=True, help_text="A truncated, printable copy of the body.")

    class Meta:
        ordering = ("-received_at", "-id")

    def __str__(self) -> str:
        return f"rejected {self.task_name or 'message'}: {self.reason[:80]}"


class BrokerEpoch(models.Model):
    """The marker last written into a broker's own database, and the server that held it.

    The relay compares them with the broker at every tick: a marker gone (the broker lost its
    data) or another server process (a restart or a failover, which may lose the last writes)
    means the messages of sent, still-queued steps may be gone, so they are sent again.
    """

    broker = models.CharField(
        max_length=255, unique=True, help_text="The broker's URL, its password masked."
    )
    token = models.CharField(max_length=64, help_text="The marker's value in the broker.")
    server_run_id = models.CharField(
        max_length=64, blank=True, help_text="The Redis server's run_id (empty: unknown)."
    )
    started_at = models.DateTimeField(default=timezone.now, help_text="When this epoch began.")
    losses = models.PositiveIntegerField(
        default=0, help_text="Times the broker was found to have lost or reset its data."
    )

    def __str__(self) -> str:
        return f"broker {self.broker}: epoch since {self.started_at:%Y-%m-%d %H:%M:%S}"


class WorkerHeartbeat(models.Model):
    """When a Celery worker last said it was alive; written by the worker, read by ``/health/``.

    Times are the database's clock, like leases, so web servers and workers with skewed clocks
    agree on how long ago a worker was seen.
    """

    hostname = models.CharField(max_length=255, unique=True)
    last_seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"worker {self.hostname}, seen {self.last_seen_at:%Y-%m-%d %H:%M:%S}"
