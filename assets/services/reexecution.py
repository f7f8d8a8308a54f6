"""Re-execution from failure: a new run of the steps of a finished run that did not succeed.

The new run holds the source run's failed, upstream-failed and canceled steps, with the edges
between them, and its config. Its steps read an upstream that succeeded in the source run (or in
a run that one reused, nearest first) from that success before anything newer, where its IO
manager still has that value (ADR 0025), and their lineage points at it.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import TYPE_CHECKING, Final

from assets.models import Materialization, StepEdge
from assets.services.runs import RunRequest, StepRequest, get_run, keys_condition
from flowstone.errors import RunStateError
from flowstone.registry import get_registry
from flowstone.status import RunKind, StepStatus

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

RERUN_STATUSES: Final = (StepStatus.FAILED, StepStatus.UPSTREAM_FAILED, StepStatus.CANCELED)


def reexecution_request(
    run_id: uuid.UUID | str,
    *,
    is_in_process: bool,
    requested_by: str = "",
    actor_type: str = "system",
    idempotency_key: str = "",
) -> RunRequest:
    """The request of a run that re-executes ``run_id`` from its failures.

    Raises ``RunNotFoundError`` for an unknown run, ``RunStateError`` for a run that has not
    finished or has nothing to re-execute, ``AssetNotFoundError`` for a step whose asset is no
    longer defined.
    """
    run = get_run(run_id)
    if run.finished_at is None:
        raise RunStateError(
            f"run {run.pk} is still {run.status}: re-execute it once it has finished "
            "(or cancel it first)",
            run_id=str(run.pk),
        )
    rows = list(
        Materialization.objects.filter(run=run, status__in=RERUN_STATUSES)
        .order_by("id")  # the planned order: a step's upstreams in the run come first
        .values_list("pk", "asset", "partition_key")
    )
    if not rows:
        raise RunStateError(
            f"run {run.pk} has no failed or canceled step to re-execute", run_id=str(run.pk)
        )
    registry = get_registry()
    code_versions = {asset: registry.get(asset).spec.code_version or "" for _, asset, _ in rows}
    keys = {pk: (asset, key) for pk, asset, key in rows}
    upstreams: dict[int, list[tuple[str, str]]] = defaultdict(list)
    if run.has_step_edges:
        for upstream, downstream in StepEdge.objects.filter(run=run).values_list(
            "upstream_id", "downstream_id"
        ):
            if upstream in keys and downstream in keys:
                upstreams[downstream].append(keys[upstream])
    config = run.config
    return RunRequest(
        kind=RunKind.REEXECUTE,
        selection=list(run.selection),
        steps=[
            StepRequest(
                asset=asset,
                partition_key=key,
                code_version=code_versions[asset],
                upstream_keys=tuple(upstreams[pk]),
            )
            for pk, asset, key in rows
        ],
        is_in_process=is_in_process,
        max_parallel=run.max_parallel,
        options=dict(config.options),
        io_overrides=dict(config.io_overrides),
        resource_overrides=dict(config.resource_overrides),
        tags={**config.tags, "reexecution_of": str(run.pk)},
        requested_by=requested_by,
        actor_type=actor_type,
        idempotency_key=idempotency_key,
        parent_run_id=run.pk,
        reused_runs=[str(run.pk), *config.reused_runs],
    )


def reused_successes(
    runs: Sequence[str], keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Materialization]:
    """For each ``(asset, partition_key)``, the success in the nearest of ``runs`` that has one."""
    wanted = list(keys)
    if not runs or not wanted:
        return {}
    rank = {uuid.UUID(str(run_id)): position for position, run_id in enumerate(runs)}
    found: dict[tuple[str, str], Materialization] = {}
    for row in Materialization.objects.filter(
        keys_condition(wanted), run_id__in=list(rank), status=StepStatus.SUCCESS
    ).select_related("run__config"):
        key = (row.asset, row.partition_key)
        if key not in found or rank[row.run_id] < rank[found[key].run_id]:
            found[key] = row
    return found


__all__ = ["RERUN_STATUSES", "reexecution_request", "reused_successes"]
