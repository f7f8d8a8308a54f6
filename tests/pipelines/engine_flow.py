"""Assets for the run engine's edge tests on real workers (status, cancel, outbox, boundary).

``e_crash_source``: the first time its success commits in a worker process, that process is
killed (SIGKILL) by a ``step_succeeded`` receiver: after the commit, before the engine publishes
what the success released. The marker file ``crashed`` in ``$FLOWSTONE_DATA_DIR`` makes it once.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from flowstone import AssetContext, asset
from flowstone.checkpoints import checkpoint
from flowstone.partitions import StaticPartitions
from flowstone.signals import step_succeeded

KEYS = StaticPartitions(keys=tuple(f"k{n}" for n in range(8)))


def _data_dir() -> Path:
    return Path(os.environ.get("FLOWSTONE_DATA_DIR", "var"))


@asset(partitions=KEYS)
def e_slow(context: AssetContext) -> str:
    time.sleep(2.0)
    return context.partition_key


@asset(partitions=KEYS, concurrency_limit=1)
def e_limited(context: AssetContext) -> str:
    time.sleep(0.5)
    return context.partition_key


@asset
def e_sibling() -> int:
    time.sleep(1.0)
    return 1


@checkpoint(condition=lambda _review: True, message="Publish the figure?")
@asset
def e_gate() -> int:
    return 42


@asset
def e_top(e_gate: int, e_sibling: int) -> int:
    return e_gate + e_sibling


@asset
def e_crash_source() -> int:
    return 1


@asset
def e_crash_sink(e_crash_source: int) -> int:
    return e_crash_source + 1


def _crash_after_commit(sender: object, **payload: Any) -> None:
    """Kill this worker process after ``e_crash_source``'s success committed, once."""
    if payload.get("asset") != "e_crash_source" or not os.environ.get("FLOWSTONE_TEST_CRASH"):
        return
    marker = _data_dir() / "crashed"
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


step_succeeded.connect(_crash_after_commit, dispatch_uid="tests.engine_flow.crash")


@asset
def e_deep() -> Any:
    """A value nested 100,000 deep: encoding it for storage raises ``RecursionError``."""
    value: Any = []
    for _ in range(100_000):
        value = [value]
    return value


@asset
def e_after_deep(e_deep: Any) -> int:
    return len(e_deep)
