"""Assets for the S3 IO manager tests: JSON and per-asset Parquet bodies, partition keys with ``|``.

The tests configure the ``default`` IO manager as an S3 manager on a local S3 server.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from flowstone import AssetContext, RetryPolicy, asset
from flowstone.partitions import StaticPartitions

REGIONS = StaticPartitions(keys=("north|east", "süd/west"))
# One quick retry, so an outage shows the retryable error being retried before the step fails.
ONE_QUICK_RETRY = RetryPolicy(max_retries=1, backoff_seconds=0.01, jitter=False)


@asset(retry_policy=ONE_QUICK_RETRY)
def sensors() -> list[dict[str, Any]]:
    """The sensor list, stored as a JSON object."""
    return [{"sensor": "日|1", "region": "north|east"}, {"sensor": "本", "region": "süd/west"}]


@asset(partitions=REGIONS, io_options={"file_format": "parquet"}, retry_policy=ONE_QUICK_RETRY)
def readings(context: AssetContext, sensors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Readings of the region's sensors, stored as Parquet (loaded as a pyarrow Table)."""
    mine = [row["sensor"] for row in sensors if row["region"] == context.partition]
    return [{"sensor": name, "value": float(n)} for n, name in enumerate(mine * 3)]


@asset(partitions=REGIONS, retry_policy=ONE_QUICK_RETRY)
def region_total(readings: pa.Table) -> dict[str, Any]:
    """The region's reading count and sum, from the Parquet upstream."""
    values = readings.column("value").to_pylist()
    return {"rows": readings.num_rows, "total": sum(values)}
