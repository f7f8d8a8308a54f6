"""Lineage queries: what a materialization was made from, what was made from it, what is stale.

Every query starts from one successful materialization: the latest success of an asset
partition (newest completion time, then highest id, as ``assets.services.latest_successful``), or
the one a ``materialization_id`` names. The partition is given as a value (``"eu"``,
``date(2025, 12, 1)``, a tuple), exactly as to ``flowstone.materialize``, or already encoded with
``partition_key=``. Answers are frozen dataclasses of plain strings and ints (asset names, encoded
partition keys, materialization ids, depths); ``as_dict()`` gives their JSON form.

- ``upstream`` / ``downstream``: the materializations reached by following lineage edges, each at
  its shortest depth, and the edges followed; ``depth`` limits how many edges away they may be.
- ``impact``: the materializations made (directly or not) from an older success of the asset
  partition than the start, which are still the latest success of their own asset partition, so
  they are now stale.
- ``staleness``: whether a materialization is stale, and why: it is superseded itself, an input it
  was made from, directly or not, has a newer success, or an asset's code version changed since.

The walks are recursive SQL (``lineage.graph``). Asset names read from the database are only ever
compared with the registry's names; nothing is imported or looked up by them.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final

from django.db.models import Exists, OuterRef, Q

from assets.models import Materialization
from assets.services import DatabaseDynamicKeyStore, latest_successful
from flowstone.errors import PartitionKeyError, ValidationFailedError
from flowstone.execution.plan import validate_partition
from flowstone.partitions import decode_partition_key, encode_partition_key
from flowstone.registry import get_registry
from flowstone.status import StepStatus
from lineage import graph
from lineage.errors import MaterializationNotFoundError
from lineage.graph import MAX_DEPTH, Direction
from lineage.models import LineageEdge
from lineage.results import (
    CODE_VERSION_CHANGED,
    SUPERSEDED,
    UPSTREAM_NEWER,
    ImpactResult,
    LineageLink,
    LineageNode,
    LineageResult,
    StaleCause,
    Staleness,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from flowstone.definitions import AssetDefinition
    from flowstone.partitions import PartitionValue

__all__ = [
    "CODE_VERSION_CHANGED",
    "MAX_DEPTH",
    "SUPERSEDED",
    "UPSTREAM_NEWER",
    "ImpactResult",
    "LineageLink",
    "LineageNode",
    "LineageResult",
    "StaleCause",
    "Staleness",
    "downstream",
    "impact",
    "parse_partition",
    "staleness",
    "upstream",
]

_MAX_ID: Final = 2**63 - 1


def upstream(
    asset: str,
    partition: PartitionValue | None = None,
    depth: int | None = None,
    *,
    partition_key: str | None = None,
    materialization_id: int | None = None,
) -> LineageResult:
    """The materializations ``asset``'s partition was made from, up to ``depth`` edges away."""
    return _lineage(
        Direction.UPSTREAM,
        _resolve_start(asset, partition, partition_key, materialization_id),
        _depth_limit(depth),
        depth,
    )


def downstream(
    asset: str,
    partition: PartitionValue | None = None,
    depth: int | None = None,
    *,
    partition_key: str | None = None,
    materialization_id: int | None = None,
) -> LineageResult:
    """The materializations made from ``asset``'s partition, up to ``depth`` edges away."""
    return _lineage(
        Direction.DOWNSTREAM,
        _resolve_start(asset, partition, partition_key, materialization_id),
        _depth_limit(depth),
        depth,
    )


def impact(
    asset: str,
    partition: PartitionValue | None = None,
    depth: int | None = None,
    *,
    partition_key: str | None = None,
    materialization_id: int | None = None,
) -> ImpactResult:
    """The latest materializations made from an older success of the partition than the start.

    They are stale because the start (by default the latest success) is newer than what they
    consumed; ``depth`` limits how many edges away from the older success they may be.
    """
    start = _resolve_start(asset, partition, partition_key, materialization_id)
    rows = graph.walk_stale(start.pk, max_depth=_depth_limit(depth))
    older = (
        Materialization.objects.filter(
            asset=start.asset, partition_key=start.partition_key, status=StepStatus.SUCCESS
        )
        .filter(
            Q(finished_at__lt=start.finished_at) | Q(finished_at=start.finished_at, pk__lt=start.pk)
        )
        .filter(Exists(LineageEdge.objects.filter(upstream_id=OuterRef("pk"))))
        .values_list("pk", flat=True)
    )
    return ImpactResult(
        start=_node(start),
        depth_limit=depth,
        superseded=tuple(
            LineageNode(
                materialization_id=pk, asset=start.asset, partition_key=start.partition_key, depth=0
            )
            for pk in sorted(older)
        ),
        stale=_sorted_nodes(
            LineageNode(
                materialization_id=row.node_id,
                asset=row.asset,
                partition_key=row.partition_key,
                depth=row.depth,
            )
            for row in rows
        ),
    )


