"""Sending released steps to the workers: the outbox, its relay, and the lost-message backstop.

A queued step with no ``dispatched_at`` is unsent: the engine made it so in the transaction that
released it, so a crash between that commit and the publish loses nothing. After commit the
engine publishes at once (the fast path). ``relay_outbox`` (Celery beat, every second by
default) publishes whatever stayed unsent for ``RELAY_AFTER_SECONDS`` (a crash, a broker that
was down, a retry whose delay was too long for a broker countdown), and releases steps of
concurrency-limited assets whose slots were freed by a process that died before it could.
Each tick first checks the broker's epoch (``broker_epoch``): when Redis lost its messages (a
restart without persistence, a flush, a failover), the sent steps still queued become unsent
and go out in that tick, instead of waiting for the backstop (``republish_quiet``).

Messages are published by task name (``flowstone.run_step``) on the project's Celery app, so
nothing here imports the task modules (which import the engine). When many steps of one run and
asset are ready at once (a backfill), they share messages (``flowstone.run_steps``, a batch): a
few steps per message would cost latency, one message per step costs the backfill minutes
(ADR 0032).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Self, TypeAlias

from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from kombu.exceptions import OperationalError

from assets.models import Materialization, Run
from assets.services.broker_epoch import check_broker_epoch
from assets.services.engine import active_by_asset, ready_for_a_worker, release_for_asset
from flowstone.conf import flowstone_settings
from flowstone.registry import get_registry
from flowstone.status import StepStatus

if TYPE_CHECKING:
    import uuid
    from collections.abc import Iterator, Sequence


logger = logging.getLogger(__name__)

RUN_STEP_TASK: Final = "flowstone.run_step"
RUN_STEPS_TASK: Final = "flowstone.run_steps"
DEFAULT_QUEUE: Final = "flowstone"
PUBLISH_CHUNK: Final = 1000
MAX_BATCH_STEPS: Final = PUBLISH_CHUNK
"""The most steps one batch message names: a batch never spans two publish chunks."""
BATCHES_PER_CONSUMER: Final = 8
"""Ready steps are cut into about this many batches per expected consumer process."""
RELAY_BATCH: Final = 5000
BROKER_ERRORS: Final = (OperationalError, OSError)


def step_payload(run_id: str, asset: str, partition_key: str) -> dict[str, str]:
    """The whole task payload: stable identifiers only; the worker loads the rest."""
    return {"run_id": run_id, "asset": asset, "partition": partition_key}


def batch_payload(run_id: str, asset: str, partition_keys: Sequence[str]) -> dict[str, Any]:
    """A batch's whole payload: one run, one asset, the partitions of its steps, in order."""
    return {"run_id": run_id, "asset": asset, "partitions": list(partition_keys)}


