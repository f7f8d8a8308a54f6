"""The fault suite's assets and its fault-injection hooks (test code only; inert unless armed).

Assets: ``f_seed`` (unpartitioned) <- ``f_day`` (daily; the backfilled asset, each step reads
``f_seed``) <- ``f_week`` (weekly fan-in over its seven days). Bodies sleep 50-200 ms (a fixed
time per partition). Every value names the attempt that computed it (``attempt``) and the
attempts of the upstream values it read (``read``: ``"asset[key]" -> attempt``), so a value
stored by any attempt but the recorded one, or read from one, shows in the checker. Every
execution appends a line to ``$FLOWSTONE_DATA_DIR/executions.log``.

Hooks, armed by marker files in ``$FLOWSTONE_FAULT_DIR`` (each crash marker is consumed by the
one process that removes it, so it fires once):

- ``crash-after-store``: the default IO manager exits the process right after writing a value
  (the output is on disk, the success is not committed).
- ``crash-after-commit``: a ``step_succeeded`` receiver (sent after the success commits) exits
  the process before the task returns, so its message is never acknowledged.
- ``duplicate``: every ``flowstone.run_step`` message published while it exists is published a
  second time, a random 0-0.5 s later.
- ``poison``: one encoded ``f_day`` partition key per line; executing one kills the process,
  every time.
- ``slow``: one encoded ``f_day`` partition key per line; its body sleeps ``SLOW_SECONDS``, past
  any time limit a scenario sets.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from celery.signals import after_task_publish, before_task_publish
from django.dispatch import receiver

from flowstone import AssetContext, asset
from flowstone.io import FilesystemIOManager
from flowstone.partitions import (
    DailyPartitions,
    TimeWindowPartitionMapping,
    WeeklyPartitions,
    encode_partition_key,
)
from flowstone.signals import step_succeeded

if TYPE_CHECKING:
    from flowstone.io.base import IOTarget, StoredOutput

FIRST_DAY: Final = dt.date(2020, 1, 6)  # a Monday, so weeks and days line up
WEEKS: Final = 520  # ten years: room for the deep backlog of the long mode
LAST_DAY: Final = FIRST_DAY + dt.timedelta(days=7 * WEEKS)  # exclusive
DAYS = DailyPartitions(start=FIRST_DAY, end=LAST_DAY)
WEEK_PARTITIONS = WeeklyPartitions(start=FIRST_DAY, end=LAST_DAY)
MIN_SLEEP: Final = 0.05
MAX_SLEEP: Final = 0.2
FAN_IN_SLEEP: Final = 1.5  # longer than a third of the lease: the heartbeat renews it
CRASH_EXIT_CODE: Final = 3
POISON_MARKER: Final = "poison"
SLOW_MARKER: Final = "slow"
SLOW_SECONDS: Final = 60.0
CRASH_AFTER_STORE: Final = "crash-after-store"
CRASH_AFTER_COMMIT: Final = "crash-after-commit"
CRASH_BEFORE_SEND: Final = "crash-before-send"
STEP_TASKS: Final = frozenset({"flowstone.run_step", "flowstone.run_steps"})
DUPLICATE_MARKER: Final = "duplicate"
MAX_DUPLICATE_DELAY: Final = 0.5
SEED_VALUE: Final = 7


def fault_dir() -> Path | None:
    """Where the markers live, if fault injection is configured for this process."""
    value = os.environ.get("FLOWSTONE_FAULT_DIR")
    return Path(value) if value else None


def consume_marker(name: str) -> bool:
    """Remove the marker ``name``; only the one process whose removal succeeds gets ``True``."""
    directory = fault_dir()
    if directory is None:
        return False
    try:
        (directory / name).unlink()
    except FileNotFoundError:
        return False
    return True


def crash(reason: str) -> None:
    """Die at once, like a kill -9: no cleanup, no acknowledgement, no exception handler."""
    log_line({"crash": reason, "pid": os.getpid(), "at": time.time()})
    os._exit(CRASH_EXIT_CODE)


def log_line(record: dict[str, Any]) -> None:
    """Append one JSON line to the executions log (O_APPEND: safe across processes)."""
    path = Path(os.environ.get("FLOWSTONE_DATA_DIR", "var")) / "executions.log"
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def log_execution(context: AssetContext) -> None:
    """Record that a step body started (executions are counted apart from effects)."""
    log_line(
        {
            "asset": context.asset,
            "partition": context.partition_key,
            "run_id": context.run_id,
            "attempt": context.attempt,
            "pid": os.getpid(),
            "at": time.time(),
        }
    )


def body_seconds(partition_key: str) -> float:
    """How long a step body sleeps: fixed per partition, 50-200 ms."""
    return random.Random(partition_key).uniform(MIN_SLEEP, MAX_SLEEP)  # noqa: S311  # not secrets


def is_listed(marker: str, partition_key: str) -> bool:
    """Whether the marker file ``marker`` names this partition (one key per line)."""
    directory = fault_dir()
    if directory is None:
        return False
    try:
        keys = (directory / marker).read_text().split()
    except FileNotFoundError:
        return False
    return partition_key in keys


@asset
def f_seed(context: AssetContext) -> dict[str, Any]:
    """The one upstream every day reads."""
    log_execution(context)
    return {"seed": SEED_VALUE, "attempt": context.attempt, "read": {}}


@asset(partitions=DAYS)
def f_day(context: AssetContext, f_seed: dict[str, Any]) -> dict[str, Any]:
    """One backfilled day: sleeps, then returns a value of the day and of this attempt."""
    log_execution(context)
    if is_listed(POISON_MARKER, context.partition_key):
        crash(f"poison {context.partition_key}")
    if is_listed(SLOW_MARKER, context.partition_key):
        time.sleep(SLOW_SECONDS)
    time.sleep(body_seconds(context.partition_key))
    day = context.partition
    assert isinstance(day, dt.date)
    return {
        "day": day.isoformat(),
        "value": day.toordinal() * f_seed["seed"],
        "attempt": context.attempt,
        "read": {"f_seed[]": f_seed["attempt"]},
    }


@asset(partitions=WEEK_PARTITIONS, partition_mappings={"f_day": TimeWindowPartitionMapping()})
def f_week(context: AssetContext, f_day: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    """A fan-in over the week's seven days."""
    log_execution(context)
    time.sleep(FAN_IN_SLEEP)
    return {
        "days": len(f_day),
        "total": sum(v["value"] for v in f_day.values()),
        "attempt": context.attempt,
        "read": {
            f"f_day[{encode_partition_key(day)}]": value["attempt"] for day, value in f_day.items()
        },
    }


