"""The demo pipeline.

::

    customers ─┐
               ├─► enriched_orders ─► daily_revenue ─► weekly_report
    raw_orders ┘   (daily, fan-in)     (daily)         (weekly over 7 daily partitions,
                                                        gated by a checkpoint)

``weekly_report`` is published only after a person approves it when a region's revenue is above
``REVIEW_THRESHOLD`` (the week of 2025-12-08 is; the week of 2025-12-01 is not).
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from flowstone import AssetContext, asset
from flowstone.checkpoints import Review, checkpoint
from flowstone.partitions import DailyPartitions, TimeWindowPartitionMapping, WeeklyPartitions
from flowstone.scheduling import schedule

DAILY = DailyPartitions(start=dt.date(2025, 12, 1))
WEEKLY = WeeklyPartitions(start=dt.date(2025, 12, 1))

Rows = list[dict[str, Any]]
REVIEW_THRESHOLD = 21_000.0
REVIEW_TIMEOUT = dt.timedelta(days=2)


def _largest_region(review: Review) -> tuple[str, float]:
    revenue: dict[str, float] = review.value["revenue"]
    return max(revenue.items(), key=lambda item: item[1])


def _needs_review(review: Review) -> bool:
    return _largest_region(review)[1] > REVIEW_THRESHOLD


def _review_message(review: Review) -> str:
    region, revenue = _largest_region(review)
    return (
        f"{region} revenue {revenue:,.2f} for the week of {review.partition} is above the "
        f"{REVIEW_THRESHOLD:,.0f} review threshold. Publish the weekly report?"
    )


@asset(tags={"layer": "raw"}, code_version="1")
def customers() -> Rows:
    """The customer list, with each customer's region."""
    return [
        {"customer": "acme", "region": "emea"},
        {"customer": "globex", "region": "amer"},
        {"customer": "initech", "region": "amer"},
        {"customer": "umbrella", "region": "apac"},
    ]


@asset(partitions=DAILY, resources=["catalog"], tags={"layer": "raw"}, code_version="1")
def raw_orders(context: AssetContext) -> Rows:
    """The day's orders, priced from the catalog resource (deterministic per day)."""
    day = context.partition
    rng = random.Random(str(day))  # noqa: S311  # reproducible demo data, not secrets
    catalog = context.resources.catalog
    orders = []
    for number in range(rng.randint(5, 12)):
        product = rng.choice(["anvil", "rope", "rocket", "magnet"])
        quantity = rng.randint(1, 4)
        orders.append(
            {
                "order": f"{day}-{number:03d}",
                "customer": rng.choice(["acme", "globex", "initech", "umbrella"]),
                "product": product,
                "quantity": quantity,
                "amount": round(catalog.price(product) * quantity, 2),
            }
        )
    context.log.info("generated %d orders", len(orders))
    return orders


@asset(partitions=DAILY, code_version="1")
def enriched_orders(raw_orders: Rows, customers: Rows) -> Rows:
    """Orders joined with their customer's region (fan-in of two upstreams)."""
    region = {row["customer"]: row["region"] for row in customers}
    return [{**order, "region": region[order["customer"]]} for order in raw_orders]


@asset(partitions=DAILY, code_version="1")
def daily_revenue(enriched_orders: Rows) -> Rows:
    """Revenue per region for the day."""
    totals: dict[str, float] = {}
    for order in enriched_orders:
        totals[order["region"]] = totals.get(order["region"], 0.0) + order["amount"]
    return [{"region": r, "revenue": round(v, 2)} for r, v in sorted(totals.items())]


@schedule(cron="0 2 * * *", timezone="UTC", assets=[daily_revenue], include_upstreams=True)
def nightly_revenue() -> None:
    """Yesterday's revenue and everything it reads (materialize_all), every night at 02:00 UTC."""


@checkpoint(
    condition=_needs_review,
    message=_review_message,
    timeout=REVIEW_TIMEOUT,
    on_timeout="auto_reject",
)
@asset(
    partitions=WEEKLY,
    partition_mappings={"daily_revenue": TimeWindowPartitionMapping()},
    code_version="1",
)
def weekly_report(daily_revenue: dict[dt.date, Rows]) -> dict[str, Any]:
    """Revenue per region over the week's days that have been materialized."""
    totals: dict[str, float] = {}
    for rows in daily_revenue.values():
        for row in rows:
            totals[row["region"]] = totals.get(row["region"], 0.0) + row["revenue"]
    return {
        "days": sorted(str(day) for day in daily_revenue),
        "revenue": {region: round(value, 2) for region, value in sorted(totals.items())},
    }
