"""The only code that writes lineage edges and audit events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lineage.errors import LineageCycleError
from lineage.graph import Direction, reached
from lineage.models import AuditEvent, LineageEdge

if TYPE_CHECKING:
    import uuid
    from collections.abc import Iterable, Mapping

    from assets.models import Materialization


def record_lineage(downstream: Materialization, upstreams: Iterable[Materialization]) -> int:
    """Insert one edge per consumed upstream materialization; re-recording adds nothing.

    Raises ``LineageCycleError`` (and records nothing) when an upstream is the downstream itself
    or was itself made, directly or not, from the downstream: lineage must stay acyclic.
    """
    consumed = {u.pk: u for u in upstreams}
    _check_acyclic(downstream, consumed.values())
    edges = [
        LineageEdge(
            downstream=downstream,
            upstream=upstream,
            downstream_asset=downstream.asset,
            downstream_partition_key=downstream.partition_key,
            upstream_asset=upstream.asset,
            upstream_partition_key=upstream.partition_key,
        )
        for upstream in consumed.values()
    ]
    LineageEdge.objects.bulk_create(edges, ignore_conflicts=True)
    return len(edges)


def _check_acyclic(downstream: Materialization, upstreams: Iterable[Materialization]) -> None:
    """Raise ``LineageCycleError`` if an edge ``downstream -> upstream`` would close a cycle."""
    for upstream in upstreams:
        if upstream.pk == downstream.pk:
            raise LineageCycleError(
                f"materialization #{downstream.pk} of {downstream.asset!r} cannot consume itself",
                asset=downstream.asset,
                partition=downstream.partition_key,
                run_id=str(downstream.run_id),
                details={"downstream": downstream.pk, "upstream": upstream.pk},
            )
    ids = {upstream.pk: upstream for upstream in upstreams}
    culprits = sorted(reached(downstream.pk, ids, Direction.DOWNSTREAM))
    if not culprits:
        return
    first = ids[culprits[0]]
    raise LineageCycleError(
        f"materialization #{downstream.pk} of {downstream.asset!r} cannot consume "
        f"#{first.pk} of {first.asset!r}: #{first.pk} was itself made (directly or not) from "
        f"#{downstream.pk}, so the edge would close a cycle",
        asset=downstream.asset,
        partition=downstream.partition_key,
        run_id=str(downstream.run_id),
        details={"downstream": downstream.pk, "upstreams": culprits},
    )


def record_audit(
    action: AuditEvent.Action | str,
    *,
    actor_type: AuditEvent.ActorType | str = AuditEvent.ActorType.SYSTEM,
    actor: str = "",
    run_id: uuid.UUID | str | None = None,
    asset: str = "",
    partition_key: str = "",
    details: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit event."""
    return AuditEvent.objects.create(
        action=action,
        actor_type=actor_type,
        actor=actor,
        run_id=run_id,
        asset=asset,
        partition_key=partition_key,
        details=dict(details or {}),
    )
