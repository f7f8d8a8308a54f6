"""The synchronous Python API: ``materialize`` and ``materialize_all``.

Both run in the calling process and return a ``RunResult``; they never queue work. Bad input
(unknown asset, bad partition, non-JSON options) raises before any run is recorded; a step that
fails is recorded and reported in the result (``result.raise_for_status()`` raises its error).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from assets import services
from flowstone.definitions import AssetFunction, definition_of
from flowstone.errors import ValidationFailedError
from flowstone.execution.inprocess import run_in_process
from flowstone.execution.plan import PlannedStep, plan_steps, validate_partition
from flowstone.registry import Registry, get_registry
from flowstone.status import RunKind

if TYPE_CHECKING:
    from collections.abc import Mapping

    from flowstone.results import RunResult


def _asset_name(asset: str | AssetFunction) -> str:
    if isinstance(asset, str):
        return asset
    definition = definition_of(asset)
    if definition is None:
        raise ValidationFailedError(f"{asset!r} is neither an asset name nor an @asset function")
    return definition.name


def _json_object(value: Mapping[str, Any] | None, *, what: str) -> dict[str, Any]:
    data = dict(value or {})
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationFailedError(f"{what} must be JSON-serializable: {exc}") from exc
    return data


def _resource_overrides(
    registry: Registry, overrides: Mapping[str, Mapping[str, Any] | None] | None
) -> dict[str, Any]:
    """Keep only real overrides: ``None`` means "use the configured default"."""
    given = {name: options for name, options in (overrides or {}).items() if options is not None}
    unknown = sorted(set(given) - set(registry.resources))
    if unknown:
        raise ValidationFailedError(f"cannot override unknown resource(s) {unknown}")
    return _json_object(given, what="resource overrides")


def _run(
    asset: str | AssetFunction,
    partition: object,
    *,
    kind: RunKind,
    config: Mapping[str, Any] | None,
    io_overrides: Mapping[str, Any] | None,
    resources: Mapping[str, Mapping[str, Any] | None] | None,
    tags: Mapping[str, Any] | None,
    requested_by: str,
    include_values: bool,
) -> RunResult:
    registry = get_registry()
    definition = registry.get(_asset_name(asset))
    store = services.DatabaseDynamicKeyStore()
    value = validate_partition(definition, partition, store)
    plan: list[PlannedStep] = plan_steps(
        registry,
        [(definition.name, value)],
        include_upstreams=kind == RunKind.MATERIALIZE_ALL,
        store=store,
    )
    request = services.RunRequest(
        kind=kind,
        selection=[definition.name],
        steps=[
            services.StepRequest(
                asset=s.asset,
                partition_key=s.partition_key,
                code_version=registry.get(s.asset).spec.code_version or "",
            )
            for s in plan
        ],
        options=_json_object(config, what="config"),
        io_overrides=_json_object(io_overrides, what="io_overrides"),
        resource_overrides=_resource_overrides(registry, resources),
        tags=_json_object(tags, what="tags"),
        requested_by=requested_by,
    )
    run = services.create_run(request)
    return run_in_process(registry, run.id, plan, include_values=include_values)


def materialize(
    asset: str | AssetFunction,
    partition: object = None,
    *,
    config: Mapping[str, Any] | None = None,
    io_overrides: Mapping[str, Any] | None = None,
    resources: Mapping[str, Mapping[str, Any] | None] | None = None,
    tags: Mapping[str, Any] | None = None,
    requested_by: str = "",
    include_values: bool = False,
) -> RunResult:
    """Materialize one asset partition now, in this process, reading upstreams' latest successes.

    ``partition`` is a partition value (a ``date``, a string, a tuple ...), not an encoded key.
    """
    return _run(
        asset,
        partition,
        kind=RunKind.MATERIALIZE,
        config=config,
        io_overrides=io_overrides,
        resources=resources,
        tags=tags,
        requested_by=requested_by,
        include_values=include_values,
    )


def materialize_all(
    asset: str | AssetFunction,
    partition: object = None,
    *,
    config: Mapping[str, Any] | None = None,
    io_overrides: Mapping[str, Any] | None = None,
    resources: Mapping[str, Mapping[str, Any] | None] | None = None,
    tags: Mapping[str, Any] | None = None,
    requested_by: str = "",
    include_values: bool = False,
) -> RunResult:
    """Materialize an asset partition and every upstream step it needs, in DAG order, now."""
    return _run(
        asset,
        partition,
        kind=RunKind.MATERIALIZE_ALL,
        config=config,
        io_overrides=io_overrides,
        resources=resources,
        tags=tags,
        requested_by=requested_by,
        include_values=include_values,
    )
