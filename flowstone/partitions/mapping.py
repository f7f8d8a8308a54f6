"""Partition mappings: which upstream partitions one downstream partition reads.

An asset depends on each upstream through a mapping. ``IdentityPartitionMapping`` is the default;
assets partitioned differently from an upstream must declare another one
(``requires_explicit_mapping``), and ``check_mapping`` says when a declared mapping cannot apply.
A fan-in mapping (``is_fan_in``) may select several upstream partitions, so the asset function
receives a dict ``{upstream partition value: value}`` for that upstream instead of one value.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from flowstone.errors import DefinitionError, PartitionKeyError
from flowstone.partitions.multi import DIMENSION_NAME_PATTERN, MultiPartitions
from flowstone.partitions.static import StaticPartitions
from flowstone.partitions.time_window import TimeWindowPartitions

if TYPE_CHECKING:
    from flowstone.partitions.base import DynamicKeyStore, PartitionsDefinition
    from flowstone.partitions.codec import PartitionValue

_MAX_LISTED_KEYS: Final = 5


class PartitionMapping(ABC):
    """How the partitions of a downstream asset map to the partitions of one upstream asset."""

    __slots__ = ()

    @property
    @abstractmethod
    def is_fan_in(self) -> bool:
        """Whether one downstream partition may read several upstream partitions (as a dict)."""

    @abstractmethod
    def upstream_values(
        self,
        downstream_value: PartitionValue | None,
        *,
        downstream: PartitionsDefinition | None,
        upstream: PartitionsDefinition | None,
        store: DynamicKeyStore | None = None,
    ) -> list[PartitionValue | None]:
        """Return the upstream partition values (``[None]``: unpartitioned) one partition reads."""

    @abstractmethod
    def check(
        self, *, downstream: PartitionsDefinition | None, upstream: PartitionsDefinition | None
    ) -> str | None:
        """Return why this mapping cannot connect the two definitions, or ``None`` if it can."""


@dataclass(frozen=True, kw_only=True, slots=True)
class IdentityPartitionMapping(PartitionMapping):
    """The default: read the upstream partition with the same value (or the unpartitioned one)."""

    @property
    def is_fan_in(self) -> bool:
        """Never: one downstream partition reads one upstream partition."""
        return False

    def upstream_values(
        self,
        downstream_value: PartitionValue | None,
        *,
        downstream: PartitionsDefinition | None,
        upstream: PartitionsDefinition | None,
        store: DynamicKeyStore | None = None,
    ) -> list[PartitionValue | None]:
        """Return ``[None]`` for an unpartitioned upstream, else ``[downstream_value]``."""
        del downstream  # the shared signature; identity only needs the upstream
        if upstream is None:
            return [None]
        if downstream_value is None:
            msg = f"an unpartitioned asset cannot read {upstream!r} through the identity mapping"
            raise PartitionKeyError(msg)
        return [upstream.validate(downstream_value, store=store)]

    def check(
        self, *, downstream: PartitionsDefinition | None, upstream: PartitionsDefinition | None
    ) -> str | None:
        """Apply when the upstream is unpartitioned or partitioned like the downstream."""
        if upstream is None:
            return None
        if downstream is None:
            return (
                f"the asset is not partitioned but its upstream is ({upstream!r}); "
                "use AllPartitionsMapping() to read every upstream partition"
            )
        return _identity_problem(downstream, upstream)


@dataclass(frozen=True, kw_only=True, slots=True)
class TimeWindowPartitionMapping(PartitionMapping):
    """Read the upstream time windows that overlap the downstream window, at any cadences.

    A weekly asset over a daily one reads the 7 days of its week; a daily asset over a weekly one
    reads the week containing its day (as a one-entry dict). Upstream windows outside the
    upstream's ``start``/``end`` are left out.
    """

    @property
    def is_fan_in(self) -> bool:
        """Always: a downstream window may overlap several upstream windows."""
        return True

    def upstream_values(
        self,
        downstream_value: PartitionValue | None,
        *,
        downstream: PartitionsDefinition | None,
        upstream: PartitionsDefinition | None,
        store: DynamicKeyStore | None = None,
    ) -> list[PartitionValue | None]:
        """Return the upstream window starts overlapping the downstream window, in order."""
        del store  # the shared signature; time windows need no store
        if isinstance(downstream, TimeWindowPartitions) and isinstance(
            upstream, TimeWindowPartitions
        ):
            start, end = downstream.window(downstream_value)
            return list(upstream.keys_overlapping(start, end))
        raise PartitionKeyError(str(self.check(downstream=downstream, upstream=upstream)))

    def check(
        self, *, downstream: PartitionsDefinition | None, upstream: PartitionsDefinition | None
    ) -> str | None:
        """Apply only between two ``TimeWindowPartitions``."""
        for side, definition in (("asset", downstream), ("upstream", upstream)):
            if not isinstance(definition, TimeWindowPartitions):
                return (
                    f"TimeWindowPartitionMapping needs time-window partitions on both sides, "
                    f"but the {side} has {definition!r}"
                )
        return None


@dataclass(frozen=True, kw_only=True, slots=True)
class AllPartitionsMapping(PartitionMapping):
    """Read every partition of the upstream (e.g. an unpartitioned summary over daily data)."""

    @property
    def is_fan_in(self) -> bool:
        """Always: every upstream partition is read."""
        return True

    def upstream_values(
        self,
        downstream_value: PartitionValue | None,
        *,
        downstream: PartitionsDefinition | None,
        upstream: PartitionsDefinition | None,
        store: DynamicKeyStore | None = None,
    ) -> list[PartitionValue | None]:
        """Return all upstream partition values (``[None]`` for an unpartitioned upstream)."""
        del downstream_value, downstream  # the shared signature; every partition reads them all
        if upstream is None:
            return [None]
        return list(upstream.keys(store=store))

    def check(
        self,
        *,
        downstream: PartitionsDefinition | None,
        upstream: PartitionsDefinition | None,
    ) -> str | None:
        """Apply to any partitioned upstream."""
        del downstream  # the shared signature; any downstream may read all partitions
        if upstream is None:
            return "AllPartitionsMapping needs a partitioned upstream, but it is unpartitioned"
        return None


@dataclass(frozen=True, kw_only=True, slots=True)
class DimensionPartitionMapping(PartitionMapping):
    """Map one dimension of a ``MultiPartitions`` asset to an upstream through ``mapping``.

    ``DimensionPartitionMapping(dimension="date")`` lets a (tenant, date) asset read the
    partition of a daily upstream that has the same date.
    """

    dimension: str
    mapping: PartitionMapping = field(default_factory=IdentityPartitionMapping)

    def __post_init__(self) -> None:
        if not isinstance(self.dimension, str) or not DIMENSION_NAME_PATTERN.fullmatch(
            self.dimension
        ):
            msg = f"DimensionPartitionMapping: invalid dimension name {self.dimension!r}"
            raise DefinitionError(msg)
        if not isinstance(self.mapping, PartitionMapping):
            msg = (
                "DimensionPartitionMapping: mapping must be a PartitionMapping, "
                f"got {self.mapping!r}"
            )
            raise DefinitionError(msg)

    @property
    def is_fan_in(self) -> bool:
        """Whether the inner mapping is fan-in."""
        return self.mapping.is_fan_in

    def upstream_values(
        self,
        downstream_value: PartitionValue | None,
        *,
        downstream: PartitionsDefinition | None,
        upstream: PartitionsDefinition | None,
        store: DynamicKeyStore | None = None,
    ) -> list[PartitionValue | None]:
        """Apply the inner mapping to this dimension's element of the downstream value."""
        problem = self.check(downstream=downstream, upstream=upstream)
        if problem is not None or not isinstance(downstream, MultiPartitions):
            raise PartitionKeyError(str(problem))
        value = downstream.validate(downstream_value, store=store)
        index = downstream.dimension_names.index(self.dimension)
        element = value[index] if isinstance(value, tuple) else value
        return self.mapping.upstream_values(
            element,
            downstream=downstream.dimension(self.dimension),
            upstream=upstream,
            store=store,
        )

    def check(
        self, *, downstream: PartitionsDefinition | None, upstream: PartitionsDefinition | None
    ) -> str | None:
        """Apply when the asset has this dimension and the inner mapping fits it."""
        if not isinstance(downstream, MultiPartitions):
            return f"DimensionPartitionMapping needs a MultiPartitions asset, got {downstream!r}"
        if self.dimension not in downstream.dimension_names:
            return (
                f"the asset has no dimension {self.dimension!r}; its dimensions are "
                f"{downstream.dimension_names!r}"
            )
        return self.mapping.check(
            downstream=downstream.dimension(self.dimension), upstream=upstream
        )


