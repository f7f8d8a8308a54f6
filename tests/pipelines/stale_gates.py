"""Checkpointed assets whose upstream value changes between runs (stale approvals, bulk)."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from flowstone import AssetContext, asset
from flowstone.checkpoints import checkpoint
from flowstone.partitions import DailyPartitions, StaticPartitions

REGIONS = StaticPartitions(keys=("eu", "us"))
DAYS = DailyPartitions(start=dt.date(2025, 1, 1), end=dt.date(2026, 1, 1))  # 365 days


def _data_dir() -> Path:
    return Path(os.environ.get("FLOWSTONE_DATA_DIR", "var"))


def set_rate(region: str, rate: int) -> None:
    """The rate the next ``s_rate`` of ``region`` reads (a file: worker processes see it too)."""
    path = _data_dir() / f"rate-{region}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(rate))


def booked() -> list[dict[str, Any]]:
    """What ``s_invoice`` booked, in order (every process appends to one file)."""
    path = _data_dir() / "booked.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@asset(partitions=REGIONS)
def s_rate(context: AssetContext) -> int:
    path = _data_dir() / f"rate-{context.partition}.txt"
    return int(path.read_text()) if path.exists() else 10


@checkpoint(message=lambda review: f"Price {review.value['price']} at rate {review.value['rate']}?")
@asset(partitions=REGIONS)
def s_price(s_rate: int) -> dict[str, int]:
    return {"rate": s_rate, "price": 3 * s_rate}


@asset(partitions=REGIONS)
def s_invoice(context: AssetContext, s_price: dict[str, int]) -> int:
    path = _data_dir() / "booked.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"region": context.partition, **s_price}) + "\n")
    return s_price["price"]


@checkpoint(message="Publish this day's total?")
@asset(partitions=DAYS)
def s_daily(context: AssetContext) -> int:
    assert isinstance(context.partition, dt.date)
    return context.partition.toordinal()
