"""The run engine: the one owner of step transitions and of a run's counters and status.

Every transition of a step (release, succeed, fail, retry, park, resume, recover, cancel) is one
function here, and each does the same things in one transaction, in this order:

1. lock the run's row (``SELECT … FOR UPDATE``). Every transition of a run is serialized on it,
   and locks are always taken run → steps → approvals, so no two transitions deadlock;
2. the conditional step ``UPDATE`` (``WHERE status = <expected>``), which says whether it won;
3. release: pending steps whose upstreams all succeeded become ``queued`` (within the run's
   ``max_parallel`` and the assets' concurrency limits) with no ``dispatched_at``: those rows
   are the outbox;
4. settle the run: its counters and its status, ``flowstone.status.run_status`` of the
   counters, in one ``UPDATE`` (``finished_at`` too once no step is left to end).

Claim and lease renewal move no counter (a queued and a running step count the same), so they
touch only the step. After commit, the engine itself publishes what a worker run released (the
fast path; ``outbox.relay_outbox`` sends whatever stayed unsent) and lets limited assets whose
slots were freed release waiting steps of other runs. No caller has to remember to publish.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from django.db import connection, router, transaction
from django.db.models import Count, DurationField, Exists, ExpressionWrapper, F, Field, OuterRef, Q
from django.db.models.functions import Now
from django.dispatch import Signal
from django.utils import timezone

from assets.models import Materialization, Run, StepAttempt, StepEdge
from assets.services.locks import lock_assets
from flowstone.conf import flowstone_settings
from flowstone.errors import FlowStoneError, LeaseLostError
from flowstone.registry import get_registry
from flowstone.signals import send_after_commit
from flowstone.status import (
    COUNTER_OF,
    RUN_STATUS_RULES,
    TERMINAL_RUN_STATUSES,
    UNFINISHED_COUNTS,
    RunStatus,
    StepCount,
    StepStatus,
)
from lineage.models import AuditEvent
from lineage.services import record_audit, record_lineage

if TYPE_CHECKING:
    import uuid
    from collections.abc import Collection, Iterable

    from django.db.models import Model, QuerySet

    from flowstone.io.base import StoredOutput
    from flowstone.step_log import StepLog

logger = logging.getLogger(__name__)

ACTIVE_STATUSES: Final = (StepStatus.QUEUED, StepStatus.RUNNING)
RECOVERY_BATCH: Final = 1000
TALLY_SECONDS: Final = 1.0
"""How long a batch holds counted successes before it settles them on the run."""
UNFINISHED_STEP_STATUSES: Final = tuple(s for s, c in COUNTER_OF.items() if c in UNFINISHED_COUNTS)
UNFINISHED_RUN_STATUSES: Final = tuple(s for s in RunStatus if s not in TERMINAL_RUN_STATUSES)

# Sent inside the cancelling transaction with ``run_id``, ``step_ids`` (the steps that were
# waiting for approval), ``actor`` and ``actor_type``; ``approvals`` cancels their approvals in
# the same transaction. A signal keeps the engine from importing the app that imports it.
waiting_steps_canceled = Signal()

# Sent inside a step's success transaction with ``step`` (the new success): ``approvals`` marks
# the pending approvals that reviewed an older value of the same partition stale before the
# new value commits, so none of them can be approved afterwards.
success_recorded = Signal()


@dataclass(frozen=True, kw_only=True, slots=True)
class StepEnd:
    """Whether a transition won, the steps of the run it released, and assets it freed.

    The engine publishes ``ready`` for worker runs itself; an in-process runner executes them.
    Steps of ``freed_assets`` in other runs are released after commit, each run in a transaction
    of its own: taking another run's lock while holding this one's could deadlock.
    """

    won: bool
    ready: list[int] = field(default_factory=list)
    freed_assets: tuple[str, ...] = ()


LOST: Final = StepEnd(won=False)


def db_now() -> Any:
    """Now, on the clock every worker shares: the database's on PostgreSQL.

    Leases, retry times, queue times and finish times are compared across workers, so they are
    written and compared with the database's ``statement_timestamp()``; a worker whose own clock
    is off cannot shorten a lease or start a retry early. SQLite is the embedded, single-process
    default: its clock is this process's.
    """
    return Now() if connection.vendor == "postgresql" else timezone.now()


def db_time() -> dt.datetime:
    """The value of ``db_now`` now, read once (one statement on PostgreSQL)."""
    if connection.vendor != "postgresql":
        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        row = cursor.fetchone()
    database: dt.datetime = row[0]
    return database


def db_clock_offset() -> dt.timedelta:
    """How far the database's clock (``db_now``) is ahead of this process's; zero on SQLite.

    For a process that compares its own notion of now with times the database wrote, such as a
    sensor poll's cutoff against runs' ``finished_at``.
    """
    if connection.vendor != "postgresql":
        return dt.timedelta(0)
    return db_time() - timezone.now()


def seconds_until_due(step_id: int) -> float | None:
    """Seconds until a queued step's ``not_before`` on the shared clock (0 when due).

    ``None`` when the step is not queued (another process took it, or it ended).
    """
    queued = Materialization.objects.filter(pk=step_id, status=StepStatus.QUEUED)
    waits: list[dt.timedelta | None]
    if connection.vendor == "postgresql":
        waits = list(
            queued.annotate(
                wait=ExpressionWrapper(F("not_before") - Now(), output_field=DurationField())
            ).values_list("wait", flat=True)
        )
    else:
        now = timezone.now()
        waits = [
            None if due is None else due - now
            for due in queued.values_list("not_before", flat=True)
        ]
    for wait in waits:
        return 0.0 if wait is None else max(wait.total_seconds(), 0.0)
    return None


def lock_run(run_id: uuid.UUID | str) -> Run:
    """Lock the run's row until the transaction ends and return it as it is now."""
    return Run.objects.select_for_update().get(pk=run_id)


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)  # noqa: SLF001  # Django's documented model API


