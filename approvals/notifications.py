"""Email notifications for approvals, sent through Django's mail framework when configured."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.core.mail import send_mail

from flowstone.conf import flowstone_settings

if TYPE_CHECKING:
    from approvals.models import Approval

logger = logging.getLogger(__name__)

SUBJECTS = {
    "requested": "Approval needed: {asset} [{partition}]",
    "escalated": "Approval escalated to {assignee}: {asset} [{partition}]",
    "decided": "Approval {status}: {asset} [{partition}]",
    "expired": "Approval expired: {asset} [{partition}]",
}


def _notify(event: str, approval: Approval) -> None:
    recipients = list(flowstone_settings.APPROVAL_EMAIL_RECIPIENTS)
    if not recipients:
        return
    subject = SUBJECTS[event].format(
        asset=approval.asset,
        partition=approval.partition_key or "-",
        assignee=approval.assignee,
        status=approval.status,
    )
    body = (
        f"{approval.message}\n\nRun: {approval.run_id}\nApproval: {approval.pk}\n"
        f"Status: {approval.status}\nRequested by: {approval.requested_by or '-'}\n"
        + (
            f"Decided by: {approval.decided_by} ({approval.reason})\n"
            if approval.decided_by
            else ""
        )
    )
    send_mail(subject, body, None, recipients, fail_silently=False)


def on_requested(*, approval: Approval, **kwargs: Any) -> None:  # noqa: ARG001
    """Email the reviewers that an approval waits for them."""
    _notify("requested", approval)


def on_escalated(*, approval: Approval, **kwargs: Any) -> None:  # noqa: ARG001
    """Email that an approval was escalated."""
    _notify("escalated", approval)


def on_decided(*, approval: Approval, **kwargs: Any) -> None:  # noqa: ARG001
    """Email that an approval was decided."""
    _notify("decided", approval)


def on_expired(*, approval: Approval, **kwargs: Any) -> None:  # noqa: ARG001
    """Email that an approval expired."""
    _notify("expired", approval)
