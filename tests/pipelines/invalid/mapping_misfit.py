from __future__ import annotations

from flowstone import asset
from flowstone.partitions import StaticPartitions, TimeWindowPartitionMapping

LETTERS = StaticPartitions(keys=("a", "b"))


@asset(partitions=LETTERS)
def letters() -> int:
    return 1


@asset(partitions=LETTERS, partition_mappings={"letters": TimeWindowPartitionMapping()})
def misfit(letters: int) -> int:
    return letters
