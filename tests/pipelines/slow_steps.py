"""Assets that outlive Celery's time limits, for the time-limit tests on real workers.

Each sleeps far longer than the limits the tests give the worker (a few seconds), so only the
limit can end it; ``t_slow_once`` sleeps on its first attempt only.
"""

from __future__ import annotations

import time

from flowstone import AssetContext, RetryPolicy, asset
from flowstone.partitions import StaticPartitions
from tests.pipelines.celery_flow import log_execution

REGIONS = StaticPartitions(keys=("eu", "us"))
SLEEP_SECONDS = 60.0


@asset(partitions=REGIONS)
def t_quick(context: AssetContext) -> str:
    log_execution(context)
    return "quick"


@asset(partitions=REGIONS)
def t_slow(context: AssetContext) -> str:
    log_execution(context)
    time.sleep(SLEEP_SECONDS)
    return "slow"


@asset(
    partitions=REGIONS, retry_policy=RetryPolicy(max_retries=1, backoff_seconds=0.2, jitter=False)
)
def t_slow_once(context: AssetContext) -> str:
    log_execution(context)
    if context.attempt == 1:
        time.sleep(SLEEP_SECONDS)
    return "second attempt"
