"""Runs over multi-dimensional, dynamic and all-partition mappings, and real IO failures."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import flowstone
from assets.services import DatabaseDynamicKeyStore
from flowstone.errors import PartitionKeyError
from flowstone.partitions import encode_partition_key
from flowstone.status import RunStatus, StepStatus
from lineage.models import LineageEdge
from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


@pytest.fixture(autouse=True)
def _shapes(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.shapes")


def test_multi_partition_reads_its_day_dimension_from_a_daily_upstream() -> None:
    key = ("a|b", dt.date(2025, 1, 2))
    result = flowstone.materialize_all("tenant_usage", key, include_values=True)

    assert result.status == RunStatus.SUCCESS
    assert [(s.asset, s.partition) for s in result.steps] == [
        ("calendar", dt.date(2025, 1, 2)),
        ("tenant_usage", key),
    ]
    assert result.value("tenant_usage", key) == {
        "tenant": "a|b",
        "day": "2025-01-02",
        "calendar": "2025-01-02",
    }
    assert result.step("tenant_usage", key).partition_key == 'T:["s:a|b","d:2025-01-02"]'


def test_all_partitions_mapping_fans_in_every_upstream_partition() -> None:
    result = flowstone.materialize_all("calendar_summary", include_values=True)

    assert [s.asset for s in result.steps] == ["calendar"] * 3 + ["calendar_summary"]
    assert result.value("calendar_summary") == ["2025-01-01", "2025-01-02", "2025-01-03"]
    summary = result.step("calendar_summary")
    assert LineageEdge.objects.filter(downstream_id=summary.materialization_id).count() == 3


def test_dynamic_partitions_accept_only_keys_added_to_the_database() -> None:
    with pytest.raises(PartitionKeyError):
        flowstone.materialize("customer_profile", "globex")
    DatabaseDynamicKeyStore().add_keys("customers", ["globex", "initech", "globex"])
    assert DatabaseDynamicKeyStore().get_keys("customers") == ["globex", "initech"]

    result = flowstone.materialize("customer_profile", "globex", include_values=True)
    assert result.value("customer_profile", "globex") == {"customer": "globex"}


def test_unwritable_storage_fails_the_step_with_an_io_error(
    use_definitions: UseDefinitions, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    use_definitions(
        "tests.pipelines.shapes",
        io_managers={
            "default": {
                "CLASS": "flowstone.io.FilesystemIOManager",
                "OPTIONS": {"base_dir": str(blocker)},
            }
        },
    )
    result = flowstone.materialize("calendar", dt.date(2025, 1, 1))

    step = result.step("calendar", dt.date(2025, 1, 1))
    assert step.status == StepStatus.FAILED
    assert step.error is not None
    assert step.error.kind == "io_error"
    assert step.error.partition == encode_partition_key(dt.date(2025, 1, 1))
    assert step.metadata == {}
