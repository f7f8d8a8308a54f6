"""Checkpoints with assignees, quorums and escalation, for the decider tests."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

from flowstone import AssetContext, asset
from flowstone.checkpoints import Review, checkpoint
from flowstone.partitions import StaticPartitions

ACCOUNTS = StaticPartitions(keys=("small", "large", "hostile", "broken"))
AMOUNTS = {"small": 50, "large": 500, "hostile": 700, "broken": 900}
HOUR = dt.timedelta(hours=1)


def log(event: str, **extra: Any) -> None:
    """Append an event line, visible across processes (worker tests read it)."""
    path = Path(os.environ.get("FLOWSTONE_DATA_DIR", "var")) / "deciders.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(
            json.dumps({"event": event, "pid": os.getpid(), "at": time.time(), **extra}) + "\n"
        )


@asset(partitions=ACCOUNTS)
def d_invoice(context: AssetContext) -> dict[str, Any]:
    return {"account": context.partition, "amount": AMOUNTS[str(context.partition)]}


@checkpoint(assignees=["bob", "group:finance"])
@asset(partitions=ACCOUNTS)
def d_assigned(d_invoice: dict[str, Any]) -> dict[str, Any]:
    return dict(d_invoice)


@checkpoint(assignees=["group:finance"], quorum=2)
@asset(partitions=ACCOUNTS)
def d_quorum(context: AssetContext, d_invoice: dict[str, Any]) -> dict[str, Any]:
    log("d_quorum", partition=context.partition_key)
    return dict(d_invoice)


@asset(partitions=ACCOUNTS)
def d_booked(context: AssetContext, d_quorum: dict[str, Any]) -> int:
    log("d_booked", partition=context.partition_key)
    return int(d_quorum["amount"])


@checkpoint(
    assignees=["bob"],
    quorum=2,
    timeout=HOUR,
    on_timeout="escalate",
    escalate_to="group:leads",
)
@asset(partitions=ACCOUNTS)
def d_escalating(d_invoice: dict[str, Any]) -> dict[str, Any]:
    return dict(d_invoice)


def _by_amount(review: Review) -> list[str]:
    """Small amounts go to bob; the two test partitions return a hostile and a broken answer."""
    if review.partition == "hostile":
        return ["bob", "mallory\x00; drop table"]
    if review.partition == "broken":
        return "bob"  # type: ignore[return-value]  # not a list: refused when requested
    return ["bob"] if review.value["amount"] < 100 else ["group:finance"]


@checkpoint(assignees=_by_amount)
@asset(partitions=ACCOUNTS)
def d_dynamic(d_invoice: dict[str, Any]) -> dict[str, Any]:
    return dict(d_invoice)


@checkpoint()
@asset(partitions=ACCOUNTS)
def d_open(d_invoice: dict[str, Any]) -> dict[str, Any]:
    return dict(d_invoice)


@checkpoint(
    assignees=["bob"],
    timeout=dt.timedelta(seconds=4),
    on_timeout="escalate",
    escalate_to="group:leads",
)
@asset(partitions=ACCOUNTS)
def d_escalating_soon(d_invoice: dict[str, Any]) -> dict[str, Any]:
    return dict(d_invoice)


@asset(partitions=ACCOUNTS)
def d_escalated_booking(context: AssetContext, d_escalating_soon: dict[str, Any]) -> int:
    log("d_escalated_booking", partition=context.partition_key)
    return int(d_escalating_soon["amount"])