def _settle(run: Run, delta: Counter[StepCount], **extra: Any) -> None:
    """Apply counter changes to a locked run: its counters and derived status in one UPDATE.

    ``run`` is refreshed from the statement's ``RETURNING``. ``extra`` are other columns of the
    run to write in the same statement. Nothing is written when no counter changes.
    """
    if not any(delta.values()) and not extra:
        return
    settled = _settle_row(run.pk, delta, **extra)
    for column in Run._meta.concrete_fields:  # noqa: SLF001  # Django's documented model API
        setattr(run, column.attname, getattr(settled, column.attname))


def _settle_row(
    run_id: uuid.UUID | str, delta: Counter[StepCount], *, is_guess: bool = False, **extra: Any
) -> Run:
    """``UPDATE run SET <counters + delta>, status = <rule table>, finished_at … RETURNING *``.

    The status is ``flowstone.status.run_status`` of the new counters, rendered from the same
    rule table (``RUN_STATUS_RULES``) as a ``CASE``, so the statement also takes the run's row
    lock when it is the first one on the run in its transaction. Sends ``run_finished`` after
    commit when this statement finished the run.

    ``is_guess``: the caller counts before its step update, which may still lose (the step was
    ended by someone else); the counters are then kept from going below zero, and the caller
    rolls the whole transaction back.
    """
    columns: list[str] = []
    params: list[Any] = []
    for count in StepCount:
        column = _column(f"steps_{count.value}")
        if is_guess:
            greatest = "GREATEST" if connection.vendor == "postgresql" else "MAX"
            columns.append(f"{column} = {greatest}({column} + %s, 0)")
        else:
            columns.append(f"{column} = {column} + %s")
        params.append(delta[count])

    def new(count: StepCount) -> str:
        params.append(delta[count])
        return f"({_column(f'steps_{count.value}')} + %s)"

    cases = []
    for status, positive, zero in RUN_STATUS_RULES:
        tests = [f"{new(c)} > 0" for c in sorted(positive)]
        tests += [f"{new(c)} = 0" for c in sorted(zero)]
        cases.append(f"WHEN {' AND '.join(tests)} THEN %s")
        params.append(status.value)
    params.append(RunStatus.SUCCESS.value)
    columns.append(f"{_column('status')} = CASE {' '.join(cases)} ELSE %s END")
    unfinished = " + ".join(new(count) for count in sorted(UNFINISHED_COUNTS))
    finished_at = _column("finished_at")
    if connection.vendor == "postgresql":
        clock = "statement_timestamp()"  # the database's clock, whichever worker settles
    else:
        clock = "%s"
        params.append(_db_value("finished_at", timezone.now()))
    columns.append(
        f"{finished_at} = CASE WHEN {unfinished} = 0 THEN COALESCE({finished_at}, {clock}) "
        "ELSE NULL END"
    )
    for name, value in extra.items():
        columns.append(f"{_column(name)} = %s")
        params.append(_db_value(name, value))
    params.append(_db_value("id", run_id))
    sql = f"UPDATE {_table(Run)} SET {', '.join(columns)} WHERE {_column('id')} = %s RETURNING *"  # noqa: S608  # names from the model, values as parameters
    (run,) = Run.objects.raw(sql, params)
    left = run.steps_remaining
    was_left = left - sum(delta[count] for count in UNFINISHED_COUNTS)
    if left == 0 and (was_left > 0 or extra.get("steps_total") == 0):
        send_after_commit("run_finished", run_id=str(run.pk), status=str(run.status))
    return run


def _run_field(name: str) -> Field[Any, Any]:
    found = Run._meta.get_field(name)  # noqa: SLF001  # Django's documented model API
    assert isinstance(found, Field)  # noqa: S101  # run fields are concrete columns
    return found


def _column(name: str) -> str:
    return connection.ops.quote_name(str(_run_field(name).column))


def _db_value(name: str, value: Any) -> Any:
    """``value`` as the database driver takes it for the run's field ``name``."""
    return _run_field(name).get_db_prep_value(value, connection)


def _after_commit(run: Run, ready: list[int], freed_assets: Iterable[str]) -> StepEnd:
    """Publish a worker run's released steps, and release other runs' steps of freed assets."""
    freed = tuple(sorted(set(freed_assets)))
    if ready and not run.is_in_process:
        ids = list(ready)
        transaction.on_commit(lambda: _publish(ids))
    for asset in freed:
        transaction.on_commit(functools.partial(release_for_asset, asset))
    return StepEnd(won=True, ready=list(ready), freed_assets=freed)


def _publish(step_ids: list[int]) -> None:
    from assets.services.outbox import publish_steps  # noqa: PLC0415  # outbox imports the engine

    publish_steps(step_ids)


def _publish_born(run_id: uuid.UUID, at: dt.datetime, count: int) -> None:
    from assets.services.outbox import publish_born  # noqa: PLC0415  # outbox imports the engine

    publish_born(run_id, at, count)


def _limited(assets: Iterable[str]) -> set[str]:
    limits = get_registry().concurrency_limits
    return {asset for asset in assets if asset in limits}


