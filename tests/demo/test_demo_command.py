"""The demo pipeline and its ``manage.py demo`` command."""

from __future__ import annotations

import datetime as dt
import io
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.core.management.base import CommandError

from approvals.models import Approval
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
    call_command("demo", "--week", str(dt.date(2025, 12, 15)), stdout=first)
    call_command("demo", "--week", str(dt.date(2025, 12, 15)), stdout=second)
    assert (
        first.getvalue().split("weekly_report for")[1]
        == second.getvalue().split("weekly_report for")[1]
    )


def test_demo_rejects_a_date_that_is_not_a_week_start(use_definitions: UseDefinitions) -> None:
    use_definitions("demo.assets", resources=CATALOG)
    with pytest.raises(CommandError, match="validation_error"):
        call_command("demo", "--week", "2025-12-03", stdout=io.StringIO())


def test_demo_week_above_the_threshold_waits_for_approval_then_finishes(
    use_definitions: UseDefinitions,
) -> None:
    use_definitions("demo.assets", resources=CATALOG)
    out = io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("demo", "--week", "2025-12-08", stdout=out)
    text = out.getvalue()
    approval = Approval.objects.get()
    assert caught.value.returncode == 3
    assert str(caught.value).endswith(
        f"waits for approval {approval.pk} (weekly_report, partition 2025-12-08); decide with: "
        f"python manage.py approvals approve {approval.pk} --user USER "
        f"(or reject {approval.pk} --user USER --reason TEXT)"
    )
    assert "waiting_approval (23 steps)" in text
    assert f"weekly_report waits for approval {approval.pk}:" in text
    assert approval.message == (
        "amer revenue 22,539.50 for the week of 2025-12-08 is above the 21,000 review threshold. "
        "Publish the weekly report?"
    )
    reviewer = User.objects.create_user("reviewer")
    reviewer.user_permissions.add(Permission.objects.get(codename="decide_approval"))
    call_command(
        "approvals", "approve", str(approval.pk), "--user", "reviewer", stdout=io.StringIO()
    )
    weekly = Materialization.objects.get(asset="weekly_report")
    assert weekly.status == "success"
    assert weekly.run.status == "success"
