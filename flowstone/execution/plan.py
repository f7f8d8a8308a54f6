"""Planning a run: which steps (asset x partition) it has, in DAG order, and what each reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flowstone.errors import PartitionKeyError
from flowstone.partitions import (
    DynamicKeyStore,
    IdentityPartitionMapping,
    PartitionMapping,
    PartitionValue,
    encode_partition_key,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from flowstone.definitions import AssetDefinition
    from flowstone.registry import Registry

IDENTITY_MAPPING = IdentityPartitionMapping()


@dataclass(frozen=True, kw_only=True, slots=True)
class UpstreamInput:
    """One upstream asset that a step reads, and which of its partitions."""

    asset: str
    partitions: tuple[PartitionValue | None, ...]
    partition_keys: tuple[str, ...]
    is_fan_in: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class PlannedStep:
    """A step of a run: the asset, its partition and the upstream partitions it reads."""

    asset: str
    partition: PartitionValue | None
    partition_key: str
    inputs: tuple[UpstreamInput, ...]

    @property
    def key(self) -> tuple[str, str]:
        """The step's identity within a run."""
        return (self.asset, self.partition_key)


def mapping_for(definition: AssetDefinition, dep: str) -> PartitionMapping:
    """The partition mapping an asset uses for one upstream (identity unless declared)."""
    return definition.spec.partition_mappings.get(dep, IDENTITY_MAPPING)


def validate_partition(
    definition: AssetDefinition, partition: object, store: DynamicKeyStore | None
) -> PartitionValue | None:
    """Check ``partition`` against the asset's partitions definition and return it normalized."""
    partitions = definition.spec.partitions
    if partitions is None:
        if partition is not None:
            raise PartitionKeyError(
                f"asset {definition.name!r} is not partitioned; do not pass a partition",
                asset=definition.name,
            )
        return None
    if partition is None:
        raise PartitionKeyError(
            f"asset {definition.name!r} is partitioned; pass partition=...", asset=definition.name
        )
    try:
        return partitions.validate(partition, store=store)
    except PartitionKeyError as exc:
        raise exc.with_context(asset=definition.name) from None


def plan_inputs(
    registry: Registry,
    definition: AssetDefinition,
    partition: PartitionValue | None,
    store: DynamicKeyStore | None,
) -> tuple[UpstreamInput, ...]:
    """Resolve which upstream partitions one step of ``definition`` reads."""
    inputs = []
    for dep in definition.spec.deps:
        upstream = registry.get(dep)
        mapping = mapping_for(definition, dep)
        values = tuple(
            mapping.upstream_values(
                partition,
                downstream=definition.spec.partitions,
                upstream=upstream.spec.partitions,
                store=store,
            )
        )
        inputs.append(
            UpstreamInput(
                asset=dep,
                partitions=values,
                partition_keys=tuple(encode_partition_key(v) for v in values),
                is_fan_in=mapping.is_fan_in,
            )
        )
    return tuple(inputs)


def plan_steps(
    registry: Registry,
    targets: Sequence[tuple[str, PartitionValue | None]],
    *,
    include_upstreams: bool,
    store: DynamicKeyStore | None = None,
) -> list[PlannedStep]:
    """Plan the steps for ``targets``, adding every upstream step when ``include_upstreams``.

    Each (asset, partition) appears once, however many downstream steps need it, and the list is
    in topological order so running it front to back respects every dependency.
    """
    steps: dict[tuple[str, str], PlannedStep] = {}
    frontier: list[tuple[str, PartitionValue | None]] = list(targets)
    while frontier:
        asset, partition = frontier.pop()
        definition = registry.get(asset)
        key = (asset, encode_partition_key(partition))
        if key in steps:
            continue
        inputs = plan_inputs(registry, definition, partition, store)
        steps[key] = PlannedStep(
            asset=asset, partition=partition, partition_key=key[1], inputs=inputs
        )
        if include_upstreams:
            frontier.extend(
                (upstream.asset, value) for upstream in inputs for value in upstream.partitions
            )
    position = {name: index for index, name in enumerate(registry.graph.order)}
    return sorted(steps.values(), key=lambda s: (position[s.asset], s.partition_key))