def _release(run: Run, delta: Counter[StepCount]) -> list[int]:
    """Queue the run's ready pending steps (run locked); count them into ``delta``."""
    if run.cancel_requested_at is not None:
        return []
    eligible = Materialization.objects.filter(
        run_id=run.pk, status=StepStatus.PENDING, remaining_upstreams=0
    ).order_by("id")
    if run.max_parallel is not None:
        free = run.max_parallel - (run.steps_active + delta[StepCount.ACTIVE])
        if free <= 0:
            return []
        eligible = eligible[:free]
    candidates = list(eligible.values_list("pk", "asset"))
    # An in-process run executes one step at a time in its caller; limits govern workers.
    limits = {} if run.is_in_process else get_registry().concurrency_limits
    limited = {asset for _, asset in candidates if asset in limits}
    if limited:
        lock_assets(limited)
        active = active_by_asset(limited)
        free_by_asset = {a: limits[a] - active.get(a, 0) for a in limited}
        kept = []
        for pk, asset in candidates:
            if asset in free_by_asset:
                if free_by_asset[asset] <= 0:
                    continue
                free_by_asset[asset] -= 1
            kept.append((pk, asset))
        candidates = kept
    ids = [pk for pk, _ in candidates]
    if ids:
        released = Materialization.objects.filter(pk__in=ids, status=StepStatus.PENDING).update(
            status=StepStatus.QUEUED, queued_at=db_now(), dispatched_at=None
        )
        delta[StepCount.PENDING] -= released
        delta[StepCount.ACTIVE] += released
    return ids


@dataclass(frozen=True, kw_only=True, slots=True)
class Birth:
    """How a new run's streamed steps are inserted already released (ADR 0033).

    Each step not of a ``held`` asset is inserted ``queued``, with ``queued_at`` and
    ``dispatched_at`` both ``at``: released, and claimed for publishing by the creating process,
    exactly as ``_release`` and the outbox's claim would leave it, without rewriting the row
    twice. Steps of ``held`` (concurrency-limited) assets are inserted ``pending``; ``open_run``
    releases them within their limits.
    """

    at: dt.datetime
    held: frozenset[str]


def birth_for(run: Run) -> Birth | None:
    """Whether a new run's edge-less steps may be inserted released: a worker run, no cap.

    ``None`` (insert them pending) for an in-process run, which executes the ids ``open_run``
    returns, and for a run with ``max_parallel``, which releases only that many at once.
    """
    if run.is_in_process or run.max_parallel is not None:
        return None
    return Birth(at=db_time(), held=frozenset(get_registry().concurrency_limits))


def open_run(
    run_id: uuid.UUID | str,
    *,
    steps: int,
    has_step_edges: bool,
    born_queued: int = 0,
    birth: Birth | None = None,
) -> list[int]:
    """Count a new run's ``steps``, release the ready pending ones and settle the run.

    Called by ``runs.create_run`` in the transaction that inserted the steps. ``born_queued`` of
    them were inserted released under ``birth`` (ADR 0033): they are counted active and
    published after commit by ``outbox.publish_born``; they are not in the returned ids.
    """
    with transaction.atomic():
        run = lock_run(run_id)
        run.has_step_edges = has_step_edges
        delta: Counter[StepCount] = Counter(
            {StepCount.PENDING: steps - born_queued, StepCount.ACTIVE: born_queued}
        )
        ready = _release(run, delta)
        born = birth if born_queued else None
        # A run born with claimed steps says so until they are out (ADR 0035): if the process
        # publishing them dies first, the relay finds the run and sends them.
        extra = {"born_unsent_at": born.at} if born is not None else {}
        _settle(run, delta, steps_total=steps, has_step_edges=has_step_edges, **extra)
        if born is not None:
            transaction.on_commit(functools.partial(_publish_born, run.pk, born.at, born_queued))
        return _after_commit(run, ready, ()).ready


def release_ready_steps(run_id: uuid.UUID | str) -> list[int]:
    """Release a run's ready pending steps (e.g. a concurrency slot was freed elsewhere)."""
    with transaction.atomic():
        run = lock_run(run_id)
        delta: Counter[StepCount] = Counter()
        ready = _release(run, delta)
        _settle(run, delta)
        return _after_commit(run, ready, ()).ready


def ready_for_a_worker() -> QuerySet[Materialization]:
    """Pending steps with nothing left to wait for, in worker runs not being canceled.

    Only a free slot (``max_parallel``, a concurrency limit) keeps these from being released.
    """
    return Materialization.objects.filter(
        status=StepStatus.PENDING,
        remaining_upstreams=0,
        run__is_in_process=False,
        run__cancel_requested_at__isnull=True,
    )


def active_by_asset(assets: Collection[str]) -> dict[str, int]:
    """How many steps of each of ``assets`` are queued or running, across all runs."""
    return dict(
        Materialization.objects.filter(asset__in=list(assets), status__in=ACTIVE_STATUSES)
        .values_list("asset")
        .annotate(n=Count("id"))
        .values_list("asset", "n")
    )


def release_for_asset(asset: str) -> list[int]:
    """Release waiting steps of a concurrency-limited asset in every run (a slot was freed)."""
    runs = ready_for_a_worker().filter(asset=asset).values_list("run_id", flat=True).distinct()
    released: list[int] = []
    for run_id in list(runs):
        released += release_ready_steps(run_id)
    return released


