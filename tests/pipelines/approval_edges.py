"""One checkpoint with every approval feature at once: a quorum of a group, named options,
inputs that can change under it (approvals bound to the data). For tests/approvals/test_edges.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from flowstone import AssetContext, asset
from flowstone.checkpoints import Option, checkpoint
from flowstone.partitions import StaticPartitions

REGIONS = StaticPartitions(keys=("eu", "us"))


def set_rate(region: str, rate: int) -> None:
    """The rate the next ``e_rate`` of ``region`` reads."""
    path = Path(os.environ.get("FLOWSTONE_DATA_DIR", "var")) / f"edge-rate-{region}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(rate))


@asset(partitions=REGIONS)
def e_rate(context: AssetContext) -> int:
    path = Path(os.environ.get("FLOWSTONE_DATA_DIR", "var")) / f"edge-rate-{context.partition}.txt"
    return int(path.read_text()) if path.exists() else 10


@checkpoint(
    assignees=["group:finance"],
    quorum=2,
    options=[
        Option("pay", "Pay now", outcome="continue"),
        Option("hold", "Hold until next week", outcome="skip"),
    ],
)
@asset(partitions=REGIONS)
def e_payment(e_rate: int) -> dict[str, int]:
    return {"rate": e_rate, "amount": 10 * e_rate}


@asset(partitions=REGIONS)
def e_booking(e_payment: dict[str, int]) -> int:
    return e_payment["amount"]
