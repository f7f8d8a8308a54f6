"""The demo's nightly schedule: yesterday's daily_revenue with materialize_all semantics."""

from __future__ import annotations

import datetime as dt

import pytest

from assets.models import Materialization
from flowstone.registry import get_registry
from schedules import services
from schedules.models import Tick


@pytest.mark.embedded
@pytest.mark.django_db
def test_the_nightly_tick_runs_yesterdays_revenue_and_its_upstreams() -> None:
    definition = get_registry().get_schedule("nightly_revenue")
    now = dt.datetime(2025, 12, 3, 2, 0, 30, tzinfo=dt.UTC)

    outcome = services.tick_schedule("nightly_revenue", now=now)

    assert definition.spec.cron == "0 2 * * *"
    assert outcome.run_key == "2025-12-03T02:00:00+00:00"
    tick = Tick.objects.get(name="nightly_revenue")
    assert (tick.status, tick.selection, tick.partition_keys) == (
        "requested",
        ["daily_revenue"],
        ["d:2025-12-02"],
    )
    steps = set(Materialization.objects.filter(run=tick.run).values_list("asset", "partition_key"))
    assert steps == {
        ("customers", ""),
        ("raw_orders", "d:2025-12-02"),
        ("enriched_orders", "d:2025-12-02"),
        ("daily_revenue", "d:2025-12-02"),
    }