def batch_size(ready: int) -> int:
    """How many steps share a message when ``ready`` steps are published together.

    One while few are ready (each step starts as soon as a process is free); for a backfill,
    enough that every expected consumer still gets several batches, at most ``STEP_BATCH_MAX``.
    """
    consumers = max(1, int(flowstone_settings.STEP_BATCH_CONSUMERS))
    most = max(1, min(int(flowstone_settings.STEP_BATCH_MAX), MAX_BATCH_STEPS))
    return max(1, min(most, ready // (BATCHES_PER_CONSUMER * consumers)))


@dataclass(frozen=True, slots=True)
class Message:
    """One message to send: a single step or a batch, and the step ids it carries."""

    task: str
    kwargs: dict[str, Any]
    step_ids: list[int]
    asset: str
    options: dict[str, Any]


ClaimedRow: TypeAlias = tuple[int, Any, str, str, "dt.datetime | None"]
"""A claimed unsent step: id, run id, asset, partition key, ``not_before``."""


def messages_for(claimed: Sequence[ClaimedRow], size: int) -> list[Message]:
    """The messages for claimed rows: steps with an ETA alone, the rest in batches of ``size``.

    A batch holds steps of one run and one asset (so one queue), in the order they were claimed.
    """
    messages: list[Message] = []
    groups: dict[tuple[str, str], list[ClaimedRow]] = defaultdict(list)
    for row in claimed:
        pk, run_id, asset, partition_key, not_before = row
        if not_before is None and size > 1:
            groups[str(run_id), asset].append(row)
            continue
        timing = {} if not_before is None else {"eta": not_before}
        payload = step_payload(str(run_id), asset, partition_key)
        messages.append(Message(RUN_STEP_TASK, payload, [pk], asset, timing))
    for (run_id, asset), rows in groups.items():
        messages.extend(
            _batch_message(run_id, asset, rows[start : start + size])
            for start in range(0, len(rows), size)
        )
    return messages


def _batch_message(run_id: str, asset: str, rows: Sequence[ClaimedRow]) -> Message:
    """A batch of ``rows`` (a single-step message when it holds one)."""
    ids = [row[0] for row in rows]
    if len(rows) == 1:
        return Message(RUN_STEP_TASK, step_payload(run_id, asset, rows[0][3]), ids, asset, {})
    payload = batch_payload(run_id, asset, [row[3] for row in rows])
    return Message(RUN_STEPS_TASK, payload, ids, asset, batch_time_limits())


def batch_time_limits() -> dict[str, float]:
    """A batch's time limits: the task's, plus the time during which it may start steps.

    A worker starts no step of a batch after ``STEP_BATCH_SECONDS``, so every step still gets at
    least the whole limit a step has in its own message (and at most that plus those seconds).
    """
    from flowstone.celery import app  # noqa: PLC0415

    extra = float(flowstone_settings.STEP_BATCH_SECONDS)
    limits = {
        "time_limit": app.conf.task_time_limit,
        "soft_time_limit": app.conf.task_soft_time_limit,
    }
    return {name: float(limit) + extra for name, limit in limits.items() if limit is not None}


def queue_for(asset: str) -> str:
    """The broker queue an asset's steps go to (its ``queue`` option, else the default)."""
    definition = get_registry().assets.get(asset)
    return (definition.spec.queue if definition else None) or DEFAULT_QUEUE


def publish_steps(
    step_ids: Sequence[int], *, now: dt.datetime | None = None, skip_locked: bool = False
) -> int:
    """Publish the steps of ``step_ids`` that are queued and unsent; return how many.

    Steps of one run and asset share messages when many are published at once (``batch_size``
    of the whole call); a step due later always has a message of its own, with its ETA.

    Works a chunk at a time on one producer. Each chunk's claim (stamping ``dispatched_at`` on
    its unsent rows) and the sending of its messages share one transaction: the claim commits
    only once its messages are out, so two publishers never send one step, and a publisher that
    dies between its claim and its sends (kill -9, a lost connection) leaves its steps unsent
    for the relay, seconds later, instead of claimed with no message (ADR 0035). A step whose
    ``not_before`` is too far ahead for a broker countdown is not claimed; the relay sends it
    later. When the broker cannot be reached, the claimed steps that were not sent go back to
    unsent and the relay sends them once it is back: this never raises a broker error. Meant to
    run outside a transaction (after a commit, in a beat task): inside one, the claimed rows
    stay locked until the outer commit.

    ``skip_locked`` (the relay and the backstop): rows another transaction holds are skipped,
    not waited for, and stay for a later tick; a live publisher's rows are never sent twice and
    never hold the relay up. The fast path waits, as a claim always did: a row it just released
    may still be held for a moment (the worker ending the attempt before, a renewal), and
    skipping it would leave it to the relay, seconds later, or to nobody where beat is not run.
    """
    if not step_ids:
        return 0
    now = now or timezone.now()
    latest_eta = now + dt.timedelta(seconds=flowstone_settings.MAX_COUNTDOWN_SECONDS)
    sender = _Sender(len(step_ids))
    with sender:
        for start in range(0, len(step_ids), PUBLISH_CHUNK):
            with transaction.atomic():
                chunk = step_ids[start : start + PUBLISH_CHUNK]
                claimed = _claim_unsent(chunk, latest_eta, skip_locked=skip_locked)
                if not sender.send(claimed):
                    break
    return sender.count


def publish_born(run_id: uuid.UUID, at: dt.datetime, count: int) -> int:
    """Publish the ``count`` steps a new run inserted released and claimed at ``at`` (ADR 0033).

    Reads them back in id order through one server-side cursor, a chunk at a time, and sends
    them as ``publish_steps`` would have (batches sized by ``count``), without the claim: the
    creating transaction claimed them. A step canceled before the read starts is not sent (one
    canceled later is, and its claim fails on the worker). When the broker cannot be reached, the
    steps not sent go back to unsent for the relay; any other failure puts them all back.

    The run's ``born_unsent_at`` says they are not all sent yet; this clears it at the end, and
    holds the run's publisher lock meanwhile. A publisher that dies before the end leaves the
    mark with no lock held, and the relay sends the steps again (``_relay_orphaned_births``,
    ADR 0035). A publisher that comes late, after the relay took the steps back (a creating
    transaction longer than ``RELAY_AFTER_SECONDS`` makes the mark look old at its commit), finds
    its mark gone and sends them as any publisher sends unsent steps.
    """
    born = Materialization.objects.filter(run_id=run_id, status=StepStatus.QUEUED, dispatched_at=at)
    rows = born.order_by("pk").values_list("pk", "run_id", "asset", "partition_key", "not_before")
    sender = _Sender(count)
    try:
        with _publisher_lock(run_id):
            if not Run.objects.filter(pk=run_id, born_unsent_at=at).exists():
                unsent = Materialization.objects.filter(
                    run_id=run_id, status=StepStatus.QUEUED, dispatched_at__isnull=True
                )
                return publish_steps(list(unsent.order_by("pk").values_list("pk", flat=True)))
            with sender:
                stream = rows.iterator(chunk_size=PUBLISH_CHUNK)
                for claimed in iter(lambda: list(itertools.islice(stream, PUBLISH_CHUNK)), []):
                    if not sender.send(claimed):
                        born.filter(pk__gt=claimed[-1][0]).update(dispatched_at=None)
                        break
            _births_sent(run_id, at)
    except Exception:
        # After the commit the run is accepted: whatever failed here (the database, reading
        # back), its steps go back to the outbox for the relay instead of failing the caller.
        logger.exception("could not publish the new run %s's steps; the relay sends them", run_id)
        with contextlib.suppress(DatabaseError), transaction.atomic():
            born.update(dispatched_at=None)
            _births_sent(run_id, at)
        return 0
    return sender.count


def _births_sent(run_id: uuid.UUID, at: dt.datetime) -> bool:
    """Clear the run's mark of born steps not all sent; whether it was still set.

    Called once they are sent, or unsent again.
    """
    return bool(Run.objects.filter(pk=run_id, born_unsent_at=at).update(born_unsent_at=None))


def _publisher_key(run_id: uuid.UUID) -> str:
    return f"flowstone:born:{run_id}"


@contextlib.contextmanager
def _publisher_lock(run_id: uuid.UUID) -> Iterator[None]:
    """Hold the run's publisher lock: a PostgreSQL session advisory lock.

    The database lets it go when the session ends, so a publisher killed while it holds it
    leaves it free for the relay. Taken only outside a transaction (``publish_born`` runs after
    the creating commit): an unlock in a transaction that failed could not run, and the session
    would keep the lock, so inside one nothing is taken (the relay may then send some steps a
    second time, which does nothing).
    """
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(hashtext(%s))", [_publisher_key(run_id)])
    try:
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", [_publisher_key(run_id)])
        except DatabaseError:
            # A lost connection took the lock with it; a live one keeps it until it closes.
            logger.warning("could not release the publisher lock of run %s", run_id)


def _relay_orphaned_births(now: dt.datetime) -> int:
    """Put back to unsent the born steps whose publisher died; return how many.

    A run still marked ``born_unsent_at`` after ``RELAY_AFTER_SECONDS`` whose publisher lock is
    free lost its publisher before it sent them all: its steps still queued and claimed at their
    birth go back to unsent, and the relay sends them (some may have been sent already; a
    second message for a step does nothing). Steps are born claimed only on PostgreSQL (its
    ``COPY`` path, ADR 0033), so elsewhere there is nothing to look for.
    """
    if connection.vendor != "postgresql":
        return 0
    since = now - dt.timedelta(seconds=flowstone_settings.RELAY_AFTER_SECONDS)
    marks = Run.objects.filter(born_unsent_at__lt=since).values_list("pk", "born_unsent_at")
    return sum(take_back_births(run_id, at) for run_id, at in marks[:RELAY_BATCH] if at)


def take_back_births(run_id: uuid.UUID, at: dt.datetime) -> int:
    """Put a run's born steps back to unsent if their publisher is gone; return how many.

    PostgreSQL only, as births are.

    Under the publisher lock (not waited for: a live publisher keeps it), and only while the
    mark is still ``at``: a publisher that finished after the relay read the mark cleared it,
    and its steps are not taken back (they would all be sent a second time).
    """
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_try_advisory_xact_lock(hashtext(%s))", [_publisher_key(run_id)]
            )
            (free,) = cursor.fetchone() or (False,)
        if not free:
            return 0  # its publisher is at work
        if not _births_sent(run_id, at):
            return 0  # its publisher finished meanwhile
        unsent = Materialization.objects.filter(
            run_id=run_id, status=StepStatus.QUEUED, dispatched_at=at
        ).update(dispatched_at=None)
    if unsent:
        logger.warning(
            "run %s: %d new step(s) were claimed by a publisher that is gone; the relay sends them",
            run_id,
            unsent,
        )
    return unsent


class _Sender:
    """Sends the messages of claimed rows on one producer, counting the steps sent.

    Used as a context manager around the chunks (one producer for all of them). ``send`` sends
    one chunk's messages and returns whether all went out; on a broker error the chunk's rows
    not sent go back to unsent (in the caller's transaction, if any) and the sender sends
    nothing more; at the end it logs how many of the ``expected`` steps it did not send.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.size = batch_size(expected)
        self.count = 0
        self.error: BaseException | None = None
        self._stack = contextlib.ExitStack()
        self.producer: Any = None

    def __enter__(self) -> Self:
        from flowstone.celery import app  # noqa: PLC0415  # the Celery app loads on first publish

        try:
            self.producer = self._stack.enter_context(app.producer_or_acquire())
        except BROKER_ERRORS as exc:
            self.error = exc
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._stack.close()
        except BROKER_ERRORS as exc:
            logger.warning("could not release the broker producer (%s)", exc)
        if self.error is not None:
            logger.warning(
                "could not publish %d step(s) (%s: %s); they stay in the outbox and the relay "
                "sends them when the broker is back",
                self.expected - self.count,
                type(self.error).__name__,
                self.error,
            )

    def send(self, claimed: Sequence[ClaimedRow]) -> bool:
        """Send ``claimed``'s messages; whether all went out (else the rest are unsent)."""
        from flowstone.celery import app  # noqa: PLC0415

        sent: list[int] = []
        try:
            if self.error is not None:
                raise self.error
            for message in messages_for(claimed, self.size):
                app.send_task(
                    message.task,
                    kwargs=message.kwargs,
                    queue=queue_for(message.asset),
                    producer=self.producer,
                    **message.options,
                )
                sent.extend(message.step_ids)
        except BROKER_ERRORS as exc:
            done = set(sent)
            unsent = [row[0] for row in claimed if row[0] not in done]
            Materialization.objects.filter(pk__in=unsent).update(dispatched_at=None)
            self.count += len(sent)
            self.error = self.error or exc
            return False
        self.count += len(sent)
        return True


def _claim_unsent(
    step_ids: Sequence[int], latest_eta: dt.datetime, *, skip_locked: bool
) -> list[ClaimedRow]:
    """Stamp ``dispatched_at`` on the queued, unsent, sendable ones of ``step_ids``; return them.

    Called in the transaction that sends their messages (``publish_steps``). With
    ``skip_locked`` rows another transaction holds are skipped, else waited for (and checked
    again once free: a publisher that sent them meanwhile leaves them sent). One
    ``UPDATE … RETURNING`` on PostgreSQL (a publish is on the path from one step's end to the
    next one's start); two statements elsewhere.
    """
    now = timezone.now()
    if connection.vendor == "postgresql":
        lock = "FOR UPDATE SKIP LOCKED" if skip_locked else "FOR UPDATE"
        table = connection.ops.quote_name(Materialization._meta.db_table)  # noqa: SLF001
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET dispatched_at = %s WHERE id IN (SELECT id FROM {table} "  # noqa: S608  # table name from the model
                "WHERE id = ANY(%s) AND status = %s AND dispatched_at IS NULL "
                f"AND (not_before IS NULL OR not_before <= %s) {lock}) "
                "RETURNING id, run_id, asset, partition_key, not_before",
                [now, list(step_ids), StepStatus.QUEUED.value, latest_eta],
            )
            return [tuple(row) for row in cursor.fetchall()]
    rows = list(
        Materialization.objects.select_for_update()
        .filter(pk__in=list(step_ids), status=StepStatus.QUEUED, dispatched_at__isnull=True)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=latest_eta))
        .values_list("pk", "run_id", "asset", "partition_key", "not_before")
    )
    if rows:
        Materialization.objects.filter(pk__in=[row[0] for row in rows]).update(dispatched_at=now)
    return rows


