"""Asset specs, asset definitions and the ``@asset`` decorator.

The decorator does not wrap the function: it validates its options, attaches an
``AssetDefinition`` to the function as ``__flowstone_asset__`` and returns the function unchanged.
Discovery (``flowstone.registry``) collects those definitions from the modules named in
``FLOWSTONE["DEFINITIONS"]``; nothing is registered as an import side effect.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, overload

from flowstone.errors import DefinitionError
from flowstone.partitions import PartitionMapping, PartitionsDefinition

if TYPE_CHECKING:
    from flowstone.checkpoints import CheckpointSpec

ASSET_NAME_PATTERN: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
CONTEXT_PARAMETER: Final = "context"
DEFINITION_ATTRIBUTE: Final = "__flowstone_asset__"
DEFAULT_IO_MANAGER: Final = "default"
QUEUE_NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9_.\-]{1,128}\Z")

AssetFunction = Callable[..., Any]


def validate_asset_name(name: object, *, what: str = "asset name") -> str:
    """Return ``name`` if it is a valid asset name, else raise ``DefinitionError``."""
    if not isinstance(name, str) or not ASSET_NAME_PATTERN.match(name):
        raise DefinitionError(
            f"invalid {what} {name!r}: names must match {ASSET_NAME_PATTERN.pattern[:-2]}$ "
            "(a letter or underscore, then up to 127 letters, digits or underscores)"
        )
    return name


def _frozen_json(value: Mapping[str, Any] | None, *, what: str) -> Mapping[str, Any]:
    """Check that ``value`` is a JSON object and return a read-only copy of it."""
    data = dict(value or {})
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DefinitionError(f"{what} must be JSON-serializable: {exc}") from exc
    if any(not isinstance(key, str) for key in data):
        raise DefinitionError(f"{what} keys must be strings")
    return MappingProxyType(data)


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """How often and how patiently a step is retried after a retryable error."""

    max_retries: int = 0
    backoff_seconds: float = 1.0
    backoff_factor: float = 2.0
    max_backoff_seconds: float = 300.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise DefinitionError("RetryPolicy.max_retries must be an integer")
        if self.max_retries < 0:
            raise DefinitionError("RetryPolicy.max_retries must be >= 0")
        if self.backoff_seconds < 0 or self.max_backoff_seconds < 0:
            raise DefinitionError("RetryPolicy backoff times must be >= 0")
        if self.backoff_factor < 1:
            raise DefinitionError("RetryPolicy.backoff_factor must be >= 1")

    def delay_for(self, attempt: int) -> float:
        """Return the backoff (seconds, before jitter) after failed attempt number ``attempt``."""
        delay = self.backoff_seconds * self.backoff_factor ** max(attempt - 1, 0)
        return float(min(delay, self.max_backoff_seconds))


DEFAULT_RETRY_POLICY: Final = RetryPolicy()


@dataclass(frozen=True, kw_only=True, slots=True)
class AssetSpec:
    """Everything FlowStone knows about an asset except its function; immutable."""

    name: str
    deps: tuple[str, ...] = ()
    description: str = ""
    partitions: PartitionsDefinition | None = None
    partition_mappings: Mapping[str, PartitionMapping] = field(
        default_factory=lambda: MappingProxyType({})
    )
    io_manager: str = DEFAULT_IO_MANAGER
    io_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    resources: frozenset[str] = frozenset()
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY
    tags: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    code_version: str | None = None
    concurrency_limit: int | None = None
    queue: str | None = None

    def __post_init__(self) -> None:
        validate_asset_name(self.name)
        for dep in self.deps:
            validate_asset_name(dep, what=f"dependency of {self.name!r}")
        if len(set(self.deps)) != len(self.deps):
            raise DefinitionError(f"asset {self.name!r} lists a dependency twice")
        if self.name in self.deps:
            raise DefinitionError(f"asset {self.name!r} depends on itself")
        if self.partitions is not None and not isinstance(self.partitions, PartitionsDefinition):
            raise DefinitionError(f"asset {self.name!r}: partitions must be a PartitionsDefinition")
        for dep, mapping in self.partition_mappings.items():
            if dep not in self.deps:
                raise DefinitionError(
                    f"asset {self.name!r} has a partition mapping for {dep!r}, "
                    "which is not one of its dependencies"
                )
            if not isinstance(mapping, PartitionMapping):
                raise DefinitionError(
                    f"asset {self.name!r}: the mapping for {dep!r} must be a PartitionMapping"
                )
        validate_asset_name(self.io_manager, what=f"IO manager key of {self.name!r}")
        for resource in self.resources:
            validate_asset_name(resource, what=f"resource name required by {self.name!r}")
        if self.concurrency_limit is not None and (
            isinstance(self.concurrency_limit, bool)
            or not isinstance(self.concurrency_limit, int)
            or self.concurrency_limit < 1
        ):
            raise DefinitionError(f"asset {self.name!r}: concurrency_limit must be a positive int")
        if self.queue is not None and not QUEUE_NAME_PATTERN.match(self.queue):
            raise DefinitionError(
                f"asset {self.name!r}: queue {self.queue!r} must match {QUEUE_NAME_PATTERN.pattern}"
            )

    @property
    def is_partitioned(self) -> bool:
        """Whether the asset is split into partitions."""
        return self.partitions is not None


@dataclass(frozen=True, kw_only=True, slots=True)
class AssetDefinition:
    """An asset spec plus the function that computes it."""

    spec: AssetSpec
    fn: AssetFunction = field(compare=False)
    value_parameters: tuple[str, ...] = ()
    wants_context: bool = False
    checkpoint: CheckpointSpec | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """The asset's unique name."""
        return self.spec.name

    @property
    def module(self) -> str:
        """The module the asset function was defined in."""
        return str(getattr(self.fn, "__module__", ""))


