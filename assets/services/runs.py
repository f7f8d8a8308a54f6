"""Creating, reading and cancelling runs; queries over materializations."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from assets.models import (
    DynamicPartitionKey,
    Materialization,
    RejectedMessage,
    Run,
    RunConfig,
    StepEdge,
)
from assets.services import engine
from flowstone.errors import RunNotFoundError
from flowstone.signals import send_after_commit
from flowstone.status import TERMINAL_STEP_STATUSES, RunKind, StepStatus
from lineage.models import AuditEvent
from lineage.services import record_audit

STEP_BATCH_SIZE: Final = 1000


@dataclass(frozen=True, kw_only=True, slots=True)
class StepRequest:
    """A step to create in a new run, with the steps of the same run it waits for."""

    asset: str
    partition_key: str
    code_version: str = ""
    upstream_keys: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class RunRequest:
    """Everything needed to create a run and its durable config."""

    kind: RunKind
    selection: Sequence[str]
    steps: Iterable[StepRequest]
    is_in_process: bool = False
    max_parallel: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    io_overrides: Mapping[str, Any] = field(default_factory=dict)
    resource_overrides: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, Any] = field(default_factory=dict)
    requested_by: str = ""
    actor_type: str = AuditEvent.ActorType.SYSTEM
    idempotency_key: str = ""
    parent_run_id: uuid.UUID | None = None
    """A re-execution: the run it re-executes; its steps read that run's successes first."""
    reused_runs: Sequence[str] = ()
    """The parent run and its own reused runs, nearest first."""


@dataclass(frozen=True, kw_only=True, slots=True)
class CreatedRun:
    """A new run and the ids of the steps released for dispatch when it was created.

    A streamed worker run without ``max_parallel`` (a backfill) lists none of the steps it
    inserted already released (ADR 0033): there may be 100,000, and the engine publishes them.
    """

    run: Run
    ready: list[int]


@dataclass(frozen=True, kw_only=True, slots=True)
class Inserted:
    """What ``_insert_steps`` wrote: how many steps, whether any edge, how many born queued."""

    total: int
    has_edges: bool = False
    born_queued: int = 0
    birth: engine.Birth | None = None


def _insert_steps(run: Run, steps: Iterable[StepRequest]) -> Inserted:
    """Insert step rows in batches and the in-run edges between them.

    Steps with in-run upstreams must come as a sequence (a planned DAG, small); a streamed iterable
    (a backfill) has no edges, so no ids are kept and memory stays flat, and on PostgreSQL its
    rows go in through ``COPY`` rather than as model instances: released already when the engine
    allows it (``engine.birth_for``), so no row is rewritten to release or to claim it.
    """
    keep_ids = isinstance(steps, Sequence) and any(step.upstream_keys for step in steps)
    if not keep_ids and connection.vendor == "postgresql":
        birth = None if isinstance(steps, Sequence) else engine.birth_for(run)
        total, born_queued = _copy_steps(run, steps, birth)
        return Inserted(total=total, born_queued=born_queued, birth=birth)
    ids: dict[tuple[str, str], int] = {}
    edges: list[StepEdge] = []
    total = 0
    iterator = iter(steps)
    while batch := list(itertools.islice(iterator, STEP_BATCH_SIZE)):
        rows = Materialization.objects.bulk_create(
            [
                Materialization(
                    run=run,
                    asset=step.asset,
                    partition_key=step.partition_key,
                    code_version=step.code_version,
                    remaining_upstreams=len(set(step.upstream_keys)),
                )
                for step in batch
            ]
        )
        total += len(rows)
        if not keep_ids:
            continue
        for step, row in zip(batch, rows, strict=True):
            ids[(step.asset, step.partition_key)] = row.pk
            edges.extend(
                StepEdge(run=run, upstream_id=ids[upstream], downstream_id=row.pk)
                for upstream in set(step.upstream_keys)
            )
    StepEdge.objects.bulk_create(edges, batch_size=STEP_BATCH_SIZE)
    return Inserted(total=total, has_edges=bool(edges))


COPIED_COLUMNS: Final = (
    "run_id",
    "asset",
    "partition_key",
    "status",
    "attempt",
    "code_version",
    "remaining_upstreams",
    "recoveries",
    "lease_owner",
    "created_at",
    "metadata",
    "queued_at",
    "dispatched_at",
)


