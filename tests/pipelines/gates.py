"""Checkpointed assets for the approval tests."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

from flowstone import AssetContext, asset
from flowstone.checkpoints import Approve, Modify, Reject, Review, checkpoint
from flowstone.errors import ValidationFailedError
from flowstone.partitions import StaticPartitions

ACCOUNTS = StaticPartitions(keys=("small", "large", "a|b", "negative", "huge"))
AMOUNTS = {"small": 50, "large": 500, "a|b": 700, "negative": -5, "huge": 5000}
HOUR = dt.timedelta(hours=1)
HANDLED: list[str] = []


def log(event: str, **extra: Any) -> None:
    """Append an event line, visible across processes (worker tests read it)."""
    path = Path(os.environ.get("FLOWSTONE_DATA_DIR", "var")) / "gates.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(
            json.dumps({"event": event, "pid": os.getpid(), "at": time.time(), **extra}) + "\n"
        )


@asset(partitions=ACCOUNTS)
def g_invoice(context: AssetContext) -> dict[str, Any]:
    log("g_invoice", partition=context.partition_key)
    return {"account": context.partition, "amount": AMOUNTS[str(context.partition)]}


def _positive_amount(review: Review, value: Any) -> Any:
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("amount"), int)
        or value["amount"] < 0
    ):
        raise ValidationFailedError("amount must be a non-negative integer")
    return value


@checkpoint(
    condition=lambda review: review.value["amount"] > 100,
    message=lambda review: (
        f"Pay {review.value['amount']} EUR to {review.partition}? "
        f"(invoice says {review.upstream['g_invoice']['amount']})"
    ),
    validate_modification=_positive_amount,
    on_approve=lambda review, value: HANDLED.append(
        f"approved:{review.partition}:{value['amount']}"
    ),
    on_reject=lambda review, reason: HANDLED.append(f"rejected:{review.partition}:{reason}"),
)
@asset(partitions=ACCOUNTS)
def g_payout(context: AssetContext, g_invoice: dict[str, Any]) -> dict[str, Any]:
    log("g_payout", partition=context.partition_key, attempt=context.attempt)
    return {"account": g_invoice["account"], "amount": g_invoice["amount"]}


@asset(partitions=ACCOUNTS)
def g_ledger(context: AssetContext, g_payout: dict[str, Any]) -> dict[str, Any]:
    log("g_ledger", partition=context.partition_key, amount=g_payout["amount"])
    return {"booked": g_payout["amount"]}


def _auto(review: Review) -> Approve | Modify | Reject:
    amount = review.value["amount"]
    if amount < 0:
        return Reject("negative amounts are never paid")
    if amount > 1000:
        return Modify({**review.value, "amount": 1000})
    return Approve()


@checkpoint(decide=_auto)
@asset(partitions=ACCOUNTS)
def g_auto(g_invoice: dict[str, Any]) -> dict[str, Any]:
    return dict(g_invoice)


@checkpoint(timeout=HOUR, on_timeout="auto_approve")
@asset(partitions=ACCOUNTS)
def g_timeout_approve(g_invoice: dict[str, Any]) -> int:
    return int(g_invoice["amount"])


@checkpoint(timeout=HOUR, on_timeout="auto_reject")
@asset(partitions=ACCOUNTS)
def g_timeout_reject(g_invoice: dict[str, Any]) -> int:
    return int(g_invoice["amount"])


@checkpoint(timeout=HOUR, on_timeout="escalate", escalate_to="finance-leads")
@asset(partitions=ACCOUNTS)
def g_timeout_escalate(g_invoice: dict[str, Any]) -> int:
    return int(g_invoice["amount"])


@checkpoint(timeout=HOUR, on_timeout="extend", extend_by=dt.timedelta(hours=2))
@asset(partitions=ACCOUNTS)
def g_timeout_extend(g_invoice: dict[str, Any]) -> int:
    return int(g_invoice["amount"])


@asset(partitions=ACCOUNTS)
def g_quick(context: AssetContext) -> str:
    log("g_quick", partition=context.partition_key)
    return "done"
