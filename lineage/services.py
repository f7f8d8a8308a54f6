"""The only code that writes lineage edges and audit events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lineage.models import AuditEvent, LineageEdge

if TYPE_CHECKING:
    import uuid
    from collections.abc import Iterable, Mapping

    from assets.models import Materialization


def record_lineage(downstream: Materialization, upstreams: Iterable[Materialization]) -> int:
    """Insert one edge per consumed upstream materialization; re-recording adds nothing."""
    edges = [
        LineageEdge(
            downstream=downstream,
            upstream=upstream,
            downstream_asset=downstream.asset,
            downstream_partition_key=downstream.partition_key,
            upstream_asset=upstream.asset,
            upstream_partition_key=upstream.partition_key,
        )
        for upstream in {u.pk: u for u in upstreams}.values()
    ]
    LineageEdge.objects.bulk_create(edges, ignore_conflicts=True)
    return len(edges)


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
