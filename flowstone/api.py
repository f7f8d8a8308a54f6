"""The Python API: synchronous runs and their asynchronous (Celery) forms.

``materialize``, ``materialize_all`` and ``backfill`` run in this process and return a
``RunResult``; ``materialize_async``, ``materialize_all_async`` and ``backfill_async`` always
enqueue to Celery and return a ``RunHandle``.

Bad input (unknown asset, bad partition, non-JSON options) raises before any run is recorded, in
both forms. A synchronous call runs in this process and returns a ``RunResult``; a failed step is
recorded and reported there (``result.raise_for_status()`` raises its error).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from assets import services
from flowstone.definitions import AssetDefinition, AssetFunction, definition_of
from flowstone.errors import MaterializationNotFoundError, ValidationFailedError
from flowstone.execution.handle import RunHandle
from flowstone.execution.inprocess import run_in_process
from flowstone.execution.plan import plan_steps, validate_partition
from flowstone.execution.step import io_guard, recorded_target
from flowstone.inputs import validate_json_object, validate_text
from flowstone.partitions import encode_partition_key
from flowstone.registry import Registry, get_registry
from flowstone.status import RunKind

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

    from flowstone.execution.inprocess import Progress
    from flowstone.partitions.codec import PartitionValue
    from flowstone.results import RunResult

BACKFILL_BATCH: Final = 1000
MAX_REQUESTED_BY: Final = 150
"""The longest ``requested_by`` a run records (its column's length)."""
MAX_IDEMPOTENCY_KEY: Final = 128
"""The longest ``idempotency_key`` a run records (its column's length)."""


def _asset_name(asset: str | AssetFunction) -> str:
    if isinstance(asset, str):
        return asset
    definition = definition_of(asset)
    if definition is None:
        raise ValidationFailedError(f"{asset!r} is neither an asset name nor an @asset function")
    return definition.name


def _json_object(value: object, *, what: str) -> dict[str, Any]:
    """A checked copy of a JSON object option; ``None`` means not given (an empty object)."""
    return {} if value is None else validate_json_object(value, what=what)


def _objects_by_name(
    value: object, *, what: str, allow_null: bool = False
) -> dict[str, dict[str, Any] | None]:
    """A checked ``{name: {options}}`` option (``io_overrides``, ``resources``)."""
    data = _json_object(value, what=what)
    for name, options in data.items():
        if not (isinstance(options, dict) or (allow_null and options is None)):
            kind = "a JSON object or None" if allow_null else "a JSON object"
            raise ValidationFailedError(
                f"{what}[{json.dumps(name)[:40]}]: must be {kind} of options, "
                f"not {type(options).__name__}"
            )
    return data


@dataclass(frozen=True, kw_only=True, slots=True)
class RunOptions:
    """Options every run function accepts."""

    config: Mapping[str, Any] | None = None
    io_overrides: Mapping[str, Any] | None = None
    resources: Mapping[str, Mapping[str, Any] | None] | None = None
    tags: Mapping[str, Any] | None = None
    requested_by: str = ""
    idempotency_key: str = ""
    actor_type: str = "system"

    def request(
        self,
        registry: Registry,
        *,
        kind: RunKind,
        selection: list[str],
        steps: Iterable[services.StepRequest],
        is_in_process: bool,
        max_parallel: int | None = None,
    ) -> services.RunRequest:
        """Validate the options and build the run request."""
        resources = _objects_by_name(self.resources, what="resources", allow_null=True)
        given = {k: v for k, v in resources.items() if v is not None}
        unknown = sorted(set(given) - set(registry.resources))
        if unknown:
            raise ValidationFailedError(f"cannot override unknown resource(s) {unknown}")
        if max_parallel is not None and (
            isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1
        ):
            raise ValidationFailedError("max_parallel must be a positive integer")
        return services.RunRequest(
            kind=kind,
            selection=selection,
            steps=steps,
            is_in_process=is_in_process,
            max_parallel=max_parallel,
            options=_json_object(self.config, what="config"),
            io_overrides=_objects_by_name(self.io_overrides, what="io_overrides"),
            resource_overrides=given,
            tags=_json_object(self.tags, what="tags"),
            requested_by=validate_text(
                self.requested_by, what="requested_by", max_length=MAX_REQUESTED_BY
            ),
            actor_type=validate_text(self.actor_type, what="actor_type", max_length=16),
            idempotency_key=validate_text(
                self.idempotency_key, what="idempotency_key", max_length=MAX_IDEMPOTENCY_KEY
            ),
        )


def _planned_request(
    asset: str | AssetFunction,
    partition: object,
    options: RunOptions,
    *,
    kind: RunKind,
    is_in_process: bool,
) -> tuple[Registry, services.RunRequest]:
    registry = get_registry()
    definition = registry.get(_asset_name(asset))
    store = services.DatabaseDynamicKeyStore()
    value = validate_partition(definition, partition, store)
    steps = planned_steps(
        registry,
        [(definition.name, value)],
        include_upstreams=kind == RunKind.MATERIALIZE_ALL,
        store=store,
    )
    request = options.request(
        registry, kind=kind, selection=[definition.name], steps=steps, is_in_process=is_in_process
    )
    return registry, request


def planned_steps(
    registry: Registry,
    targets: Sequence[tuple[str, PartitionValue | None]],
    *,
    include_upstreams: bool,
    store: services.DatabaseDynamicKeyStore,
) -> list[services.StepRequest]:
    """The step rows of a run for validated ``targets``, each with its in-run upstream keys."""
    plan = plan_steps(registry, targets, include_upstreams=include_upstreams, store=store)
    in_plan = {step.key for step in plan}
    return [
        services.StepRequest(
            asset=step.asset,
            partition_key=step.partition_key,
            code_version=registry.get(step.asset).spec.code_version or "",
            upstream_keys=tuple(
                (i.asset, key)
                for i in step.inputs
                for key in i.partition_keys
                if (i.asset, key) in in_plan
            ),
        )
        for step in plan
    ]


def _start_async(request: services.RunRequest) -> RunHandle:
    """Record the run; its steps are sent after commit, or by the relay if the broker is down."""
    created = services.create_run(request)
    return RunHandle(str(created.run.pk))


def materialize(
    asset: str | AssetFunction,
    partition: object = None,
    *,
    include_values: bool = False,
    progress: Progress | None = None,
    **options: Any,
) -> RunResult:
    """Materialize one asset partition now, in this process, reading upstreams' latest successes.

    ``partition`` is a partition value (a ``date``, a string, a tuple ...), not an encoded key.
    Options: ``config``, ``io_overrides``, ``resources``, ``tags``, ``requested_by``.
    ``progress`` is called after each step attempt, as for ``backfill``.
    """
    registry, request = _planned_request(
        asset, partition, RunOptions(**options), kind=RunKind.MATERIALIZE, is_in_process=True
    )
    created = services.create_run(request)
    return run_in_process(
        registry, created.run.pk, created.ready, include_values=include_values, progress=progress
    )


def materialize_all(
    asset: str | AssetFunction,
    partition: object = None,
    *,
    include_values: bool = False,
    progress: Progress | None = None,
    **options: Any,
) -> RunResult:
    """Materialize an asset partition and every upstream step it needs, in DAG order, now."""
    registry, request = _planned_request(
        asset, partition, RunOptions(**options), kind=RunKind.MATERIALIZE_ALL, is_in_process=True
    )
    created = services.create_run(request)
    return run_in_process(
        registry, created.run.pk, created.ready, include_values=include_values, progress=progress
    )


def materialize_async(
    asset: str | AssetFunction, partition: object = None, **options: Any
) -> RunHandle:
    """Enqueue one asset partition for the Celery workers and return its ``RunHandle``."""
    _, request = _planned_request(
        asset, partition, RunOptions(**options), kind=RunKind.MATERIALIZE, is_in_process=False
    )
    return _start_async(request)


def materialize_all_async(
    asset: str | AssetFunction, partition: object = None, **options: Any
) -> RunHandle:
    """Enqueue an asset partition and its upstream steps; workers run them in DAG order."""
    _, request = _planned_request(
        asset, partition, RunOptions(**options), kind=RunKind.MATERIALIZE_ALL, is_in_process=False
    )
    return _start_async(request)


def _backfill_steps(
    definition: AssetDefinition, values: Iterable[object] | None, *, force: bool
) -> Iterator[services.StepRequest]:
    """Validated steps for ``values``; ``None`` means every partition of the asset.

    Every partition is generated by the definition itself (valid and distinct by construction),
    so those keys are streamed without validating them again or remembering the ones seen, and
    memory stays flat in the partition count. Values a caller passes are validated and deduped.
    """
    store = services.DatabaseDynamicKeyStore()
    partitions = definition.spec.partitions
    if values is None and partitions is not None:
        every = (encode_partition_key(value) for value in partitions.iter_keys(store=store))
        return _new_steps(definition, every, force=force, distinct=True)
    given = (
        encode_partition_key(validate_partition(definition, value, store)) for value in values or ()
    )
    return _new_steps(definition, given, force=force, distinct=False)


def _new_steps(
    definition: AssetDefinition, keys: Iterable[str], *, force: bool, distinct: bool
) -> Iterator[services.StepRequest]:
    """Steps for ``keys`` in batches; keys whose latest run succeeded skipped unless ``force``."""
    iterator = iter(keys)
    seen: set[str] = set()
    while batch := list(itertools.islice(iterator, BACKFILL_BATCH)):
        done = set() if force else services.keys_with_success(definition.name, batch)
        for key in dict.fromkeys(batch):
            if key in done or key in seen:
                continue
            if not distinct:
                seen.add(key)
            yield services.StepRequest(
                asset=definition.name,
                partition_key=key,
                code_version=definition.spec.code_version or "",
            )


def _backfill_request(
    asset: str | AssetFunction,
    partitions: Iterable[object] | None,
    options: RunOptions,
    *,
    max_parallel: int | None,
    force: bool,
    is_in_process: bool,
) -> tuple[Registry, services.RunRequest]:
    registry = get_registry()
    definition = registry.get(_asset_name(asset))
    if definition.spec.partitions is None:
        raise ValidationFailedError(
            f"asset {definition.name!r} is not partitioned; use materialize"
        )
    request = options.request(
        registry,
        kind=RunKind.BACKFILL,
        selection=[definition.name],
        steps=_backfill_steps(definition, partitions, force=force),
        is_in_process=is_in_process,
        max_parallel=max_parallel,
    )
    return registry, request


def backfill(
    asset: str | AssetFunction,
    partitions: Iterable[object] | None = None,
    *,
    force: bool = False,
    include_values: bool = False,
    progress: Progress | None = None,
    **options: Any,
) -> RunResult:
    """Materialize many partitions of one asset in this process, one after another.

    ``partitions=None`` means every partition of the asset. Partitions whose latest
    materialization succeeded are skipped unless ``force``. ``progress`` is called after each
    step attempt.
    """
    registry, request = _backfill_request(
        asset, partitions, RunOptions(**options), max_parallel=None, force=force, is_in_process=True
    )
    created = services.create_run(request)
    return run_in_process(
        registry, created.run.pk, created.ready, include_values=include_values, progress=progress
    )


def backfill_async(
    asset: str | AssetFunction,
    partitions: Iterable[object] | None = None,
    *,
    max_parallel: int | None = None,
    force: bool = False,
    **options: Any,
) -> RunHandle:
    """Enqueue a backfill; at most ``max_parallel`` of its steps are queued or running at once."""
    _, request = _backfill_request(
        asset,
        partitions,
        RunOptions(**options),
        max_parallel=max_parallel,
        force=force,
        is_in_process=False,
    )
    return _start_async(request)


def _reexecution_request(
    run_id: object, *, is_in_process: bool, requested_by: str, actor_type: str, idempotency_key: str
) -> services.RunRequest:
    return services.reexecution_request(
        validate_text(str(run_id), what="run_id", max_length=64),
        is_in_process=is_in_process,
        requested_by=validate_text(requested_by, what="requested_by", max_length=MAX_REQUESTED_BY),
        actor_type=validate_text(actor_type, what="actor_type", max_length=16),
        idempotency_key=validate_text(
            idempotency_key, what="idempotency_key", max_length=MAX_IDEMPOTENCY_KEY
        ),
    )


def reexecute(
    run_id: object,
    *,
    include_values: bool = False,
    progress: Progress | None = None,
    requested_by: str = "",
    actor_type: str = "system",
) -> RunResult:
    """Re-execute a finished run from its failures, in this process; return the new run's result.

    The new run holds the steps of ``run_id`` that failed, were skipped for a failed upstream, or
    were canceled, with the run's config. Its steps read their other upstreams from the
    successes of ``run_id`` (reused, not recomputed), and their lineage points at them.
    ``RunStateError`` for a run still going or with nothing to re-execute.
    """
    request = _reexecution_request(
        run_id,
        is_in_process=True,
        requested_by=requested_by,
        actor_type=actor_type,
        idempotency_key="",
    )
    created = services.create_run(request)
    return run_in_process(
        get_registry(),
        created.run.pk,
        created.ready,
        include_values=include_values,
        progress=progress,
    )


def reexecute_async(
    run_id: object,
    *,
    requested_by: str = "",
    actor_type: str = "system",
    idempotency_key: str = "",
) -> RunHandle:
    """Enqueue a re-execution of a finished run from its failures (see ``reexecute``)."""
    return _start_async(
        _reexecution_request(
            run_id,
            is_in_process=False,
            requested_by=requested_by,
            actor_type=actor_type,
            idempotency_key=idempotency_key,
        )
    )


def load_value(asset: str | AssetFunction, partition: object = None) -> Any:
    """Load the value of an asset partition's latest successful materialization.

    The value is the one that success recorded (its attempt's version, with the IO overrides of
    the run that made it), the same value a downstream step would read now. Raises
    ``MaterializationNotFoundError`` if the partition has never succeeded.
    """
    registry = get_registry()
    definition = registry.get(_asset_name(asset))
    value = validate_partition(definition, partition, services.DatabaseDynamicKeyStore())
    key = encode_partition_key(value)
    latest = services.latest_successful(definition.name, key)
    if latest is None:
        raise MaterializationNotFoundError(
            f"asset {definition.name!r} has no successful materialization for partition {key!r}",
            asset=definition.name,
            partition=key,
        )
    target = recorded_target(definition, latest, latest.run.config)
    with io_guard(definition.spec.io_manager, "load"):
        return registry.io_manager_for(definition).load(target)