def relay_outbox(*, now: dt.datetime | None = None) -> int:
    """Publish steps that stayed unsent, and release limited assets' freed slots; return sent.

    Steps unsent for less than ``RELAY_AFTER_SECONDS`` are left to the fast path that is
    publishing them. Messages already sent are never sent again here, however long they wait
    in a queue, unless the broker lost them all (a new broker epoch): then every queued step
    is sent at once.
    """
    now = now or timezone.now()
    lost = check_broker_epoch()
    _relay_orphaned_births(now)
    grace = dt.timedelta(seconds=0 if lost else flowstone_settings.RELAY_AFTER_SECONDS)
    latest_eta = now + dt.timedelta(seconds=flowstone_settings.MAX_COUNTDOWN_SECONDS)
    unsent = list(
        Materialization.objects.filter(
            status=StepStatus.QUEUED,
            dispatched_at__isnull=True,
            queued_at__lt=now - grace,
            run__is_in_process=False,
        )
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=latest_eta))
        .order_by("queued_at")
        .values_list("pk", flat=True)[:RELAY_BATCH]
    )
    if unsent:
        logger.warning("relaying %d unsent step(s)", len(unsent))
    sent = publish_steps(unsent, now=now, skip_locked=True)
    for asset in _limited_assets_with_waiting_steps():
        release_for_asset(asset)
    return sent