def requires_explicit_mapping(
    downstream: PartitionsDefinition | None, upstream: PartitionsDefinition | None
) -> bool:
    """Whether the identity default cannot connect the two and a mapping must be declared.

    True when both sides are partitioned differently, or when an unpartitioned asset reads a
    partitioned upstream.
    """
    if upstream is None:
        return False
    return downstream is None or downstream != upstream


def check_mapping(
    mapping: PartitionMapping,
    downstream: PartitionsDefinition | None,
    upstream: PartitionsDefinition | None,
) -> str | None:
    """Return why ``mapping`` cannot connect ``downstream`` to ``upstream``, or ``None``."""
    if not isinstance(mapping, PartitionMapping):
        return f"{mapping!r} is not a PartitionMapping"
    return mapping.check(downstream=downstream, upstream=upstream)


def _identity_problem(
    downstream: PartitionsDefinition, upstream: PartitionsDefinition
) -> str | None:
    """Say why identity cannot map ``downstream`` values onto ``upstream``, or return ``None``."""
    if downstream == upstream:
        return None
    if type(downstream) is not type(upstream):
        return (
            f"the identity mapping needs both sides partitioned alike, got "
            f"{type(downstream).__name__} and {type(upstream).__name__}"
        )
    if isinstance(downstream, TimeWindowPartitions) and isinstance(upstream, TimeWindowPartitions):
        ours = (downstream.cadence, downstream.timezone, downstream.week_start)
        theirs = (upstream.cadence, upstream.timezone, upstream.week_start)
        if ours != theirs:
            return (
                f"the identity mapping needs the same windows, got {downstream!r} and "
                f"{upstream!r}; use TimeWindowPartitionMapping()"
            )
    if isinstance(downstream, StaticPartitions) and isinstance(upstream, StaticPartitions):
        missing = [key for key in downstream.partition_keys if key not in upstream.partition_keys]
        if missing:
            return f"the upstream has no partitions {missing[:_MAX_LISTED_KEYS]!r}"
    if isinstance(downstream, MultiPartitions) and isinstance(upstream, MultiPartitions):
        return _identity_problem_multi(downstream, upstream)
    return None


def _identity_problem_multi(downstream: MultiPartitions, upstream: MultiPartitions) -> str | None:
    """Check identity dimension by dimension."""
    if downstream.dimension_names != upstream.dimension_names:
        return (
            f"the identity mapping needs the same dimensions, got "
            f"{downstream.dimension_names!r} and {upstream.dimension_names!r}"
        )
    for (name, ours), (_, theirs) in zip(downstream.dimensions, upstream.dimensions, strict=True):
        problem = _identity_problem(ours, theirs)
        if problem is not None:
            return f"dimension {name!r}: {problem}"
    return None