def _copy_steps(
    run: Run, steps: Iterable[StepRequest], birth: engine.Birth | None
) -> tuple[int, int]:
    """Stream edge-less steps into their table with ``COPY``; return how many, and how many queued.

    Writes every column the model's defaults would (the table has no database defaults); a
    duplicate step fails the unique constraint as ``bulk_create`` would. One ``COPY`` per batch:
    producing a batch may query this same connection (a backfill skips partitions that already
    succeeded), which it cannot do while a ``COPY`` is open. With a ``birth``, steps of assets
    it does not hold are written queued and claimed (``queued_at`` = ``dispatched_at`` =
    ``birth.at``); the rest pending.
    """
    table = connection.ops.quote_name(Materialization._meta.db_table)  # noqa: SLF001  # documented model API
    columns = ", ".join(connection.ops.quote_name(name) for name in COPIED_COLUMNS)
    now = timezone.now()
    total = queued = 0
    iterator = iter(steps)
    while batch := list(itertools.islice(iterator, STEP_BATCH_SIZE)):
        with (
            connection.cursor() as cursor,
            connection.wrap_database_errors,  # psycopg's errors as Django's, as for any query
            cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
        ):
            for step in batch:
                at = birth.at if birth is not None and step.asset not in birth.held else None
                queued += at is not None
                copy.write_row(
                    (
                        run.pk,
                        step.asset,
                        step.partition_key,
                        (StepStatus.PENDING if at is None else StepStatus.QUEUED).value,
                        0,
                        step.code_version,
                        len(set(step.upstream_keys)),
                        0,
                        "",
                        now,
                        "{}",
                        at,
                        at,
                    )
                )
        total += len(batch)
    return total, queued


def create_run(request: RunRequest) -> CreatedRun:
    """Create the run, its config, its steps and their edges in one transaction.

    Steps with no upstream in the run are released at once (within ``max_parallel``). The
    engine publishes them after commit for a worker run; an in-process runner executes the
    returned ids itself.
    """
    with transaction.atomic():
        run = Run.objects.create(
            started_at=timezone.now(),
            kind=request.kind,
            selection=list(request.selection),
            requested_by=request.requested_by,
            is_in_process=request.is_in_process,
            max_parallel=request.max_parallel,
            idempotency_key=request.idempotency_key,
            parent_run_id=request.parent_run_id,
        )
        RunConfig.objects.create(
            run=run,
            options=dict(request.options),
            io_overrides=dict(request.io_overrides),
            resource_overrides=dict(request.resource_overrides),
            tags=dict(request.tags),
            requested_by=request.requested_by,
            reused_runs=list(request.reused_runs),
        )
        inserted = _insert_steps(run, request.steps)
        record_audit(
            AuditEvent.Action.RUN_REQUESTED,
            actor_type=request.actor_type,
            actor=request.requested_by,
            run_id=run.id,
            details={
                "kind": str(request.kind),
                "selection": list(request.selection),
                "steps": inserted.total,
                "max_parallel": request.max_parallel,
                "options": dict(request.options),
                "tags": dict(request.tags),
                **({"reexecution_of": str(request.parent_run_id)} if request.parent_run_id else {}),
            },
        )
        send_after_commit("run_started", run_id=str(run.pk))
        ready = engine.open_run(
            run.pk,
            steps=inserted.total,
            has_step_edges=inserted.has_edges,
            born_queued=inserted.born_queued,
            birth=inserted.birth,
        )
        run.refresh_from_db()
    return CreatedRun(run=run, ready=ready)


def run_for_idempotency_key(requested_by: str, key: str) -> Run | None:
    """The run a requester already started with this idempotency key, if any."""
    return Run.objects.filter(requested_by=requested_by, idempotency_key=key).first()


def get_run(run_id: uuid.UUID | str) -> Run:
    """Return the run, or raise ``RunNotFoundError`` for an unknown or malformed id."""
    try:
        return Run.objects.select_related("config").get(pk=uuid.UUID(str(run_id)))
    except (ValueError, Run.DoesNotExist) as exc:
        raise RunNotFoundError(f"unknown run id {str(run_id)[:64]!r}") from exc


def cancel_run(run_id: uuid.UUID | str, *, actor: str = "", actor_type: str = "system") -> int:
    """Cancel a run (see ``engine.cancel_steps``); return how many steps were canceled.

    Cancelling twice is harmless.
    """
    run = get_run(run_id)
    return engine.cancel_steps(run.pk, actor=actor, actor_type=actor_type).total


