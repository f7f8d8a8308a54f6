"""Assets and run-status sensors for the notification and run-status sensor tests."""

from __future__ import annotations

import datetime as dt

from flowstone import AssetContext, asset
from flowstone.checkpoints import checkpoint
from flowstone.partitions import StaticPartitions
from flowstone.scheduling import Notify, RunRequest, RunStatusEvent, run_status_sensor

OUTCOMES = StaticPartitions(keys=("ok", "bad", "worse"))
WAITING_TOO_LONG = dt.timedelta(seconds=2)


@asset(partitions=OUTCOMES)
def rs_flaky(context: AssetContext) -> str:
    if context.partition != "ok":
        raise RuntimeError(f"partition {context.partition} is broken")
    return "fine"


@asset
def rs_broken() -> int:
    raise RuntimeError("always broken (and no sensor watches it)")


@asset
def rs_followup() -> int:
    return 1


@checkpoint(message="Ship the release?")
@asset
def rs_gated() -> int:
    return 3


@run_status_sensor(status="failed", assets=[rs_flaky], interval=1)
def flaky_failed(event: RunStatusEvent) -> Notify:
    """Tells the channels about each failed run of rs_flaky."""
    return Notify(text=f"run {event.run_id} failed in {', '.join(event.assets)}")


@run_status_sensor(status="success", assets=[rs_flaky], interval=1)
def flaky_succeeded(event: RunStatusEvent) -> RunRequest:
    """Materializes rs_followup once after each successful run of rs_flaky."""
    return RunRequest(asset="rs_followup", run_key=event.run_key)


@run_status_sensor(status="approval_waiting", waiting_longer_than=WAITING_TOO_LONG, interval=1)
def approval_too_slow(event: RunStatusEvent) -> Notify:
    """Nudges the channels about an approval left waiting for more than two seconds."""
    return Notify(title="Still waiting for a decision", text=event.message)
