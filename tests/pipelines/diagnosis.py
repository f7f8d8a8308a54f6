"""Assets that log through ``context.log`` and fail, for the tests of kept attempts."""

from __future__ import annotations

import os
import signal

from flowstone import AssetContext, RetryPolicy, asset
from flowstone.checkpoints import checkpoint
from flowstone.errors import StepTimeoutError


@asset
def d_quiet() -> int:
    return 1


@asset
def d_talks(context: AssetContext, d_quiet: int) -> int:
    context.log.debug("not kept: below the kept level")
    context.log.info("loaded %d rows from %s", 42, "orders")
    context.log.warning("3 rows had no customer\x00id")
    context.log.info("<script>alert('log')</script>")
    return d_quiet + 41


@asset(retry_policy=RetryPolicy(max_retries=1, backoff_seconds=0))
def d_flaky(context: AssetContext) -> int:
    context.log.info("attempt %d starts", context.attempt)
    if context.attempt == 1:
        raise StepTimeoutError("the warehouse did not answer in time")
    return context.attempt


@asset
def d_broken(context: AssetContext, d_quiet: int) -> int:
    context.log.info("looking up the customer of order %d", d_quiet)
    customers: dict[str, int] = {}
    try:
        customers["missing_key"]  # the failure under test
    except KeyError:
        context.log.exception("lookup failed")
        raise
    return 0


@asset
def d_downstream(d_broken: int) -> int:
    return d_broken


@asset
def d_chatty(context: AssetContext) -> int:
    for line in range(10_000):
        context.log.info("line %05d %s", line, "x" * 80)
    return 0


@asset
def d_dies(context: AssetContext) -> int:
    context.log.info("attempt %d starts", context.attempt)
    if context.attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # the worker's pool process dies mid-step
    return context.attempt


@checkpoint(
    condition=lambda review: review.value > 0,
    message=lambda review: f"check the total of {review.value}",
)
@asset
def d_reviewed(context: AssetContext) -> int:
    context.log.info("summed %d invoices", 12)
    return 12