def upsert_materialization(
    *, run_id: uuid.UUID | str, asset: str, partition_key: str, **values: Any
) -> Materialization:
    """Insert or update the row of one step (``INSERT ... ON CONFLICT DO UPDATE``).

    For recording materializations made outside a run's engine (imports, tests); it does not
    move the run's counters, so steps of a live run change only through ``engine``.
    """
    row = Materialization(run_id=run_id, asset=asset, partition_key=partition_key, **values)
    Materialization.objects.bulk_create(
        [row],
        update_conflicts=True,
        unique_fields=("asset", "partition_key", "run"),
        update_fields=sorted(values) or ["status"],
    )
    return Materialization.objects.get(run_id=run_id, asset=asset, partition_key=partition_key)


def latest_successful(asset: str, partition_key: str) -> Materialization | None:
    """The latest successful materialization: newest completion time, then highest id."""
    return (
        Materialization.objects.filter(
            asset=asset, partition_key=partition_key, status=StepStatus.SUCCESS
        )
        .select_related("run__config")  # readers need the producing run's IO overrides
        .order_by("-finished_at", "-id")
        .first()
    )


def keys_with_success(asset: str, partition_keys: Sequence[str]) -> set[str]:
    """Which of ``partition_keys`` have a successful materialization of ``asset``."""
    return set(
        Materialization.objects.filter(
            asset=asset, partition_key__in=list(partition_keys), status=StepStatus.SUCCESS
        )
        .values_list("partition_key", flat=True)
        .distinct()
    )


def get_step(step_id: int) -> Materialization:
    """Return one step row."""
    return Materialization.objects.get(pk=step_id)


def steps_of_run(run_id: uuid.UUID | str) -> list[Materialization]:
    """All steps of a run, oldest first."""
    return list(Materialization.objects.filter(run_id=run_id).order_by("id"))


def steps_by_key(
    run_id: uuid.UUID | str, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Materialization]:
    """The steps of a run for the given ``(asset, partition_key)`` pairs."""
    wanted = list(keys)
    if not wanted:
        return {}
    rows = Materialization.objects.filter(keys_condition(wanted), run_id=run_id)
    return {(row.asset, row.partition_key): row for row in rows}


def keys_condition(keys: Iterable[tuple[str, str]]) -> Q:
    """A filter matching any of the ``(asset, partition_key)`` pairs."""
    condition = Q()
    for asset, partition_key in keys:
        condition |= Q(asset=asset, partition_key=partition_key)
    return condition


def find_step(run_id: uuid.UUID, asset: str, partition_key: str) -> Materialization | None:
    """The step of a run for ``asset`` and ``partition_key``, loaded with its run and config.

    ``None`` for a known run without that step; ``RunNotFoundError`` for an unknown run. One
    query when the step exists.
    """
    try:
        return Materialization.objects.select_related("run__config").get(
            run_id=run_id, asset=asset, partition_key=partition_key
        )
    except Materialization.DoesNotExist:
        get_run(run_id)  # raises RunNotFoundError when the run is the unknown part
        return None


def find_steps(
    run_id: uuid.UUID, asset: str, partition_keys: Sequence[str]
) -> dict[str, Materialization]:
    """The steps of a run for ``asset`` by partition key, loaded with their run and config.

    One query; keys without a step are missing from the answer. ``RunNotFoundError`` for an
    unknown run.
    """
    rows = Materialization.objects.select_related("run__config").filter(
        run_id=run_id, asset=asset, partition_key__in=list(partition_keys)
    )
    found = {row.partition_key: row for row in rows}
    if not found:
        get_run(run_id)  # raises RunNotFoundError when the run is the unknown part
    return found


def is_terminal(status: str) -> bool:
    """Whether a step status is final."""
    return StepStatus(status) in TERMINAL_STEP_STATUSES


class DatabaseDynamicKeyStore:
    """Keys of ``DynamicPartitions`` definitions, stored in ``DynamicPartitionKey`` rows."""

    def get_keys(self, name: str) -> list[str]:
        """Return the keys added to ``name``, oldest first."""
        return list(
            DynamicPartitionKey.objects.filter(partitions_name=name).values_list("key", flat=True)
        )

    def add_keys(self, name: str, keys: Sequence[str]) -> None:
        """Add keys to ``name``; keys already present are left alone."""
        DynamicPartitionKey.objects.bulk_create(
            [DynamicPartitionKey(partitions_name=name, key=key) for key in keys],
            ignore_conflicts=True,
        )


def record_rejection(
    *,
    reason: str,
    task_name: str = "",
    task_id: str = "",
    content_type: str = "",
    payload: str = "",
) -> RejectedMessage:
    """Record a task message a worker refused, so it is visible and nothing is silently lost."""
    return RejectedMessage.objects.create(
        reason=reason[:10_000],
        task_name=task_name[:255],
        task_id=task_id[:255],
        content_type=content_type[:255],
        payload=payload,
    )
