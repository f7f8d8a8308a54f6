"""Multi-dimensional partitions: the cartesian product of named dimensions (e.g. tenant x date)."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from flowstone.errors import DefinitionError, PartitionKeyError
from flowstone.partitions.base import PartitionsDefinition
from flowstone.partitions.codec import format_partition_value

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from flowstone.partitions.base import DynamicKeyStore
    from flowstone.partitions.codec import PartitionValue

DIMENSION_NAME_PATTERN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
"""What a dimension name looks like."""


@dataclass(frozen=True, kw_only=True, slots=True, init=False)
class MultiPartitions(PartitionsDefinition):
    """Partitions over several named dimensions; a value is a tuple with one value per dimension.

    ``MultiPartitions(dimensions={"tenant": StaticPartitions(...), "date": DailyPartitions(...)})``
    has values like ``("acme", date(2025, 1, 3))``. The order of the dimensions is the order of the
    tuple. On the command line a value is written as a JSON array of each dimension's text, e.g.
    ``["acme", "2025-01-03"]``. Dimensions cannot be ``MultiPartitions`` themselves.
    """

    dimensions: tuple[tuple[str, PartitionsDefinition], ...]

    # A custom constructor so ``dimensions`` may be a dict, while the stored tuple of pairs keeps
    # the definition hashable.
    def __init__(
        self,
        *,
        dimensions: Mapping[str, PartitionsDefinition] | Iterable[tuple[str, PartitionsDefinition]],
    ) -> None:
        items = dimensions.items() if isinstance(dimensions, Mapping) else dimensions
        try:
            pairs = tuple((name, definition) for name, definition in items)
        except (TypeError, ValueError) as exc:
            msg = "MultiPartitions: dimensions must be a mapping or (name, definition) pairs"
            raise DefinitionError(msg) from exc
        object.__setattr__(self, "dimensions", pairs)
        self.__post_init__()

    def __post_init__(self) -> None:
        if not self.dimensions:
            msg = "MultiPartitions needs at least one dimension"
            raise DefinitionError(msg)
        for name, definition in self.dimensions:
            if not isinstance(name, str) or not DIMENSION_NAME_PATTERN.fullmatch(name):
                msg = (
                    f"MultiPartitions: invalid dimension name {name!r}; names must match "
                    f"{DIMENSION_NAME_PATTERN.pattern}"
                )
                raise DefinitionError(msg)
            if isinstance(definition, MultiPartitions):
                msg = f"MultiPartitions: dimension {name!r} cannot itself be a MultiPartitions"
                raise DefinitionError(msg)
            if not isinstance(definition, PartitionsDefinition):
                msg = (
                    f"MultiPartitions: dimension {name!r} must be a PartitionsDefinition, "
                    f"got {definition!r}"
                )
                raise DefinitionError(msg)
        names = self.dimension_names
        if len(set(names)) != len(names):
            msg = f"MultiPartitions: duplicate dimension names in {names!r}"
            raise DefinitionError(msg)

    @property
    def dimension_names(self) -> tuple[str, ...]:
        """Return the dimension names, in tuple order."""
        return tuple(name for name, _ in self.dimensions)

    def dimension(self, name: str) -> PartitionsDefinition:
        """Return the definition of dimension ``name``."""
        for dimension_name, definition in self.dimensions:
            if dimension_name == name:
                return definition
        msg = (
            f"{self.describe()} have no dimension {name!r}; the dimensions are "
            f"{', '.join(self.dimension_names)}"
        )
        raise DefinitionError(msg)

    def describe(self) -> str:
        """``partitions by tenant (static partitions a, b) x date (daily partitions from ...)``."""
        parts = " x ".join(f"{name} ({d.describe()})" for name, d in self.dimensions)
        return f"partitions by {parts}"

    def keys(
        self, *, store: DynamicKeyStore | None = None, now: datetime | None = None
    ) -> list[PartitionValue]:
        """Return every combination of the dimensions' values (cartesian product, in order)."""
        per_dimension = [definition.keys(store=store, now=now) for _, definition in self.dimensions]
        return list(itertools.product(*per_dimension))

    def validate(self, value: object, *, store: DynamicKeyStore | None = None) -> PartitionValue:
        """Return ``value`` with each element validated by its dimension, or raise."""
        if not isinstance(value, tuple) or len(value) != len(self.dimensions):
            msg = (
                f"{self.describe()} take a tuple of {len(self.dimensions)} values "
                f"({', '.join(self.dimension_names)}), got {format_partition_value(value)}"
            )
            raise PartitionKeyError(msg)
        result: list[PartitionValue] = []
        for (name, definition), element in zip(self.dimensions, value, strict=True):
            try:
                result.append(definition.validate(element, store=store))
            except PartitionKeyError as exc:
                msg = f"dimension {name!r}: {exc.message}"
                raise PartitionKeyError(msg) from exc
        return tuple(result)

    def parse(self, text: str) -> PartitionValue:
        """Parse a JSON array of per-dimension texts, e.g. ``["acme", "2025-01-03"]``."""
        try:
            texts = json.loads(text)
        except (TypeError, ValueError) as exc:
            msg = f"{text!r} is not JSON; write a JSON array such as {self._example()}"
            raise PartitionKeyError(msg) from exc
        if (
            not isinstance(texts, list)
            or len(texts) != len(self.dimensions)
            or not all(isinstance(item, str) for item in texts)
        ):
            msg = (
                f"{text!r} must be a JSON array of {len(self.dimensions)} strings "
                f"({', '.join(self.dimension_names)}), such as {self._example()}"
            )
            raise PartitionKeyError(msg)
        result: list[PartitionValue] = []
        for (name, definition), item in zip(self.dimensions, texts, strict=True):
            try:
                result.append(definition.parse(item))
            except PartitionKeyError as exc:
                msg = f"dimension {name!r}: {exc.message}"
                raise PartitionKeyError(msg) from exc
        return tuple(result)

    def _example(self) -> str:
        """Return a JSON array naming the dimensions, for error messages."""
        return json.dumps([f"<{name}>" for name in self.dimension_names])
