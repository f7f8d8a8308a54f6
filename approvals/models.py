"""Approval requests: one per checkpoint attempt that asked, bound to the inputs it reviewed."""

from __future__ import annotations

from typing import Final

from django.db import models
from django.utils import timezone

from assets.models import ASSET_NAME_LENGTH, Materialization, Run
from flowstone.checkpoints import GROUP_PREFIX, NAME_LENGTH
from flowstone.notifications import (
    MAX_CHANNEL_NAME_LENGTH,
    MAX_NOTIFICATION_EVENT_LENGTH,
    MAX_NOTIFICATION_KEY_LENGTH,
)

AUTOMATED: Final = "automated"  # decided_by of a decision a decide function made


class Approval(models.Model):
    """A checkpoint's request for a human (or automated) decision on a step's value."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        MODIFIED = "modified"
        REJECTED = "rejected"
        EXPIRED = "expired"
        ESCALATED = "escalated"
        CANCELED = "canceled"
        SKIPPED = "skipped"
        STALE = "stale"

    class ActorType(models.TextChoices):
        SYSTEM = "system"
        USER = "user"
        API = "api"

    materialization = models.ForeignKey(
        Materialization, on_delete=models.CASCADE, related_name="approvals"
    )
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="approvals")
    asset = models.CharField(max_length=ASSET_NAME_LENGTH)
    partition_key = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    message = models.TextField(blank=True)
    proposed_value = models.JSONField(null=True, blank=True)
    decided_value = models.JSONField(null=True, blank=True)
    consumed = models.JSONField(
        default=list, blank=True, help_text="Ids of the upstream materializations the value read."
    )
    inputs_read_at = models.DateTimeField(
        null=True, blank=True, help_text="When the attempt that computed the value started."
    )
    requested_by = models.CharField(max_length=150, blank=True, help_text="The run's requester.")
    assignee = models.CharField(max_length=150, blank=True, help_text="Escalation target.")
    escalations = models.PositiveIntegerField(default=0)
    quorum = models.PositiveSmallIntegerField(
        default=1, help_text="How many deciders must approve (1 after an escalation)."
    )
    extensions = models.PositiveIntegerField(default=0)
    requested_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.CharField(max_length=150, blank=True)
    decided_by_type = models.CharField(max_length=16, choices=ActorType.choices, blank=True)
    reason = models.TextField(blank=True)
    option = models.CharField(
        max_length=40, blank=True, help_text="The checkpoint option the reviewer chose, if any."
    )
    stale_at = models.DateTimeField(
        null=True, blank=True, help_text="When an input it reviewed was materialized again."
    )
    rereviewed_at = models.DateTimeField(
        null=True, blank=True, help_text="When its step was sent to compute a fresh approval."
    )
    rereviewed_by = models.CharField(max_length=150, blank=True)

    class Meta:
        permissions = (("decide_approval", "Can approve, modify or reject approvals"),)
        indexes = (
            models.Index(fields=("status", "expires_at"), name="approval_status_expiry"),
            models.Index(fields=("status", "requested_at"), name="approval_queue"),
            models.Index(fields=("asset", "status", "partition_key"), name="approval_asset_queue"),
        )
        constraints = (
            # A step asks once per attempt; a re-review asks again only after this one went stale.
            models.UniqueConstraint(
                fields=("materialization",),
                condition=models.Q(status="pending"),
                name="approval_one_pending_per_step",
            ),
        )
        ordering = ("requested_at", "id")

    def __str__(self) -> str:
        return f"approval {self.pk} for {self.asset}[{self.partition_key}]: {self.status}"

    @property
    def is_pending(self) -> bool:
        """Whether the approval still waits for a decision."""
        return self.status == self.Status.PENDING

    @property
    def is_stale(self) -> bool:
        """Whether an input it reviewed was materialized again before anyone decided."""
        return self.status == self.Status.STALE

    @property
    def is_decided(self) -> bool:
        """Whether a decision (or a timeout, or a cancel) ended it; the step then resumes."""
        return self.status not in (self.Status.PENDING, self.Status.STALE)

    @property
    def is_automated(self) -> bool:
        """Whether a ``decide`` function decided it in the step itself (no one was asked)."""
        return self.decided_by == AUTOMATED and self.decided_by_type == self.ActorType.SYSTEM

    @property
    def final_value(self) -> object:
        """The value to store: the reviewer's edit if modified, else the proposed value."""
        return self.decided_value if self.status == self.Status.MODIFIED else self.proposed_value

    @property
    def decider_names(self) -> list[str]:
        """Who may decide (users and ``group:NAME``); empty when anyone with the permission may.

        Reads the prefetched ``deciders`` when there are any (the API and console lists prefetch).
        """
        return [decider.name for decider in self.deciders.all()]

    def current_votes(self) -> list[ApprovalVote]:
        """The approve votes that count toward the quorum now (cast since the last escalation)."""
        return [vote for vote in self.votes.all() if vote.escalation == self.escalations]


