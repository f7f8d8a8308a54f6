"""Approval requests: one per checkpoint materialization."""

from __future__ import annotations

from typing import Final

from django.db import models
from django.utils import timezone

from assets.models import ASSET_NAME_LENGTH, Materialization, Run

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

    class ActorType(models.TextChoices):
        SYSTEM = "system"
        USER = "user"
        API = "api"

    materialization = models.OneToOneField(
        Materialization, on_delete=models.CASCADE, related_name="approval"
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
    requested_by = models.CharField(max_length=150, blank=True, help_text="The run's requester.")
    assignee = models.CharField(max_length=150, blank=True, help_text="Escalation target.")
    escalations = models.PositiveIntegerField(default=0)
    extensions = models.PositiveIntegerField(default=0)
    requested_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.CharField(max_length=150, blank=True)
    decided_by_type = models.CharField(max_length=16, choices=ActorType.choices, blank=True)
    reason = models.TextField(blank=True)

    class Meta:
        permissions = (("decide_approval", "Can approve, modify or reject approvals"),)
        indexes = (
            models.Index(fields=("status", "expires_at"), name="approval_status_expiry"),
            models.Index(fields=("status", "requested_at"), name="approval_queue"),
        )
        ordering = ("requested_at", "id")

    def __str__(self) -> str:
        return f"approval {self.pk} for {self.asset}[{self.partition_key}]: {self.status}"

    @property
    def is_pending(self) -> bool:
        """Whether the approval still waits for a decision."""
        return self.status == self.Status.PENDING

    @property
    def is_automated(self) -> bool:
        """Whether a ``decide`` function decided it in the step itself (no one was asked)."""
        return self.decided_by == AUTOMATED and self.decided_by_type == self.ActorType.SYSTEM

    @property
    def final_value(self) -> object:
        """The value to store: the reviewer's edit if modified, else the proposed value."""
        return self.decided_value if self.status == self.Status.MODIFIED else self.proposed_value


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
        max_length=255, help_text="What the notice is about, e.g. approval:12:decided."
    )
    channel = models.CharField(max_length=128)
    event = models.CharField(max_length=32)
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