def _limited_assets_with_waiting_steps() -> list[str]:
    """Concurrency-limited assets with a free slot and ready steps in worker runs not canceled.

    Two queries whatever the number of runs; only an asset that can admit a step costs more.
    """
    limits = get_registry().concurrency_limits
    if not limits:
        return []
    waiting = set(
        ready_for_a_worker()
        .filter(asset__in=list(limits))
        .values_list("asset", flat=True)
        .distinct()
    )
    if not waiting:
        return []
    active = active_by_asset(waiting)
    return sorted(asset for asset in waiting if active.get(asset, 0) < limits[asset])


def reschedule_early(step_id: int, *, now: dt.datetime | None = None) -> bool:
    """A message came before the step's ``not_before``: publish it again for that time.

    Returns whether it was rescheduled (the step is queued and not yet due).
    """
    now = now or timezone.now()
    early = Materialization.objects.filter(
        pk=step_id, status=StepStatus.QUEUED, not_before__gt=now
    ).update(dispatched_at=None)
    if early:
        publish_steps([step_id])
    return early == 1


def hand_back(step_ids: Sequence[int]) -> int:
    """Send again the queued steps of a batch that its worker did not start; return how many.

    A worker stops starting a batch's steps when the batch's time to start them is over (or its
    time limit killed a step); the ones still queued go back to the outbox and out at once.
    """
    Materialization.objects.filter(
        pk__in=list(step_ids), status=StepStatus.QUEUED, dispatched_at__isnull=False
    ).update(dispatched_at=None)
    return publish_steps(step_ids)