class ApprovalDecider(models.Model):
    """One name that may decide an approval: a user name, or ``group:`` and a group name.

    Recorded when the approval is requested (the checkpoint's ``assignees``) and replaced by the
    checkpoint's ``escalate_to`` when the approval escalates.
    """

    approval = models.ForeignKey(Approval, on_delete=models.CASCADE, related_name="deciders")
    name = models.CharField(max_length=len(GROUP_PREFIX) + NAME_LENGTH)

    class Meta:
        constraints = (
            models.UniqueConstraint(fields=("approval", "name"), name="approval_decider_once"),
        )
        indexes = (models.Index(fields=("name", "approval"), name="approval_decider_name"),)
        ordering = ("approval", "id")

    def __str__(self) -> str:
        return f"{self.name} may decide approval {self.approval_id}"


class ApprovalVote(models.Model):
    """One reviewer's approve under a quorum; the vote that completes the quorum decides.

    ``escalation`` is the approval's escalation count when the vote was cast: votes for the
    original assignees stop counting once the decision is handed over.
    """

    approval = models.ForeignKey(Approval, on_delete=models.CASCADE, related_name="votes")
    escalation = models.PositiveIntegerField(default=0)
    voter = models.CharField(max_length=NAME_LENGTH)
    voter_type = models.CharField(max_length=16, choices=Approval.ActorType.choices)
    reason = models.TextField(blank=True)
    voted_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = (
            models.UniqueConstraint(
                fields=("approval", "escalation", "voter"), name="approval_vote_once"
            ),
        )
        ordering = ("approval", "voted_at", "id")

    def __str__(self) -> str:
        return f"{self.voter} approves approval {self.approval_id}"


class ApprovalInput(models.Model):
    """One upstream value an approval's proposed value was computed from, at its version.

    Indexed by (asset, partition): a new success of that partition finds the pending approvals
    that read an older value with one index lookup, not a scan of every approval.
    """

    approval = models.ForeignKey(Approval, on_delete=models.CASCADE, related_name="inputs")
    materialization = models.ForeignKey(Materialization, on_delete=models.CASCADE, related_name="+")
    asset = models.CharField(max_length=ASSET_NAME_LENGTH)
    partition_key = models.TextField(blank=True)
    version = models.CharField(
        max_length=64, blank=True, help_text="The recorded version of the value it read."
    )

    class Meta:
        indexes = (
            models.Index(fields=("asset", "partition_key"), name="approval_input_partition"),
        )
        ordering = ("id",)

    def __str__(self) -> str:
        return f"{self.asset}[{self.partition_key}]@{self.version or self.materialization_id}"


class Notification(models.Model):
    """One notice for one channel: the outbox row its delivery works from.

    Written in the transaction that caused the notice (a decision, a request, a sensor's
    reaction), so a crash after commit loses nothing; delivered after commit and tried again by
    beat with a growing delay until it succeeds or runs out of attempts.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    key = models.CharField(
        max_length=MAX_NOTIFICATION_KEY_LENGTH,
        help_text="What the notice is about, e.g. approval:12:decided.",
    )
    channel = models.CharField(max_length=MAX_CHANNEL_NAME_LENGTH)
    event = models.CharField(max_length=MAX_NOTIFICATION_EVENT_LENGTH)
    notice = models.JSONField(help_text="The rendered notice (title, text, asset, link, ...).")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(
        default=timezone.now, help_text="When it may be tried next (a try in progress holds it)."
    )
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        constraints = (
            models.UniqueConstraint(fields=("key", "channel"), name="notification_once"),
        )
        indexes = (
            models.Index(
                fields=("next_attempt_at",),
                condition=models.Q(status="pending"),
                name="notification_due",
            ),
        )

    def __str__(self) -> str:
        return f"{self.key} via {self.channel}: {self.status}"