def claim_step(step_id: int, owner: str) -> Materialization | None:
    """Start a queued step that is due: ``queued -> running`` with a lease for ``owner``.

    Returns the claimed row (as it is now), or ``None`` if this call did not win. On PostgreSQL
    the conditional UPDATE returns the row itself (``RETURNING``), one statement per claim. The
    run is not touched: a queued and a running step are both counted as active.
    """
    lease = dt.timedelta(seconds=flowstone_settings.STEP_LEASE_SECONDS)
    if connection.vendor == "postgresql":
        # The database's clock: a worker whose clock is off neither shortens its own lease nor
        # starts a retry early.
        claimed = list(
            Materialization.objects.raw(
                f"UPDATE {_table(Materialization)} SET status = %s, attempt = attempt + 1, "  # noqa: S608  # table name from the model
                "started_at = statement_timestamp(), lease_owner = %s, "
                "lease_expires_at = statement_timestamp() + %s, not_before = NULL "
                "WHERE id = %s AND status = %s "
                "AND (not_before IS NULL OR not_before <= statement_timestamp()) RETURNING *",
                [StepStatus.RUNNING, owner, lease, step_id, StepStatus.QUEUED],
            )
        )
        if not claimed:
            return None
        step = claimed[0]
    else:
        now = timezone.now()
        updated = (
            Materialization.objects.filter(pk=step_id, status=StepStatus.QUEUED)
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
            .update(
                status=StepStatus.RUNNING,
                attempt=F("attempt") + 1,
                started_at=now,
                lease_owner=owner,
                lease_expires_at=now + lease,
                not_before=None,
            )
        )
        if not updated:
            return None
        step = Materialization.objects.get(pk=step_id)
    send_after_commit("step_started", **_step_payload(step))
    return step


def _step_payload(step: Materialization, **extra: Any) -> dict[str, Any]:
    return {
        "run_id": str(step.run_id),
        "asset": step.asset,
        "partition": step.partition_key,
        "materialization_id": step.pk,
        "attempt": step.attempt,
        **extra,
    }


def attempt_version(step: Materialization) -> str:
    """The version that names this attempt's value: ``<step id>.<attempt>``, unique per claim."""
    return f"{step.pk}.{step.attempt}"


def recorded_version(step: Materialization) -> str:
    """The version of a successful step's value (``""``: recorded before values had versions)."""
    version = (step.metadata or {}).get("version", "")
    return version if isinstance(version, str) else ""


@dataclass(frozen=True, kw_only=True, slots=True)
class AttemptFence:
    """The lease of one step attempt, for IO managers that write in the steps' database.

    ``hold`` is the last statement of the writer's transaction: it renews the lease if the step
    is still running this attempt for this owner (an ``UPDATE`` that keeps the step row locked
    until the writer commits, a moment later), and otherwise raises ``LeaseLostError`` so the
    write rolls back. Taken at the end, the lock never blocks the heartbeat while a long write
    runs; renewed, the lease cannot expire between the write's commit and the completion.
    """

    step_id: int
    attempt: int
    owner: str

    def hold(self, using: str) -> bool:
        """Hold the lease inside ``using``'s open transaction (see ``flowstone.io.base.Fence``)."""
        if using != router.db_for_write(Materialization):
            return False
        if not renew_lease(self.step_id, self.owner, self.attempt, using=using):
            raise LeaseLostError(
                f"attempt {self.attempt} of step {self.step_id} lost its lease; its value is "
                "not stored"
            )
        return True


def renew_lease(
    step_id: int, owner: str, attempt: int | None = None, *, using: str | None = None
) -> bool:
    """Extend the lease of a step this owner is running; ``False`` if it is no longer ours.

    With ``attempt``, only while the step is still running that attempt. Inside a transaction
    the step row stays locked until it ends (``AttemptFence``).
    """
    lease = dt.timedelta(seconds=flowstone_settings.STEP_LEASE_SECONDS)
    running = Materialization.objects.db_manager(using).filter(
        pk=step_id, status=StepStatus.RUNNING, lease_owner=owner
    )
    if attempt is not None:
        running = running.filter(attempt=attempt)
    updated = running.update(lease_expires_at=db_now() + lease)
    return updated == 1


def lock_attempt(step: Materialization, owner: str) -> bool:
    """Lock the step's row if ``owner`` still runs this attempt of it; ``False`` if not.

    For records an attempt makes inside its own transaction (an automated checkpoint decision):
    an attempt that lost its lease records nothing, and the sweeper waits until it commits.
    """
    return bool(list(_running(step, owner).select_for_update().values_list("pk", flat=True)))


def _running(
    step: Materialization, owner: str | None, *, expired_before: dt.datetime | None = None
) -> Any:
    """The step, if it is running for ``owner`` (``None``: any owner).

    With ``expired_before``, only if its lease expired before then: the sweeper acts on dead
    workers' steps only, even if a worker renewed its lease since the sweeper looked.
    """
    running = Materialization.objects.filter(pk=step.pk, status=StepStatus.RUNNING)
    if owner is not None:
        # The attempt too: a redelivered message can carry the same owner name.
        running = running.filter(lease_owner=owner, attempt=step.attempt)
    if expired_before is not None:
        # The sweeper read the step before it locked the run: act on that attempt only.
        running = running.filter(lease_expires_at__lt=expired_before, attempt=step.attempt)
    return running


def _record_attempt(
    step: Materialization,
    outcome: StepAttempt.Outcome,
    *,
    error: dict[str, Any] | None = None,
    log: StepLog | None = None,
) -> None:
    """Keep an ended attempt that has something to tell: an error or a log.

    Written in the transaction of the ending; an attempt that succeeded without logging anything
    leaves no row.
    """
    if error is None and not log:
        return
    StepAttempt.objects.bulk_create(
        [
            StepAttempt(
                materialization_id=step.pk,
                attempt=step.attempt,
                worker=step.lease_owner,
                outcome=outcome,
                started_at=step.started_at,
                finished_at=db_now(),
                error=error,
                log=log.records if log else [],
                log_dropped=log.dropped if log else 0,
            )
        ],
        ignore_conflicts=True,  # an attempt ends once; never fail an ending over its record
    )