def republish_quiet(*, now: dt.datetime | None = None) -> int:
    """The backstop for a message lost unnoticed: publish again a due step sent long ago.

    A broker that lost all its messages is noticed by the relay within a tick
    (``broker_epoch``); this catches the rest: a single lost message, a broker that is not
    Redis.

    A step whose message was sent more than ``REQUEUE_AFTER_SECONDS`` ago and is still queued
    is sent again, but only when its queue holds no waiting message: a message that merely waits
    behind others in a long queue is not duplicated. (A duplicate would do nothing anyway: a
    step is claimed once.)
    """
    now = now or timezone.now()
    quiet = dt.timedelta(seconds=flowstone_settings.REQUEUE_AFTER_SECONDS)
    rows = (
        Materialization.objects.filter(
            status=StepStatus.QUEUED, dispatched_at__lt=now - quiet, run__is_in_process=False
        )
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .values_list("pk", "asset")[:RELAY_BATCH]
    )
    by_queue: dict[str, list[int]] = defaultdict(list)
    for pk, asset in rows:
        by_queue[queue_for(asset)].append(pk)
    sent = 0
    for queue, ids in sorted(by_queue.items()):
        waiting = waiting_messages(queue)
        if waiting:
            logger.info("%d quiet step(s); queue %s holds %d messages", len(ids), queue, waiting)
            continue
        logger.warning("publishing %d step(s) again whose messages were not picked up", len(ids))
        Materialization.objects.filter(
            pk__in=ids, status=StepStatus.QUEUED, dispatched_at__lt=now - quiet
        ).update(dispatched_at=None)
        sent += publish_steps(ids, now=now, skip_locked=True)
    return sent


def waiting_messages(queue: str) -> int | None:
    """How many messages wait in a broker queue; ``None`` when the broker cannot tell."""
    from flowstone.celery import app  # noqa: PLC0415

    connection = app.connection_for_write()
    errors: tuple[type[BaseException], ...] = (
        *BROKER_ERRORS,
        *connection.channel_errors,
        *connection.connection_errors,
    )
    try:
        with connection:
            channel: Any = connection.default_channel
            declared = channel.queue_declare(queue=queue, passive=True)
    except errors as exc:
        logger.info("cannot count the messages in %s: %s", queue, exc)
        return None
    return int(declared.message_count)