def staleness(
    asset: str,
    partition: PartitionValue | None = None,
    *,
    partition_key: str | None = None,
    materialization_id: int | None = None,
) -> Staleness:
    """Whether the latest success of ``asset``'s partition (or the one named) is stale, and why.

    It is stale when it is not the latest success itself; when an input it was made from,
    directly or through inputs that are still the latest of their own partition, has a newer
    success; or when its asset's code version, or such an input's, changed since it was made.
    Inputs of assets no longer registered have no code version to compare.
    """
    start = _resolve_start(asset, partition, partition_key, materialization_id)
    causes: list[StaleCause] = []
    latest = latest_successful(start.asset, start.partition_key)
    if latest is not None and latest.pk != start.pk:
        causes.append(
            StaleCause(kind=SUPERSEDED, node=_node(start), newer_materialization_id=latest.pk)
        )
    code_versions = {name: d.spec.code_version or "" for name, d in get_registry().assets.items()}
    start_cause = _code_cause(_node(start), start.code_version, code_versions)
    causes.extend([start_cause] if start_cause else [])
    causes.extend(_input_causes(start.pk, code_versions))
    ordered = sorted(
        causes,
        key=lambda c: (
            c.node.depth,
            c.node.asset,
            c.node.partition_key,
            c.node.materialization_id,
            c.kind,
        ),
    )
    return Staleness(start=_node(start), is_stale=bool(ordered), causes=tuple(ordered))


def parse_partition(asset: str, text: str) -> PartitionValue:
    """Turn the text a user typed into a partition value of ``asset`` (its definition's parse)."""
    definition = get_registry().get(asset)
    if definition.spec.partitions is None:
        raise PartitionKeyError(
            f"asset {definition.name!r} is not partitioned; give no partition",
            asset=definition.name,
        )
    try:
        return definition.spec.partitions.parse(text)
    except PartitionKeyError as exc:
        raise exc.with_context(asset=definition.name) from None


def _depth_limit(depth: object) -> int:
    """The walk's depth limit for a ``depth`` argument (``None``: ``MAX_DEPTH``)."""
    if depth is None:
        return MAX_DEPTH
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise ValidationFailedError(
            f"depth must be an integer from 1 to {MAX_DEPTH}, got {depth!r}"[:200]
        )
    return depth


def _partition_key(definition: AssetDefinition, partition: object, partition_key: object) -> str:
    """The encoded key of a partition given as a value or as a key, validated like a run's."""
    if partition_key is not None:
        if partition is not None:
            raise ValidationFailedError(
                "give a partition or a partition_key, not both", asset=definition.name
            )
        if not isinstance(partition_key, str):
            raise PartitionKeyError(
                f"partition_key must be a str, got {type(partition_key).__name__}",
                asset=definition.name,
            )
        try:
            partition = decode_partition_key(partition_key)
        except PartitionKeyError as exc:
            raise exc.with_context(asset=definition.name) from None
    store = DatabaseDynamicKeyStore()
    return encode_partition_key(validate_partition(definition, partition, store))


def _resolve_start(
    asset: str, partition: object, partition_key: object, materialization_id: object
) -> Materialization:
    """The successful materialization a query starts from; raise if there is none."""
    definition = get_registry().get(asset)
    if materialization_id is None:
        key = _partition_key(definition, partition, partition_key)
        start = latest_successful(definition.name, key)
        if start is None:
            raise MaterializationNotFoundError(
                f"asset {definition.name!r} has no successful materialization of partition {key!r}",
                asset=definition.name,
                partition=key,
            )
        return start
    if partition is not None or partition_key is not None:
        raise ValidationFailedError(
            "give a partition or a materialization id, not both", asset=definition.name
        )
    if (
        isinstance(materialization_id, bool)
        or not isinstance(materialization_id, int)
        or not 1 <= materialization_id <= _MAX_ID
    ):
        raise ValidationFailedError(
            f"materialization id must be a positive integer, got {materialization_id!r}"[:200],
            asset=definition.name,
        )
    found = Materialization.objects.filter(
        pk=materialization_id, asset=definition.name, status=StepStatus.SUCCESS
    ).first()
    if found is None:
        raise MaterializationNotFoundError(
            f"no successful materialization #{materialization_id} of asset {definition.name!r}",
            asset=definition.name,
        )
    return found


