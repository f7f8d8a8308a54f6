"""The notification outbox: one row per notice and channel, delivered after commit, retried.

``record`` writes the rows in the caller's transaction (a decision, an approval request, a
sensor's reaction) and, after commit, hands them to a Celery task (a worker run) or delivers them
in this process (an in-process run, whose decider also runs its continuation). Nothing here ever
raises into the caller: a broker or channel that is down leaves the rows pending, and
``deliver_due`` (beat, ``flowstone.retry_notifications``) tries them again with a delay that
doubles, until ``NOTIFICATION_MAX_ATTEMPTS`` is used up and the row is ``failed``.

A try first claims its row (a conditional ``UPDATE`` that counts the attempt and holds the row
for ``CLAIM_SECONDS``, longer than any send may take), so the fast path and beat never send one
notice at the same time, and marks it delivered with another conditional ``UPDATE``: one
success, one ``delivered``. Each claim and each failure reads the clock when it happens, so a
row claimed late in a slow batch is held, and retried, from then.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from django.db import transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone
from kombu.exceptions import OperationalError

from approvals.models import Approval, Notification
from flowstone.conf import flowstone_settings
from flowstone.errors import FlowStoneError
from flowstone.notifications import (
    MAX_TIMEOUT_SECONDS,
    Notice,
    channel_names,
    get_channel,
    is_http_url,
    positive_int_setting,
    send_within,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

Clock = Callable[[], dt.datetime]

logger = logging.getLogger(__name__)

DELIVER_TASK: Final = "flowstone.deliver_notifications"
CLAIM_SECONDS: Final = 2 * MAX_TIMEOUT_SECONDS
"""A try holds its row this long: twice the longest send (``send_within``'s deadline)."""
MAX_RETRY_DELAY_SECONDS: Final = 3600
DUE_BATCH: Final = 100
MAX_ERROR_CHARS: Final = 2000
BROKER_ERRORS: Final = (OperationalError, OSError)

SUBJECTS: Final = {
    "requested": "Approval needed: {asset} [{partition}]",
    "escalated": "Approval escalated to {assignee}: {asset} [{partition}]",
    "decided": "Approval {status}: {asset} [{partition}]",
    "expired": "Approval expired: {asset} [{partition}]",
}


def approval_notice(event: str, approval: Approval) -> Notice:
    """The notice of an approval event: the subject and body the approval emails always had."""
    title = SUBJECTS[event].format(
        asset=approval.asset,
        partition=approval.partition_key or "-",
        assignee=approval.assignee,
        status=approval.status,
    )
    text = (
        f"{approval.message}\n\nRun: {approval.run_id}\nApproval: {approval.pk}\n"
        f"Status: {approval.status}\nRequested by: {approval.requested_by or '-'}\n"
        + (
            f"Decided by: {approval.decided_by} ({approval.reason})\n"
            if approval.decided_by
            else ""
        )
    )
    return Notice(
        event=f"approval_{event}",
        title=title,
        text=text,
        asset=approval.asset,
        partition=approval.partition_key,
        status=str(approval.status),
        run_id=str(approval.run_id),
        link=admin_link("admin:approvals_approval_decide", approval.pk),
        extra={"Message": approval.message},
    )


def admin_link(view: str, *args: object) -> str:
    """An absolute admin URL when ``NOTIFICATION_BASE_URL`` is an http(s) URL, else no link."""
    base = flowstone_settings.NOTIFICATION_BASE_URL
    if not is_http_url(base):
        return ""
    return f"{base.rstrip('/')}{reverse(view, args=args)}"


def notify_approval(event: str, approval: Approval) -> list[int]:
    """Record the notices of an approval event (inside the transaction that caused it)."""
    return record(
        f"approval:{approval.pk}:{event}",
        approval_notice(event, approval),
        in_process=approval.run.is_in_process,
    )


def record(key: str, notice: Notice, *, in_process: bool = False) -> list[int]:
    """Write one pending row per channel (once per ``key``); deliver them after commit.

    Returns the ids of the rows still pending for ``key``; none when no channel is configured.
    """
    channels = channel_names()
    if not channels:
        return []
    Notification.objects.bulk_create(
        [
            Notification(key=key, channel=channel, event=notice.event, notice=notice.as_json())
            for channel in channels
        ],
        ignore_conflicts=True,
    )
    ids = list(
        Notification.objects.filter(
            key=key, status=Notification.Status.PENDING, attempts=0
        ).values_list("pk", flat=True)
    )
    if ids:
        transaction.on_commit(lambda: dispatch(ids, in_process=in_process))
    return ids


def dispatch(ids: Sequence[int], *, in_process: bool) -> None:
    """After commit: deliver here (an in-process run) or send the delivery task; never raise."""
    if in_process:
        deliver(ids)
        return
    from flowstone.celery import app  # noqa: PLC0415  # the Celery app loads on first publish

    try:
        app.send_task(DELIVER_TASK, kwargs={"ids": list(ids)})
    except BROKER_ERRORS as exc:
        logger.warning(
            "could not send %d notification(s) to the workers (%s); beat tries them again",
            len(ids),
            exc,
        )


def deliver(ids: Sequence[int], *, now: dt.datetime | None = None) -> int:
    """Try each of these notifications that is pending and due; return how many got through.

    ``now`` (tests) sets the clock at the start; it advances with the real time from there.
    """
    clock = _clock(now)
    return sum(1 for pk in ids if _try(pk, clock))


def deliver_due(*, now: dt.datetime | None = None) -> int:
    """Beat's retry: try pending notifications whose next attempt is due (a bounded batch)."""
    clock = _clock(now)
    due = Notification.objects.filter(
        status=Notification.Status.PENDING, next_attempt_at__lte=clock()
    ).order_by("next_attempt_at")
    return sum(1 for pk in list(due.values_list("pk", flat=True)[:DUE_BATCH]) if _try(pk, clock))


def _clock(now: dt.datetime | None) -> Clock:
    """The time now at each call: the real clock, or ``now`` moved on by the time since."""
    if now is None:
        return timezone.now
    start = time.monotonic()
    return lambda: now + dt.timedelta(seconds=time.monotonic() - start)


def _try(pk: int, clock: Clock) -> bool:
    """Claim one notification, send it, record the outcome; whether it was delivered now."""
    max_attempts = positive_int_setting("NOTIFICATION_MAX_ATTEMPTS")
    claimed = _claim(pk, clock())
    if claimed is None:
        return False
    row, attempt = claimed
    mine = Notification.objects.filter(pk=pk, status=Notification.Status.PENDING, attempts=attempt)
    try:
        send_within(get_channel(row.channel), Notice.from_json(row.notice))
    except Exception as exc:  # noqa: BLE001  # a channel is user-configured code; never fatal
        detail = exc.message if isinstance(exc, FlowStoneError) else str(exc)
        error = f"{type(exc).__name__}: {detail}"[:MAX_ERROR_CHARS]
        if attempt >= max_attempts:
            mine.update(status=Notification.Status.FAILED, last_error=error)
            logger.warning("notification %s via %s given up: %s", row.key, row.channel, error)
        else:
            mine.update(next_attempt_at=clock() + retry_delay(attempt), last_error=error)
            logger.warning("notification %s via %s failed: %s", row.key, row.channel, error)
        return False
    return mine.update(status=Notification.Status.DELIVERED, delivered_at=timezone.now()) == 1


def _claim(pk: int, now: dt.datetime) -> tuple[Notification, int] | None:
    """Count an attempt and hold the row for ``CLAIM_SECONDS`` if it is pending and due."""
    with transaction.atomic():
        won = Notification.objects.filter(
            pk=pk, status=Notification.Status.PENDING, next_attempt_at__lte=now
        ).update(
            attempts=F("attempts") + 1,
            next_attempt_at=now + dt.timedelta(seconds=CLAIM_SECONDS),
        )
        if not won:
            return None
        row = Notification.objects.get(pk=pk)
    return row, row.attempts


def retry_delay(attempt: int) -> dt.timedelta:
    """The wait after failed attempt ``attempt`` (1, 2, ...): doubling, at most an hour."""
    base = positive_int_setting("NOTIFICATION_RETRY_SECONDS")
    return dt.timedelta(seconds=min(base * 2 ** (attempt - 1), MAX_RETRY_DELAY_SECONDS))
