"""The lineage test diamond after a code change: ``left`` moved to code version 2."""

from __future__ import annotations

from flowstone import AssetContext, asset
from flowstone.partitions import StaticPartitions

REGIONS = StaticPartitions(keys=("eu", "us"))


@asset(partitions=REGIONS, code_version="1")
def source(context: AssetContext) -> str:
    return str(context.partition)


@asset(partitions=REGIONS, code_version="2")
def left(source: str) -> str:
    return f"left2({source})"


@asset(partitions=REGIONS, code_version="1")
def right(source: str) -> str:
    return f"right({source})"


@asset(partitions=REGIONS, code_version="1")
def sink(left: str, right: str) -> str:
    return f"{left}+{right}"