def _node(row: Materialization, depth: int = 0) -> LineageNode:
    return LineageNode(
        materialization_id=row.pk, asset=row.asset, partition_key=row.partition_key, depth=depth
    )


def _sorted_nodes(nodes: Iterable[LineageNode]) -> tuple[LineageNode, ...]:
    """Sorted in Python (code point order), so both database backends answer alike."""
    return tuple(
        sorted(nodes, key=lambda n: (n.depth, n.asset, n.partition_key, n.materialization_id))
    )


def _lineage(
    direction: Direction, start: Materialization, limit: int, depth: int | None
) -> LineageResult:
    rows = graph.walk(start.pk, direction, max_depth=limit)
    nodes: dict[int, LineageNode] = {}
    links: set[tuple[int, int]] = set()
    for row in rows:
        known = nodes.get(row.node_id)
        if row.node_id == start.pk:
            pass  # only a cycle (written behind the services' back) leads back to the start
        elif known is None or row.depth < known.depth:
            nodes[row.node_id] = LineageNode(
                materialization_id=row.node_id,
                asset=row.asset,
                partition_key=row.partition_key,
                depth=row.depth,
            )
        is_up = direction is Direction.UPSTREAM
        links.add((row.via_id, row.node_id) if is_up else (row.node_id, row.via_id))
    return LineageResult(
        direction="upstream" if direction is Direction.UPSTREAM else "downstream",
        start=_node(start),
        depth_limit=depth,
        nodes=_sorted_nodes(nodes.values()),
        links=tuple(LineageLink(downstream_id=down, upstream_id=up) for down, up in sorted(links)),
    )


def _code_cause(
    node: LineageNode, recorded: str, code_versions: dict[str, str]
) -> StaleCause | None:
    """A ``code_version_changed`` cause if the asset is registered at another code version."""
    current = code_versions.get(node.asset)
    if current is None or current == recorded:
        return None
    return StaleCause(
        kind=CODE_VERSION_CHANGED,
        node=node,
        recorded_code_version=recorded,
        current_code_version=current,
    )


def _input_causes(start_id: int, code_versions: dict[str, str]) -> list[StaleCause]:
    """Causes among the inputs, breadth first.

    An input that has a newer success is a cause and is not looked through: what it was made
    from no longer matters to the start.
    """
    rows = graph.walk_upstream_versions(start_id)
    inputs: dict[int, list[graph.VersionedRow]] = {}
    for versioned in rows:
        inputs.setdefault(versioned.row.via_id, []).append(versioned)
    causes: list[StaleCause] = []
    seen = {start_id}
    frontier: deque[tuple[int, int]] = deque([(start_id, 0)])
    while frontier:
        node_id, depth = frontier.popleft()
        for versioned in _unique_nodes(inputs.get(node_id, ())):
            row = versioned.row
            if row.node_id in seen:
                continue
            seen.add(row.node_id)
            node = LineageNode(
                materialization_id=row.node_id,
                asset=row.asset,
                partition_key=row.partition_key,
                depth=depth + 1,
            )
            if versioned.latest_id is not None and versioned.latest_id != row.node_id:
                causes.append(
                    StaleCause(
                        kind=UPSTREAM_NEWER, node=node, newer_materialization_id=versioned.latest_id
                    )
                )
                continue
            cause = _code_cause(node, versioned.code_version, code_versions)
            causes.extend([cause] if cause else [])
            frontier.append((row.node_id, depth + 1))
    return causes


def _unique_nodes(rows: Sequence[graph.VersionedRow]) -> list[graph.VersionedRow]:
    """One row per input node, in a stable order (a node may be reached at several depths)."""
    unique = {versioned.row.node_id: versioned for versioned in rows}
    return [unique[node_id] for node_id in sorted(unique)]
