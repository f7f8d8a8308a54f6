"""The demo pipeline and its ``manage.py demo`` command."""

from __future__ import annotations

import datetime as dt
import io
from typing import TYPE_CHECKING

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from assets.models import Materialization
from lineage.models import LineageEdge

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

CATALOG = {"catalog": {"CLASS": "demo.resources.ProductCatalog", "OPTIONS": {"currency": "EUR"}}}


def test_demo_materializes_the_week_and_prints_the_table(
    use_definitions: UseDefinitions, storage_dir: Path
) -> None:
    use_definitions("demo.assets", resources=CATALOG)
    out = io.StringIO()
    call_command("demo", stdout=out)
    text = out.getvalue()

    assert "success (23 steps)" in text
    assert text.count("  success  ") == 23
    for asset in ("customers", "raw_orders", "enriched_orders", "daily_revenue", "weekly_report"):
        assert asset in text
    assert "weekly_report for the week of 2025-12-01:" in text
    assert Materialization.objects.filter(status="success").count() == 23
    weekly = Materialization.objects.get(asset="weekly_report")
    assert LineageEdge.objects.filter(downstream=weekly).count() == 7
    assert len(list((storage_dir / "raw_orders").iterdir())) == 7
    enriched = Materialization.objects.get(asset="enriched_orders", partition_key="d:2025-12-03")
    assert set(
        LineageEdge.objects.filter(downstream=enriched).values_list("upstream_asset", flat=True)
    ) == {
        "raw_orders",
        "customers",
    }


def test_demo_is_deterministic_per_day(use_definitions: UseDefinitions) -> None:
    use_definitions("demo.assets", resources=CATALOG)
    first, second = io.StringIO(), io.StringIO()
    call_command("demo", "--week", str(dt.date(2025, 12, 8)), stdout=first)
    call_command("demo", "--week", str(dt.date(2025, 12, 8)), stdout=second)
    assert (
        first.getvalue().split("weekly_report for")[1]
        == second.getvalue().split("weekly_report for")[1]
    )


def test_demo_rejects_a_date_that_is_not_a_week_start(use_definitions: UseDefinitions) -> None:
    use_definitions("demo.assets", resources=CATALOG)
    with pytest.raises(CommandError, match="validation_error"):
        call_command("demo", "--week", "2025-12-03", stdout=io.StringIO())
