"""Recording lineage: cycles are impossible to record, by the service and by the database."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from django.db import IntegrityError, transaction

import flowstone
from assets.models import Materialization
from lineage.errors import LineageCycleError
from lineage.models import LineageEdge
from lineage.services import record_lineage

if TYPE_CHECKING:
    from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]


@pytest.fixture(autouse=True)
def _lineage_graph(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.lineage_graph")


def _latest(asset: str, partition_key: str = "s:eu") -> Materialization:
    return Materialization.objects.filter(
        asset=asset, partition_key=partition_key, status="success"
    ).latest("finished_at", "id")


def test_an_edge_back_to_a_transitive_consumer_is_refused_and_nothing_is_recorded() -> None:
    flowstone.materialize_all("sink", "eu")
    source, left, sink = _latest("source"), _latest("left"), _latest("sink")
    before = LineageEdge.objects.count()

    with pytest.raises(LineageCycleError) as caught:
        record_lineage(source, [left, sink])

    error = caught.value
    assert error.kind == "validation_error"
    assert error.details == {"downstream": source.pk, "upstreams": sorted([left.pk, sink.pk])}
    assert str(error) == (
        f"[validation_error] materialization #{source.pk} of 'source' cannot consume "
        f"#{min(left.pk, sink.pk)} of 'left': #{left.pk} was itself made (directly or not) "
        f"from #{source.pk}, so the edge would close a cycle"
    )
    assert (error.asset, error.partition) == ("source", "s:eu")
    assert LineageEdge.objects.count() == before


def test_an_edge_to_itself_is_refused_before_the_database_check() -> None:
    flowstone.materialize_all("source", "eu")
    source = _latest("source")

    with pytest.raises(LineageCycleError, match=r"cannot consume itself"):
        record_lineage(source, [source])
    assert not LineageEdge.objects.exists()


def test_the_database_refuses_a_self_edge_written_around_the_service() -> None:
    flowstone.materialize_all("source", "eu")
    source = _latest("source")

    with pytest.raises(IntegrityError), transaction.atomic():
        LineageEdge.objects.create(
            downstream=source,
            upstream=source,
            downstream_asset="source",
            upstream_asset="source",
        )


def test_acyclic_edges_are_recorded_even_when_the_downstream_has_consumers() -> None:
    flowstone.materialize_all("sink", "eu")
    flowstone.materialize("catalog")
    left, sink, catalog = _latest("left"), _latest("sink"), _latest("catalog", "")

    assert record_lineage(left, [catalog]) == 1  # left has consumers, but none is catalog
    assert record_lineage(sink, [_latest("left"), _latest("right")]) == 2  # re-recording
    assert LineageEdge.objects.filter(downstream=sink).count() == 2
    assert LineageEdge.objects.filter(downstream=left, upstream=catalog).exists()
