"""Assets executed by real Celery workers in the execution tests.

Each execution appends a line to ``$FLOWSTONE_DATA_DIR/executions.log`` so tests can count
executions across processes, separately from recorded materializations.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

from django.db import connection

from flowstone import AssetContext, RetryPolicy, asset
from flowstone.errors import IOManagerError
from flowstone.partitions import DailyPartitions, StaticPartitions

REGIONS = StaticPartitions(keys=("eu", "us"))
SLOTS = StaticPartitions(keys=tuple(f"s{n:02d}" for n in range(12)))
DAYS = DailyPartitions(start=dt.date(2024, 1, 1), end=dt.date(2024, 7, 19))  # 200 days


def log_execution(context: AssetContext, **extra: Any) -> None:
    """Append one line per execution (O_APPEND: safe across processes)."""
    path = Path(os.environ.get("FLOWSTONE_DATA_DIR", "var")) / "executions.log"
    record = {
        "asset": context.asset,
        "partition": context.partition_key,
        "run_id": context.run_id,
        "attempt": context.attempt,
        "pid": os.getpid(),
        "at": time.time(),
        **extra,
    }
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


@asset(partitions=REGIONS)
def c_source(context: AssetContext) -> dict[str, Any]:
    log_execution(context)
    time.sleep(0.1)
    return {"region": context.partition, "n": 10}


@asset(partitions=REGIONS)
def c_left(context: AssetContext, c_source: dict[str, Any]) -> int:
    log_execution(context)
    time.sleep(0.1)
    return int(c_source["n"]) + 1


@asset(partitions=REGIONS)
def c_right(context: AssetContext, c_source: dict[str, Any]) -> int:
    log_execution(context)
    time.sleep(0.1)
    return int(c_source["n"]) * 2


@asset(partitions=REGIONS)
def c_sink(context: AssetContext, c_left: int, c_right: int) -> int:
    log_execution(context)
    return c_left + c_right


@asset(partitions=DAYS)
def c_daily(context: AssetContext) -> str:
    log_execution(context)
    time.sleep(0.05)
    return str(context.partition)


@asset(
    partitions=REGIONS, retry_policy=RetryPolicy(max_retries=3, backoff_seconds=0.3, jitter=False)
)
def c_flaky(context: AssetContext) -> str:
    log_execution(context)
    if context.attempt < 3:
        raise IOManagerError("object store briefly unavailable", retryable=True)
    return "ok"


@asset(partitions=REGIONS)
def c_broken(context: AssetContext, c_source: dict[str, Any]) -> int:
    log_execution(context)
    raise ValueError("bad input")


@asset(partitions=REGIONS)
def c_after_broken(c_broken: int) -> int:
    return c_broken


@asset(partitions=REGIONS, queue="later")
def c_routed(context: AssetContext) -> str:
    log_execution(context)
    return "routed"


@asset(partitions=SLOTS)
def c_sleepy(context: AssetContext) -> str:
    log_execution(context)
    time.sleep(1.0)
    return str(context.partition)


@asset(partitions=SLOTS)
def c_backend(context: AssetContext) -> int:
    """Log which PostgreSQL backend (connection) the worker process ran this step on."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (backend,) = cursor.fetchone() or (0,)
    log_execution(context, backend=backend)
    return int(backend)