class RunTally:
    """A run's counter changes from the successes of one batch's steps, settled together.

    ``complete_step`` given a tally does not touch the run's row: the success commits with the
    step's own row, lineage and audit only, and after that commit adds its change here. The
    batch settles the sum (``flush``) at least every ``TALLY_SECONDS`` and when it ends, in one
    statement, so a backfill's completions no longer queue on the run's row lock, one per step
    (ADR 0034). Only for runs whose successes release nothing (``tally_for``). A tally lost
    with its worker (kill -9) is made good by ``settle_stranded_runs``, which recounts.
    """

    def __init__(self, run_id: uuid.UUID) -> None:
        self.run_id = run_id
        self.delta: Counter[StepCount] = Counter()
        self.since = time.monotonic()

    def add(self, delta: Counter[StepCount]) -> None:
        """Count a committed success (called after its commit)."""
        self.delta.update(delta)

    def flush(self, *, when_due: bool = False) -> None:
        """Settle the counted changes (with ``when_due``, only once ``TALLY_SECONDS`` passed).

        Nothing is written to a run that is finished already: ``settle_stranded_runs`` recounted
        it from its steps (this worker was frozen past the grace), and the count is exact.
        """
        if when_due and time.monotonic() - self.since < TALLY_SECONDS:
            return
        delta, self.delta, self.since = self.delta, Counter(), time.monotonic()
        if not any(delta.values()):
            return
        try:
            with transaction.atomic():
                run = lock_run(self.run_id)
                if run.finished_at is None:
                    _settle(run, delta)
        except BaseException:
            self.delta.update(delta)  # kept for the next settle (or the sweeper's recount)
            raise


@dataclass(eq=False, kw_only=True, slots=True)
class Batch:
    """What a batch's worker hands to each success of its steps.

    ``tally``: count the success there rather than on the run's row (``tally_for``, ADR 0034).
    ``next_step``: claim this step, the batch's next, in the success's own transaction, so a
    batch's step after the first costs one commit instead of two (its claim rides on the
    previous step's success); after that commit the claimed row waits in ``claimed``.
    """

    owner: str
    tally: RunTally | None = None
    deadline: float = float("inf")
    """``time.monotonic()`` after which the batch starts (and so claims) no step."""
    next_step: int | None = None
    claimed: Materialization | None = None

    def may_start(self) -> bool:
        """Whether the batch may still start a step (its ``STEP_BATCH_SECONDS`` are not over)."""
        return time.monotonic() <= self.deadline

    def take_claimed(self, step_id: int) -> Materialization | None:
        """The claimed row of ``step_id`` if the previous success claimed it (once)."""
        claimed = self.claimed
        if claimed is None or claimed.pk != step_id:
            return None
        self.claimed = None
        return claimed

    def keep_claim(self, row: Materialization) -> None:
        """Hold the next step's claimed row (called after the commit that claimed it)."""
        self.claimed = row


def tally_for(run: Run, asset: str) -> RunTally | None:
    """A tally for a batch of ``asset``'s steps of ``run``, or ``None`` to count each at once.

    Counted per batch: a worker run without step edges or ``max_parallel`` and an asset without
    a concurrency limit, whose successes never release another step (so nothing waits for the
    counters but the run's own end).
    """
    if run.is_in_process or run.has_step_edges or run.max_parallel is not None:
        return None
    if asset in get_registry().concurrency_limits:
        return None
    return RunTally(run.pk)


def settle_stranded_runs(*, now: dt.datetime | None = None) -> int:
    """Recount unfinished runs whose steps all ended a while ago; return how many were settled.

    A batch's tally dies with a killed worker: its committed successes were never counted, so
    the run would wait forever with nothing left to end. The sweeper runs this every tick. A run
    qualifies once no step of it is unfinished and none ended in the last ``STEP_LEASE_SECONDS``
    (a live batch settles within moments of its last step); it is recounted from its steps under
    its lock, which finishes it. A tally that comes later changes nothing (``RunTally.flush``).
    """
    cutoff = (now or db_time()) - dt.timedelta(seconds=flowstone_settings.STEP_LEASE_SECONDS)
    steps = Materialization.objects.filter(run_id=OuterRef("pk"))
    stranded = (
        Run.objects.filter(status__in=UNFINISHED_RUN_STATUSES, is_in_process=False)
        .exclude(Exists(steps.filter(status__in=UNFINISHED_STEP_STATUSES)))
        .exclude(Exists(steps.filter(finished_at__gt=cutoff)))
    )
    settled = 0
    for run_id in list(stranded.values_list("pk", flat=True)[:RECOVERY_BATCH]):
        with transaction.atomic():
            # Not waiting for a run someone holds: the next sweep looks again.
            run = Run.objects.select_for_update(skip_locked=True).filter(pk=run_id).first()
            left = Materialization.objects.filter(
                run_id=run_id, status__in=UNFINISHED_STEP_STATUSES
            )
            if run is None or run.finished_at is not None or left.exists():
                continue
            by_status = (
                Materialization.objects.filter(run_id=run_id)
                .values_list("status")
                .annotate(n=Count("id"))
                .values_list("status", "n")
            )
            actual: Counter[StepCount] = Counter()
            for status, n in by_status:
                actual[COUNTER_OF[StepStatus(status)]] += n
            delta = Counter({c: actual[c] - getattr(run, f"steps_{c.value}") for c in StepCount})
            logger.warning("run %s: all its steps ended uncounted; recounted %s", run_id, delta)
            _settle_row(run_id, delta)
            settled += 1
    return settled


