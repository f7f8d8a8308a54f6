"""Assets whose steps run in batches on real Celery workers (tests/assets/test_step_batches.py).

Each execution appends a line to ``$FLOWSTONE_DATA_DIR/executions.log`` (``log_execution``) so
the tests can count executions across processes, separately from recorded materializations.
"""

from __future__ import annotations

import time

from flowstone import AssetContext, asset
from flowstone.partitions import StaticPartitions
from tests.pipelines.celery_flow import log_execution

NAMES = tuple(f"k{n:03d}" for n in range(120))
KEYS = StaticPartitions(keys=NAMES)
FAILING_KEY = "k007"


@asset(partitions=KEYS)
def b_noop(context: AssetContext) -> str:
    log_execution(context)
    return str(context.partition)


@asset(partitions=KEYS)
def b_picky(context: AssetContext) -> str:
    log_execution(context)
    if context.partition == FAILING_KEY:
        raise ValueError(f"{FAILING_KEY} is refused")
    return str(context.partition)


@asset(partitions=KEYS)
def b_slow(context: AssetContext) -> str:
    log_execution(context)
    time.sleep(0.06)
    return str(context.partition)


@asset(partitions=KEYS, concurrency_limit=2)
def b_limited(context: AssetContext) -> str:
    log_execution(context)
    time.sleep(0.02)
    return str(context.partition)


STUCK_KEY = "k005"


@asset(partitions=KEYS)
def b_stuck(context: AssetContext) -> str:
    """Stuck far past any time limit on ``STUCK_KEY``; quick elsewhere."""
    log_execution(context)
    if context.partition == STUCK_KEY:
        time.sleep(60)
    return str(context.partition)
