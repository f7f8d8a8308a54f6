"""Partition health: range compression (a property) and the latest status of each partition."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

import flowstone
from assets import services
from assets.models import Materialization, Run
from assets.palette import MISSING
from assets.partition_health import (
    PartitionRange,
    compress,
    latest_statuses,
    partition_health,
    partition_label,
)
from flowstone.registry import get_registry
from flowstone.status import RunKind, StepStatus
from tests.conftest import UseDefinitions

STATUSES = st.sampled_from([*(s.value for s in StepStatus), MISSING])


@given(st.lists(STATUSES, max_size=300))
def test_ranges_cover_every_partition_once_in_order_and_neighbours_differ(
    statuses: list[str],
) -> None:
    partitions = [(f"s:k{index}", status) for index, status in enumerate(statuses)]

    ranges = compress(partitions)

    expanded = [r.status for r in ranges for _ in range(r.count)]
    assert expanded == statuses
    bounds = [0, *(r.stop for r in ranges)]
    assert [(r.start, r.stop) for r in ranges] == list(itertools.pairwise(bounds))
    assert bounds[-1] == len(statuses)
    assert all(r.count > 0 for r in ranges)
    assert all(a.status != b.status for a, b in itertools.pairwise(ranges))
    for r in ranges:
        assert (r.first_key, r.last_key) == (partitions[r.start][0], partitions[r.stop - 1][0])


def test_compress_consumes_an_iterator_once() -> None:
    pairs = iter([("d:2024-01-01", "success"), ("d:2024-01-02", "success"), ("d:2024-01-03", "")])
    assert compress(pairs) == [
        PartitionRange(
            status="success", start=0, stop=2, first_key="d:2024-01-01", last_key="d:2024-01-02"
        ),
        PartitionRange(
            status="", start=2, stop=3, first_key="d:2024-01-03", last_key="d:2024-01-03"
        ),
    ]
    assert compress([]) == []


def test_labels_read_as_people_write_partitions() -> None:
    one = PartitionRange(status="failed", start=4, stop=5, first_key="s:eu", last_key="s:eu")
    many = PartitionRange(
        status="success", start=0, stop=3, first_key="d:2024-01-01", last_key="d:2024-01-03"
    )
    assert (one.label, many.label) == ("eu", "2024-01-01 … 2024-01-03")
    assert partition_label("") == "(unpartitioned)"
    assert partition_label('T:["s:eu","d:2024-01-01"]') == "eu|2024-01-01"
    assert partition_label("x:not a key") == "x:not a key"


@pytest.mark.django_db
@pytest.mark.embedded
def test_the_latest_step_of_a_partition_decides_its_status(
    use_definitions: UseDefinitions,
) -> None:
    use_definitions("tests.pipelines.diamond")
    flowstone.materialize("source", "eu")
    flowstone.materialize_all("broken", "us")
    assert latest_statuses("broken") == {"s:us": StepStatus.FAILED}
    assert latest_statuses("source") == {"s:eu": "success", "s:us": "success"}

    # A step that has not finished is what happens now: it is the latest.
    unfinished = services.create_run(
        services.RunRequest(
            kind=RunKind.MATERIALIZE,
            selection=["source"],
            steps=[services.StepRequest(asset="source", partition_key="s:us")],
        )
    )
    assert latest_statuses("source")["s:us"] == StepStatus.QUEUED

    # Two steps finished at the same instant: the higher id is the latest, whatever its status.
    instant = timezone.now() + dt.timedelta(hours=1)
    Materialization.objects.filter(asset="source", partition_key="s:eu").update(finished_at=instant)
    later = Run.objects.create(kind=RunKind.MATERIALIZE)
    Materialization.objects.create(
        run=later,
        asset="source",
        partition_key="s:eu",
        status=StepStatus.CANCELED,
        finished_at=instant,
    )
    assert latest_statuses("source") == {"s:eu": "canceled", "s:us": "queued"}

    health = partition_health(get_registry().get("source"))
    assert [(r.label, r.status) for r in health.ranges] == [
        ("eu", "canceled"),
        ("us", "queued"),
        ("a|b:c", MISSING),
    ]
    assert health.counts == {"canceled": 1, "queued": 1, MISSING: 1}
    assert (health.total, health.is_truncated, health.unknown_keys) == (3, False, 0)
    assert unfinished.run.pk != later.pk


@pytest.mark.django_db
@pytest.mark.embedded
def test_steps_of_partitions_the_definition_no_longer_lists_are_counted(
    use_definitions: UseDefinitions,
) -> None:
    use_definitions("tests.pipelines.diamond")
    flowstone.materialize("source", "eu")
    run = Run.objects.create(kind=RunKind.MATERIALIZE)
    Materialization.objects.create(
        run=run, asset="source", partition_key="s:gone", status=StepStatus.SUCCESS
    )
    health = partition_health(get_registry().get("source"))
    assert health.unknown_keys == 1
    assert health.total == 3
    assert health.counts == {"success": 1, MISSING: 2}


@pytest.mark.django_db
@pytest.mark.embedded
def test_an_unpartitioned_asset_is_one_cell(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.engine_flow", resources={})
    health = partition_health(get_registry().get("e_sibling"))
    assert [(r.label, r.status) for r in health.ranges] == [("(unpartitioned)", MISSING)]
    flowstone.materialize("e_sibling")
    health = partition_health(get_registry().get("e_sibling"))
    assert [(r.label, r.status, r.count) for r in health.ranges] == [
        ("(unpartitioned)", "success", 1)
    ]