def complete_step(
    step: Materialization,
    stored: StoredOutput,
    consumed: Iterable[Materialization],
    *,
    owner: str,
    log: StepLog | None = None,
    batch: Batch | None = None,
) -> StepEnd:
    """Mark a running step successful, with lineage, audit and downstream release, atomically.

    The success records which attempt's value it is (``metadata["version"]``, see
    ``attempt_version``): readers load that version, so only the attempt that wins here, the
    one holding the lease, decides the value downstream steps read.

    A run without step edges (a backfill, a single step) has no counters to decrement; and
    unless a counter reached a step, the run caps its parallelism or the asset has a concurrency
    limit, the ending cannot make another step of the run ready, so the release query is skipped.
    A batch's step (``batch``): with a tally (a run of the kind above, ``tally_for``) the run's
    row is not touched, the success is counted into the tally after commit and the batch settles
    it (ADR 0034); and the batch's next step is claimed in this transaction.
    """
    with transaction.atomic():
        # Announced first so it comes before the run's own end; dropped with a rollback.
        duration = (timezone.now() - step.started_at).total_seconds() if step.started_at else None
        send_after_commit("step_succeeded", **_step_payload(step, duration=duration))
        counted = Counter({StepCount.ACTIVE: -1, StepCount.SUCCEEDED: 1})
        tally = batch.tally if batch is not None else None
        if tally is not None:
            if not _record_success(step, stored, consumed, owner=owner, log=log, batch=batch):
                transaction.set_rollback(True)
                return LOST
            transaction.on_commit(functools.partial(tally.add, counted))
            return StepEnd(won=True)
        # Counting first takes the run's lock and settles it in one statement (the common
        # case costs no separate lock); if the step update then loses, all of it rolls back.
        run = _settle_row(step.run_id, counted, is_guess=True)
        if not _record_success(step, stored, consumed, owner=owner, log=log, batch=batch):
            transaction.set_rollback(True)
            return LOST
        decremented = 0
        if run.has_step_edges:
            downstream = StepEdge.objects.filter(upstream_id=step.pk).values_list("downstream_id")
            decremented = Materialization.objects.filter(pk__in=downstream).update(
                remaining_upstreams=F("remaining_upstreams") - 1
            )
        freed = _limited([step.asset])
        delta: Counter[StepCount] = Counter()
        ready = _release(run, delta) if decremented or run.max_parallel is not None or freed else []
        _settle(run, delta)
        return _after_commit(run, ready, freed)


def _record_success(
    step: Materialization,
    stored: StoredOutput,
    consumed: Iterable[Materialization],
    *,
    owner: str,
    log: StepLog | None,
    batch: Batch | None,
) -> bool:
    """The success's own rows: the step (if ``owner`` still runs it), attempt, lineage, audit.

    And the claim of a batch's next step, which ``batch`` gets after commit.
    """
    won = _running(step, owner).update(
        status=StepStatus.SUCCESS,
        finished_at=db_now(),
        metadata={**step.metadata, **stored.as_metadata(), "version": attempt_version(step)},
        error=None,
        lease_expires_at=None,
    )
    if not won:
        return False
    # Steps before approvals (the engine's lock order): the next claim before the stale marks.
    if batch is not None and batch.next_step is not None and batch.may_start():
        claimed = claim_step(batch.next_step, batch.owner)
        if claimed is not None:
            transaction.on_commit(functools.partial(batch.keep_claim, claimed))
    _record_attempt(step, StepAttempt.Outcome.SUCCEEDED, log=log)
    record_lineage(step, consumed)
    record_audit(
        AuditEvent.Action.ASSET_MATERIALIZED,
        run_id=step.run_id,
        asset=step.asset,
        partition_key=step.partition_key,
        details={"materialization_id": step.pk, "uri": stored.uri},
    )
    success_recorded.send(sender=Materialization, step=step)
    return True


DEPENDENCY_FAILED: Final = "dependency_failed"


def _fail_downstream(step: Materialization) -> int:
    """Mark every pending step that waits, directly or not, on ``step`` as ``upstream_failed``."""
    error = {
        "type": "DependencyFailedError",
        "kind": DEPENDENCY_FAILED,
        "message": f"upstream step {step.asset}[{step.partition_key}] did not succeed",
        "retryable": False,
        "asset": None,
        "partition": None,
        "run_id": str(step.run_id),
        "details": {"failed_step": step.pk},
        "cause": None,
    }
    return _end_downstream(step, StepStatus.UPSTREAM_FAILED, error=error)


def _end_downstream(
    step: Materialization, status: StepStatus, *, error: dict[str, Any] | None
) -> int:
    """End every pending step that waits, directly or not, on ``step`` in ``status``.

    Only pending steps can wait on a step that did not succeed (a step is released once all its
    upstreams succeeded). Returns how many were ended.
    """
    ended = 0
    frontier = [step.pk]
    while frontier:
        downstream = StepEdge.objects.filter(upstream_id__in=frontier).values_list(
            "downstream_id", flat=True
        )
        failed = list(
            Materialization.objects.filter(
                pk__in=list(downstream), status=StepStatus.PENDING
            ).values_list("pk", flat=True)
        )
        ended += Materialization.objects.filter(pk__in=failed, status=StepStatus.PENDING).update(
            status=status, finished_at=db_now(), error=error
        )
        frontier = failed
    return ended


def _fail_locked(
    run: Run,
    step: Materialization,
    error: dict[str, Any],
    *,
    owner: str | None,
    expired_before: dt.datetime | None = None,
    log: StepLog | None = None,
    **extra: Any,
) -> StepEnd:
    """``running -> failed`` on a locked run, failing the steps downstream of it."""
    won = _running(step, owner, expired_before=expired_before).update(
        status=StepStatus.FAILED,
        finished_at=db_now(),
        error=error,
        lease_expires_at=None,
        **extra,
    )
    if not won:
        return LOST
    outcome = StepAttempt.Outcome.FAILED if owner is not None else StepAttempt.Outcome.LOST
    _record_attempt(step, outcome, error=error, log=log)
    send_after_commit("step_failed", **_step_payload(step, error=error))
    cascaded = _fail_downstream(step) if run.has_step_edges else 0
    delta = Counter(
        {StepCount.ACTIVE: -1, StepCount.PENDING: -cascaded, StepCount.FAILED: 1 + cascaded}
    )
    ready = _release(run, delta)
    _settle(run, delta)
    return _after_commit(run, ready, _limited([step.asset]))


