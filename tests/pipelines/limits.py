"""An asset with a concurrency limit, for dispatch tests."""

from __future__ import annotations

from flowstone import asset
from flowstone.partitions import StaticPartitions

KEYS = StaticPartitions(keys=tuple(f"k{n}" for n in range(10)))


@asset(partitions=KEYS, concurrency_limit=2)
def limited() -> int:
    return 1


@asset(partitions=KEYS)
def unlimited() -> int:
    return 1