def _dep_name(dep: str | AssetFunction) -> str:
    if isinstance(dep, str):
        return dep
    definition = getattr(dep, DEFINITION_ATTRIBUTE, None)
    if isinstance(definition, AssetDefinition):
        return definition.name
    raise DefinitionError(f"dependency {dep!r} is neither an asset name nor an @asset function")


def _value_parameters(fn: AssetFunction, asset_name: str) -> tuple[tuple[str, ...], bool]:
    """Return the upstream names taken from ``fn``'s parameters and whether it wants a context."""
    names: list[str] = []
    wants_context = False
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise DefinitionError(
                f"asset {asset_name!r}: *args/**kwargs are not allowed; "
                "name each upstream asset as a parameter"
            )
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise DefinitionError(
                f"asset {asset_name!r}: positional-only parameters are not allowed"
            )
        if parameter.name == CONTEXT_PARAMETER:
            wants_context = True
            continue
        validate_asset_name(parameter.name, what=f"upstream asset parameter of {asset_name!r}")
        names.append(parameter.name)
    return tuple(names), wants_context


def build_asset_definition(
    fn: AssetFunction,
    *,
    name: str | None = None,
    deps: Iterable[str | AssetFunction] = (),
    description: str | None = None,
    partitions: PartitionsDefinition | None = None,
    partition_mappings: Mapping[str, PartitionMapping] | None = None,
    io_manager: str | None = None,
    io_options: Mapping[str, Any] | None = None,
    resources: Iterable[str] = (),
    retry_policy: RetryPolicy | None = None,
    tags: Mapping[str, Any] | None = None,
    code_version: str | None = None,
    concurrency_limit: int | None = None,
    queue: str | None = None,
) -> AssetDefinition:
    """Validate the options given to ``@asset`` and build the definition for ``fn``."""
    if not callable(fn):
        raise DefinitionError(f"@asset must decorate a function, got {fn!r}")
    asset_name = validate_asset_name(name if name is not None else fn.__name__)
    value_parameters, wants_context = _value_parameters(fn, asset_name)
    explicit = [_dep_name(dep) for dep in deps]
    all_deps = tuple(dict.fromkeys([*explicit, *value_parameters]))
    if isinstance(resources, str):
        raise DefinitionError(f"asset {asset_name!r}: resources must be a list of names")
    spec = AssetSpec(
        name=asset_name,
        deps=all_deps,
        description=description if description is not None else inspect.getdoc(fn) or "",
        partitions=partitions,
        partition_mappings=MappingProxyType(dict(partition_mappings or {})),
        io_manager=io_manager if io_manager is not None else DEFAULT_IO_MANAGER,
        io_options=_frozen_json(io_options, what=f"io_options of {asset_name!r}"),
        resources=frozenset(resources),
        retry_policy=retry_policy if retry_policy is not None else DEFAULT_RETRY_POLICY,
        tags=_frozen_json(tags, what=f"tags of {asset_name!r}"),
        code_version=code_version,
        concurrency_limit=concurrency_limit,
        queue=queue,
    )
    return AssetDefinition(
        spec=spec, fn=fn, value_parameters=value_parameters, wants_context=wants_context
    )


@overload
def asset(fn: AssetFunction, /) -> AssetFunction: ...


@overload
def asset(
    *,
    name: str | None = None,
    deps: Iterable[str | AssetFunction] = (),
    description: str | None = None,
    partitions: PartitionsDefinition | None = None,
    partition_mappings: Mapping[str, PartitionMapping] | None = None,
    io_manager: str | None = None,
    io_options: Mapping[str, Any] | None = None,
    resources: Iterable[str] = (),
    retry_policy: RetryPolicy | None = None,
    tags: Mapping[str, Any] | None = None,
    code_version: str | None = None,
    concurrency_limit: int | None = None,
    queue: str | None = None,
) -> Callable[[AssetFunction], AssetFunction]: ...


def asset(
    fn: AssetFunction | None = None, /, **options: Any
) -> AssetFunction | Callable[[AssetFunction], AssetFunction]:
    """Declare a function as an asset; works bare (``@asset``) or called (``@asset(...)``).

    Upstream assets are the function's parameters (``context`` excepted) plus ``deps``; each
    parameter receives the loaded value of the upstream asset of the same name.
    """

    def decorate(function: AssetFunction) -> AssetFunction:
        definition = build_asset_definition(function, **options)
        setattr(function, DEFINITION_ATTRIBUTE, definition)
        return function

    return decorate(fn) if fn is not None else decorate


def definition_of(obj: object) -> AssetDefinition | None:
    """Return the asset definition attached to ``obj`` by ``@asset``, if any."""
    definition = getattr(obj, DEFINITION_ATTRIBUTE, None)
    return definition if isinstance(definition, AssetDefinition) else None