def fail_step(
    step: Materialization,
    error: FlowStoneError,
    *,
    owner: str | None,
    log: StepLog | None = None,
) -> StepEnd:
    """Mark a running step failed with its structured error, once, and fail its downstream."""
    with transaction.atomic():
        return _fail_locked(lock_run(step.run_id), step, error.to_dict(), owner=owner, log=log)


def _cancel_running_locked(
    run: Run,
    step: Materialization,
    owner: str | None,
    *,
    expired_before: dt.datetime | None = None,
    error: dict[str, Any] | None = None,
    log: StepLog | None = None,
) -> StepEnd:
    """A running step of a canceled run ends ``canceled`` instead of going on."""
    won = _running(step, owner, expired_before=expired_before).update(
        status=StepStatus.CANCELED,
        finished_at=db_now(),
        lease_owner="",
        lease_expires_at=None,
    )
    if not won:
        return LOST
    _record_attempt(step, StepAttempt.Outcome.CANCELED, error=error, log=log)
    delta = Counter({StepCount.ACTIVE: -1, StepCount.CANCELED: 1})
    _settle(run, delta)
    return _after_commit(run, [], _limited([step.asset]))


def retry_step(
    step: Materialization,
    error: FlowStoneError,
    *,
    owner: str,
    delay: dt.timedelta,
    log: StepLog | None = None,
) -> StepEnd:
    """Return a running step to ``queued`` for another attempt ``delay`` from now.

    ``not_before`` is set on the database's clock. The step is unsent again (the outbox): it is
    published after commit with ``not_before`` as its ETA, or by the relay once the delay fits a
    broker countdown. In a run being canceled the step ends ``canceled`` instead.
    """
    with transaction.atomic():
        run = lock_run(step.run_id)
        stored = error.to_dict()
        if run.cancel_requested_at is not None:
            return _cancel_running_locked(run, step, owner, error=stored, log=log)
        won = _running(step, owner).update(
            status=StepStatus.QUEUED,
            error=stored,
            not_before=db_now() + delay,
            queued_at=db_now(),
            dispatched_at=None,
            lease_owner="",
            lease_expires_at=None,
        )
        if not won:
            return LOST
        _record_attempt(step, StepAttempt.Outcome.RETRIED, error=stored, log=log)
        return _after_commit(run, [step.pk], ())


@dataclass(frozen=True, kw_only=True, slots=True)
class Parked:
    """How ``park_step`` ended: parked (waiting for approval), canceled, or lost."""

    end: StepEnd
    is_parked: bool


def park_step(step: Materialization, *, owner: str, log: StepLog | None = None) -> Parked:
    """``running -> waiting_approval``: the worker is free to go; nothing holds a slot.

    The caller records the approval in the same transaction. In a run being canceled the step
    ends ``canceled`` instead (and no approval is requested). The attempt computed the value
    under review, so what its asset logged is kept (outcome ``parked``).
    """
    run = lock_run(step.run_id)
    if run.cancel_requested_at is not None:
        return Parked(end=_cancel_running_locked(run, step, owner, log=log), is_parked=False)
    won = _running(step, owner).update(
        status=StepStatus.WAITING_APPROVAL, lease_owner="", lease_expires_at=None
    )
    if not won:
        return Parked(end=LOST, is_parked=False)
    _record_attempt(step, StepAttempt.Outcome.PARKED, log=log)
    delta = Counter({StepCount.ACTIVE: -1, StepCount.WAITING: 1})
    ready = _release(run, delta)  # its slot (max_parallel, concurrency limit) is free again
    _settle(run, delta)
    return Parked(end=_after_commit(run, ready, _limited([step.asset])), is_parked=True)


def resume_step(step_id: int) -> StepEnd:
    """A decision was made: ``waiting_approval -> pending``, released as any ready step is.

    The continuation (storing the decided value, or failing the step) needs a worker again, so
    it waits for a slot like any other step: the run's ``max_parallel`` and the asset's
    concurrency limit hold for it too. Called by ``approvals`` inside the deciding transaction.
    """
    step = Materialization.objects.only("run_id").get(pk=step_id)
    run = lock_run(step.run_id)
    won = Materialization.objects.filter(pk=step_id, status=StepStatus.WAITING_APPROVAL).update(
        status=StepStatus.PENDING, remaining_upstreams=0, not_before=None
    )
    if not won:
        return LOST
    delta = Counter({StepCount.WAITING: -1, StepCount.PENDING: 1})
    ready = _release(run, delta)
    _settle(run, delta)
    return _after_commit(run, ready, ())


def skip_step(step_id: int) -> StepEnd:
    """A reviewer's option skipped the branch: ``waiting_approval -> skipped``, and downstream.

    Every pending step that waits on the step, directly or not, ends ``skipped`` too: nothing
    is stored and no value flows on. ``skipped`` is not a failure, so a run whose other steps
    succeed succeeds. Called by ``approvals`` inside the deciding transaction.
    """
    step = Materialization.objects.only("run_id", "asset", "partition_key").get(pk=step_id)
    run = lock_run(step.run_id)
    won = Materialization.objects.filter(pk=step_id, status=StepStatus.WAITING_APPROVAL).update(
        status=StepStatus.SKIPPED, finished_at=db_now()
    )
    if not won:
        return LOST
    cascaded = _end_downstream(step, StepStatus.SKIPPED, error=None) if run.has_step_edges else 0
    delta = Counter(
        {StepCount.WAITING: -1, StepCount.PENDING: -cascaded, StepCount.SKIPPED: 1 + cascaded}
    )
    ready = _release(run, delta)
    _settle(run, delta)
    return _after_commit(run, ready, ())