def expected_upstreams(asset_name: str, partition_key: str) -> set[tuple[str, str]]:
    """The (asset, encoded partition) each step must have consumed, written out independently."""
    if asset_name == "f_day":
        return {("f_seed", "")}
    if asset_name == "f_week":
        start = dt.date.fromisoformat(partition_key.split(":", 1)[1])
        return {("f_day", encode_partition_key(start + dt.timedelta(days=n))) for n in range(7)}
    return set()


class FaultyFilesystemIOManager(FilesystemIOManager):
    """The filesystem IO manager, plus a crash right after the write when armed."""

    def store(self, target: IOTarget, value: Any) -> StoredOutput:
        """Store the value; with ``crash-after-store`` armed, die before anything is recorded."""
        stored = super().store(target, value)
        if consume_marker(CRASH_AFTER_STORE):
            crash(f"after store of {target.asset}[{target.partition_key}]")
        return stored


@receiver(step_succeeded, dispatch_uid="tests.faults.crash_after_commit")
def _crash_after_commit(**payload: Any) -> None:
    if consume_marker(CRASH_AFTER_COMMIT):
        crash(f"after commit of {payload.get('asset')}[{payload.get('partition')}]")


@before_task_publish.connect(dispatch_uid="tests.faults.crash_before_send")
def _crash_before_send(sender: str | None = None, **kwargs: Any) -> None:
    """Die between a claim and its send: the publisher stamped the step sent, sent nothing."""
    if sender in STEP_TASKS and consume_marker(CRASH_BEFORE_SEND):
        crash(f"before sending {sender} {kwargs.get('body')!r:.200}")


_duplicating = threading.local()


@after_task_publish.connect(dispatch_uid="tests.faults.duplicate_every_message")
def _duplicate(
    sender: str | None = None,
    body: Any = None,
    routing_key: str | None = None,
    **kwargs: Any,
) -> None:
    directory = fault_dir()
    if sender != "flowstone.run_step" or directory is None:
        return
    if getattr(_duplicating, "active", False) or not (directory / DUPLICATE_MARKER).exists():
        return
    from flowstone.celery import app  # noqa: PLC0415  # loaded by the publish that got here

    _, payload, _ = body
    delay = random.uniform(0, MAX_DUPLICATE_DELAY)  # noqa: S311  # not secrets
    _duplicating.active = True
    try:
        app.send_task(
            "flowstone.run_step",
            kwargs=payload,
            queue=routing_key or "flowstone",
            countdown=delay,
        )
    finally:
        _duplicating.active = False
    log_line({"duplicate": payload, "pid": os.getpid(), "at": time.time()})
