"""An asset's partition health: the latest status of every partition, compressed into ranges.

The latest step of a partition is the one that ended last (an unfinished step counts as the
newest: it is what happens now), ties broken by the highest id: the order of
``assets.services.latest_successful``, over every status. One aggregate query reads it for all
partitions of the asset (``DISTINCT ON`` on PostgreSQL, a window function elsewhere); the
partitions themselves come from the asset's definition, in its order, so partitions never
materialized show as ``missing``. Consecutive partitions with the same status become one range,
so a grid of 100,000 daily partitions is a handful of ranges.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Final

from django.db import connections
from django.db.models import F, Window
from django.db.models.functions import RowNumber

from assets.models import Materialization
from assets.palette import MISSING
from assets.services import DatabaseDynamicKeyStore
from flowstone.errors import PartitionKeyError
from flowstone.partitions import decode_partition_key, encode_partition_key

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from django.db.models import OrderBy, QuerySet

    from flowstone.definitions import AssetDefinition

MAX_GRID_PARTITIONS: Final = 500_000
"""The most partitions one grid reads from a definition (an open-ended hourly one grows forever)."""

_UNPARTITIONED_LABEL: Final = "(unpartitioned)"
_SIMPLE_TAGS: Final = frozenset("sidnt")


@dataclass(frozen=True, kw_only=True, slots=True)
class PartitionRange:
    """Consecutive partitions (``start`` to ``stop``, exclusive, in definition order) alike."""

    status: str
    start: int
    stop: int
    first_key: str
    last_key: str

    @property
    def count(self) -> int:
        """How many partitions the range holds."""
        return self.stop - self.start

    @property
    def label(self) -> str:
        """The range as a reader writes it: ``2024-01-01 … 2024-03-31`` or one key."""
        first, last = partition_label(self.first_key), partition_label(self.last_key)
        return first if self.count == 1 else f"{first} … {last}"


@dataclass(frozen=True, kw_only=True, slots=True)
class PartitionHealth:
    """The ranges of one asset, how many partitions have each status, and what was left out."""

    ranges: tuple[PartitionRange, ...]
    counts: Mapping[str, int]
    """Partitions by status, in the order the statuses first appear in the grid."""
    total: int
    is_truncated: bool = False
    """The definition has more than ``MAX_GRID_PARTITIONS`` partitions; the first are shown."""
    unknown_keys: int = 0
    """Partitions with steps that the definition no longer lists (not in the grid)."""


def compress(partitions: Iterable[tuple[str, str]]) -> list[PartitionRange]:
    """Ranges of consecutive ``(partition_key, status)`` pairs that share a status, in order."""
    ranges: list[PartitionRange] = []
    current: tuple[str, int, str] | None = None  # (status, start, first key)
    last_key, index = "", -1
    for index, (key, status) in enumerate(partitions):
        if current is not None and current[0] != status:
            ranges.append(_range(current, index, last_key))
            current = None
        if current is None:
            current = (status, index, key)
        last_key = key
    if current is not None:
        ranges.append(_range(current, index + 1, last_key))
    return ranges


def _range(current: tuple[str, int, str], stop: int, last_key: str) -> PartitionRange:
    status, start, first_key = current
    return PartitionRange(
        status=status, start=start, stop=stop, first_key=first_key, last_key=last_key
    )


def newest_first() -> tuple[OrderBy, OrderBy]:
    """The order of "latest": unfinished first, then the newest completion, then the highest id."""
    return (F("finished_at").desc(nulls_first=True), F("id").desc())


def latest_steps(steps: QuerySet[Materialization], by: str) -> QuerySet[Materialization]:
    """The latest of ``steps`` for each value of the field ``by`` (``partition_key``, ``asset``).

    ``DISTINCT ON`` on PostgreSQL; elsewhere, the first row of a window per value.
    """
    if connections[steps.db].vendor == "postgresql":
        return steps.order_by(by, *newest_first()).distinct(by)
    ranked = steps.annotate(
        _newest=Window(RowNumber(), partition_by=[F(by)], order_by=newest_first())
    )
    return ranked.filter(_newest=1)


def latest_statuses(asset: str) -> dict[str, str]:
    """The status of the latest step of every partition of ``asset`` that has one (one query)."""
    steps = Materialization.objects.filter(asset=asset)
    return dict(latest_steps(steps, "partition_key").values_list("partition_key", "status"))


def partition_keys(definition: AssetDefinition) -> Iterator[str]:
    """The encoded keys of ``definition``'s partitions, in order (``""`` if unpartitioned)."""
    partitions = definition.spec.partitions
    if partitions is None:
        yield ""
        return
    for value in partitions.iter_keys(store=DatabaseDynamicKeyStore()):
        yield encode_partition_key(value)


def partition_health(definition: AssetDefinition) -> PartitionHealth:
    """The grid of ``definition``'s partitions: ranges of their latest statuses, and counts."""
    latest = latest_statuses(definition.name)
    keys = list(islice(partition_keys(definition), MAX_GRID_PARTITIONS + 1))
    is_truncated = len(keys) > MAX_GRID_PARTITIONS
    keys = keys[:MAX_GRID_PARTITIONS]
    ranges = compress((key, latest.get(key, MISSING)) for key in keys)
    counts: Counter[str] = Counter()
    for item in ranges:
        counts[item.status] += item.count
    unknown = 0 if is_truncated else len(latest.keys() - set(keys))
    return PartitionHealth(
        ranges=tuple(ranges),
        counts=dict(counts),
        total=len(keys),
        is_truncated=is_truncated,
        unknown_keys=unknown,
    )


def partition_label(key: str) -> str:
    """A partition key as a reader writes it: ``2024-01-01``, ``eu``, ``eu|2024-01-01``."""
    if key == "":
        return _UNPARTITIONED_LABEL
    if key[:1] in _SIMPLE_TAGS and key[1:2] == ":":
        return key[2:]
    try:
        value = decode_partition_key(key)
    except PartitionKeyError:
        return key  # written behind the services' back: show it as stored
    if isinstance(value, tuple):
        return "|".join(partition_label(encode_partition_key(item)) for item in value)
    return key
