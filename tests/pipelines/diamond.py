"""A diamond: source -> (left, right) -> sink over static partitions, plus failing branches."""

from __future__ import annotations

from typing import Any

from flowstone import AssetContext, RetryPolicy, asset
from flowstone.errors import IOManagerError
from flowstone.partitions import StaticPartitions

REGIONS = StaticPartitions(keys=("eu", "us", "a|b:c"))
CALLS: list[str] = []


@asset(partitions=REGIONS, resources=["counter"])
def source(context: AssetContext) -> dict[str, Any]:
    CALLS.append(f"source:{context.partition}")
    return {"region": context.partition, "label": context.resources.counter.label, "n": 10}


@asset(partitions=REGIONS)
def left(source: dict[str, Any]) -> int:
    CALLS.append("left")
    return int(source["n"]) + 1


@asset(partitions=REGIONS)
def right(source: dict[str, Any]) -> int:
    CALLS.append("right")
    return int(source["n"]) * 2


@asset(partitions=REGIONS)
def sink(left: int, right: int) -> dict[str, int]:
    CALLS.append("sink")
    return {"left": left, "right": right, "total": left + right}


@asset(partitions=REGIONS)
def broken(source: dict[str, Any]) -> int:
    raise ValueError(f"cannot process {source['region']}")


@asset(partitions=REGIONS)
def after_broken(broken: int) -> int:
    return broken


@asset(partitions=REGIONS)
def not_json(source: dict[str, Any]) -> object:
    return {1, 2, 3}


FLAKY_ATTEMPTS: list[int] = []


@asset(partitions=REGIONS, retry_policy=RetryPolicy(max_retries=2, backoff_seconds=0.01))
def flaky(context: AssetContext) -> str:
    FLAKY_ATTEMPTS.append(context.attempt)
    if context.attempt < 3:
        raise IOManagerError("temporary outage", retryable=True)
    return "ok"
