"""Starting the run of a tick or run request: one run for several targets, on the workers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from assets import services as run_services
from flowstone.api import RunOptions, planned_steps
from flowstone.execution.plan import validate_partition
from flowstone.partitions import encode_partition_key
from flowstone.registry import get_registry
from flowstone.status import RunKind

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


@dataclass(frozen=True, kw_only=True, slots=True)
class StartedRun:
    """The run a tick started and the encoded partition key of each target."""

    run_id: str
    selection: list[str]
    partition_keys: list[str]


def start_run(
    targets: Sequence[tuple[str, object]],
    *,
    include_upstreams: bool,
    tags: Mapping[str, Any],
    requested_by: str,
) -> StartedRun:
    """Create one run for ``targets`` and publish its ready steps after commit.

    The same planning as ``materialize_async`` (``materialize_all_async`` with
    ``include_upstreams``), for several targets at once. Bad targets raise before anything is
    written: an unknown asset, a partition outside the asset's partitions.
    """
    registry = get_registry()
    store = run_services.DatabaseDynamicKeyStore()
    normalized = []
    for asset, partition in targets:
        definition = registry.get(asset)
        normalized.append((definition.name, validate_partition(definition, partition, store)))
    steps = planned_steps(registry, normalized, include_upstreams=include_upstreams, store=store)
    request = RunOptions(tags=tags, requested_by=requested_by).request(
        registry,
        kind=RunKind.MATERIALIZE_ALL if include_upstreams else RunKind.MATERIALIZE,
        selection=[name for name, _ in normalized],
        steps=steps,
        is_in_process=False,
    )
    created = run_services.create_run(request)  # the engine sends its steps after commit
    return StartedRun(
        run_id=str(created.run.pk),
        selection=[name for name, _ in normalized],
        partition_keys=[encode_partition_key(value) for _, value in normalized],
    )