def recover_stale_steps(*, now: dt.datetime | None = None) -> list[int]:
    """Take back steps whose worker's lease expired; return the ids requeued (already sent).

    A step recovered more than ``MAX_RECOVERIES`` times fails (a poison step); a step of an
    in-process run fails (its process is gone); a step of a run being canceled is canceled.
    """
    cutoff = db_now() if now is None else now
    requeued: list[int] = []
    expired = Materialization.objects.filter(
        status=StepStatus.RUNNING, lease_expires_at__lt=cutoff
    ).values_list("pk", flat=True)
    for step_id in list(expired[:RECOVERY_BATCH]):
        requeued += _recover(step_id, cutoff).ready
    return requeued


def _recover(step_id: int, now: Any) -> StepEnd:
    """Requeue one step whose lease expired, or fail or cancel it.

    A run whose row another transaction holds is skipped (``SKIP LOCKED``) until the next sweep:
    the sweeper never waits behind a frozen transaction.
    """
    step = Materialization.objects.select_related("run").get(pk=step_id)
    with transaction.atomic():
        run = Run.objects.select_for_update(skip_locked=True).filter(pk=step.run_id).first()
        if run is None:
            return LOST
        # Every branch below is conditional on the lease still being expired: no need to ask first.
        stale = Materialization.objects.filter(
            pk=step.pk, status=StepStatus.RUNNING, attempt=step.attempt, lease_expires_at__lt=now
        )
        if run.cancel_requested_at is not None:
            return _cancel_running_locked(run, step, None, expired_before=now)
        if run.is_in_process or step.recoveries >= flowstone_settings.MAX_RECOVERIES:
            reason = (
                "the process that ran this step stopped renewing its lease"
                if run.is_in_process
                else f"step was taken back from {step.recoveries + 1} workers that stopped "
                "renewing their lease; giving up (a poison step?)"
            )
            error = FlowStoneError(
                reason, asset=step.asset, partition=step.partition_key, run_id=str(step.run_id)
            )
            return _fail_locked(
                run,
                step,
                error.to_dict(),
                owner=None,
                expired_before=now,
                recoveries=F("recoveries") + 1,
            )
        won = stale.update(
            status=StepStatus.QUEUED,
            recoveries=F("recoveries") + 1,
            lease_owner="",
            lease_expires_at=None,
            queued_at=db_now(),
            dispatched_at=None,
        )
        if not won:
            return LOST
        lost = FlowStoneError(
            f"the worker {step.lease_owner or '(unknown)'} stopped renewing its lease; "
            "the step was taken back and queued again",
            asset=step.asset,
            partition=step.partition_key,
            run_id=str(step.run_id),
        )
        _record_attempt(step, StepAttempt.Outcome.LOST, error=lost.to_dict())
        return _after_commit(run, [step.pk], ())


@dataclass(frozen=True, kw_only=True, slots=True)
class Canceled:
    """What ``cancel_run`` ended: steps that had not started, and steps waiting for approval."""

    not_started: int
    waiting: int

    @property
    def total(self) -> int:
        """Every step this cancel ended."""
        return self.not_started + self.waiting


def cancel_steps(run_id: uuid.UUID | str, *, actor: str, actor_type: str) -> Canceled:
    """Cancel a run: pending, queued and waiting-for-approval steps end ``canceled``.

    Running steps finish their attempt (their outcome is recorded; a retry or a recovery of
    them ends ``canceled``). The queued steps' concurrency slots are freed for other runs after
    commit, and the approvals of waiting steps are canceled (``waiting_steps_canceled``).
    Cancelling twice is harmless.
    """
    with transaction.atomic():
        run = lock_run(run_id)
        now = timezone.now()
        if run.cancel_requested_at is None:
            Run.objects.filter(pk=run.pk).update(cancel_requested_at=now)
            run.cancel_requested_at = now
        steps = Materialization.objects.filter(run_id=run.pk)
        queued_assets = set(
            steps.filter(status=StepStatus.QUEUED).values_list("asset", flat=True).distinct()
        )
        waiting_ids = list(
            steps.filter(status=StepStatus.WAITING_APPROVAL).values_list("pk", flat=True)
        )
        ended = {
            count: steps.filter(status__in=statuses).update(
                status=StepStatus.CANCELED,
                finished_at=db_now(),
                lease_owner="",
                lease_expires_at=None,
            )
            for count, statuses in (
                (StepCount.PENDING, [StepStatus.PENDING]),
                (StepCount.ACTIVE, [StepStatus.QUEUED]),
                (StepCount.WAITING, [StepStatus.WAITING_APPROVAL]),
            )
        }
        if waiting_ids:
            waiting_steps_canceled.send(
                sender=Materialization,
                run_id=run.pk,
                step_ids=waiting_ids,
                actor=actor,
                actor_type=actor_type,
            )
        delta = Counter({count: -n for count, n in ended.items()})
        delta[StepCount.CANCELED] += sum(ended.values())
        _settle(run, delta)
        record_audit(
            AuditEvent.Action.RUN_CANCELED,
            actor_type=actor_type,
            actor=actor,
            run_id=run.pk,
            details={
                "steps_canceled": sum(ended.values()),
                "approvals_canceled": len(waiting_ids),
            },
        )
        _after_commit(run, [], _limited(queued_assets))
        return Canceled(
            not_started=ended[StepCount.PENDING] + ended[StepCount.ACTIVE],
            waiting=ended[StepCount.WAITING],
        )
