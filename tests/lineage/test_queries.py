"""Upstream, downstream, impact and staleness on real runs; the same answers on both databases.

Every test here is ``embedded``: it runs on PostgreSQL in the main pass and again on SQLite, and
compares with literal answers or with a pure-Python walk, so both backends must agree.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import deque
from typing import TYPE_CHECKING, Any

import pytest

import flowstone
from assets.models import Materialization
from flowstone.errors import AssetNotFoundError, PartitionKeyError, ValidationFailedError
from flowstone.partitions import encode_partition_key
from lineage import queries
from lineage.errors import MaterializationNotFoundError
from lineage.models import LineageEdge
from lineage.queries import (
    CODE_VERSION_CHANGED,
    MAX_DEPTH,
    SUPERSEDED,
    UPSTREAM_NEWER,
    downstream,
    impact,
    parse_partition,
    staleness,
    upstream,
)

if TYPE_CHECKING:
    from flowstone.results import RunResult
    from tests.conftest import UseDefinitions

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

EU = encode_partition_key("eu")
WEEK = dt.date(2025, 12, 1)
WEEK_KEY = encode_partition_key(WEEK)


@pytest.fixture(autouse=True)
def _lineage_graph(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.lineage_graph")


def _id(result: RunResult, asset: str, partition: object = None) -> int:
    step = result.step(asset, partition)  # type: ignore[arg-type]
    assert step.materialization_id is not None
    return step.materialization_id


def _shape(nodes: Any) -> list[tuple[str, str, int]]:
    return [(n.asset, n.partition_key, n.depth) for n in nodes]


def test_all_is_pinned() -> None:
    assert queries.__all__ == [
        "CODE_VERSION_CHANGED",
        "MAX_DEPTH",
        "SUPERSEDED",
        "UPSTREAM_NEWER",
        "ImpactResult",
        "LineageLink",
        "LineageNode",
        "LineageResult",
        "StaleCause",
        "Staleness",
        "downstream",
        "impact",
        "parse_partition",
        "staleness",
        "upstream",
    ]


# --- the diamond ------------------------------------------------------------------------------


def test_upstream_of_the_diamond_sink() -> None:
    run = flowstone.materialize_all("sink", "eu")
    result = upstream("sink", "eu")

    assert result.direction == "upstream"
    assert result.start.materialization_id == _id(run, "sink", "eu")
    assert (result.start.asset, result.start.partition_key, result.start.depth) == ("sink", EU, 0)
    assert _shape(result.nodes) == [("left", EU, 1), ("right", EU, 1), ("source", EU, 2)]
    assert [n.materialization_id for n in result.nodes] == [
        _id(run, "left", "eu"),
        _id(run, "right", "eu"),
        _id(run, "source", "eu"),
    ]
    sink, left, right, source = (_id(run, a, "eu") for a in ("sink", "left", "right", "source"))
    assert {(link.downstream_id, link.upstream_id) for link in result.links} == {
        (sink, left),
        (sink, right),
        (left, source),
        (right, source),
    }
    assert result.depth_limit is None


def test_downstream_of_the_diamond_source() -> None:
    run = flowstone.materialize_all("sink", "eu")
    result = downstream("source", "eu")

    assert result.direction == "downstream"
    assert result.start.materialization_id == _id(run, "source", "eu")
    assert _shape(result.nodes) == [("left", EU, 1), ("right", EU, 1), ("sink", EU, 2)]
    assert len(result.links) == 4


def test_depth_limits_the_walk() -> None:
    flowstone.materialize_all("sink", "eu")

    assert _shape(upstream("sink", "eu", depth=1).nodes) == [("left", EU, 1), ("right", EU, 1)]
    assert len(upstream("sink", "eu", 1).links) == 2
    assert _shape(downstream("source", "eu", depth=1).nodes) == [
        ("left", EU, 1),
        ("right", EU, 1),
    ]
    assert upstream("sink", "eu", depth=2).nodes == upstream("sink", "eu").nodes
    assert upstream("sink", "eu", depth=1).depth_limit == 1
    assert downstream("sink", "eu").nodes == ()


def test_start_is_the_latest_success_or_the_materialization_named() -> None:
    first = flowstone.materialize_all("sink", "eu")
    second = flowstone.materialize_all("sink", "eu")

    latest = upstream("sink", "eu")
    assert latest.start.materialization_id == _id(second, "sink", "eu")
    assert {n.materialization_id for n in latest.nodes} == {
        _id(second, a, "eu") for a in ("left", "right", "source")
    }
    older = upstream("sink", materialization_id=_id(first, "sink", "eu"))
    assert {n.materialization_id for n in older.nodes} == {
        _id(first, a, "eu") for a in ("left", "right", "source")
    }


def test_partition_key_keyword_takes_the_encoded_key() -> None:
    flowstone.materialize_all("sink", "eu")

    assert upstream("sink", partition_key=EU) == upstream("sink", "eu")
    flowstone.materialize_all("weekly_summary", WEEK)
    assert downstream("catalog", partition_key="") == downstream("catalog")
    assert upstream("weekly_summary", partition_key="d:2025-12-01") == upstream(
        "weekly_summary", WEEK
    )


def test_results_are_json_safe() -> None:
    flowstone.materialize_all("sink", "eu")
    flowstone.materialize("source", "eu")

    for answer in (upstream("sink", "eu"), impact("source", "eu"), staleness("sink", "eu")):
        data = answer.as_dict()
        assert json.loads(json.dumps(data)) == data
    data = upstream("sink", "eu", 1).as_dict()
    assert data["start"] == {
        "materialization_id": data["start"]["materialization_id"],
        "asset": "sink",
        "partition_key": EU,
        "depth": 0,
    }
    assert sorted(data) == ["depth_limit", "direction", "links", "nodes", "start"]


# --- impact -----------------------------------------------------------------------------------


def test_impact_of_a_newer_source_makes_the_whole_diamond_stale() -> None:
    first = flowstone.materialize_all("sink", "eu")
    assert impact("source", "eu").stale == ()
    assert impact("source", "eu").superseded == ()

    newer = flowstone.materialize("source", "eu")
    result = impact("source", "eu")

    assert result.start.materialization_id == _id(newer, "source", "eu")
    assert [n.materialization_id for n in result.superseded] == [_id(first, "source", "eu")]
    assert _shape(result.stale) == [("left", EU, 1), ("right", EU, 1), ("sink", EU, 2)]
    assert _shape(impact("source", "eu", depth=1).stale) == [("left", EU, 1), ("right", EU, 1)]


def test_impact_lists_only_materializations_that_are_still_the_latest() -> None:
    flowstone.materialize_all("sink", "eu")
    flowstone.materialize("source", "eu")
    flowstone.materialize("left", "eu")  # made from the new source: not stale any more

    assert _shape(impact("source", "eu").stale) == [("right", EU, 1), ("sink", EU, 2)]

    flowstone.materialize("sink", "eu")  # new left, but the old right: still stale
    stale = impact("source", "eu").stale
    assert _shape(stale) == [("right", EU, 1), ("sink", EU, 2)]
    assert stale[1].materialization_id == upstream("sink", "eu").start.materialization_id

    flowstone.materialize_all("sink", "eu")
    assert impact("source", "eu").stale == ()


def test_impact_of_an_older_materialization_is_relative_to_it() -> None:
    first = flowstone.materialize_all("sink", "eu")
    second = flowstone.materialize("source", "eu")
    flowstone.materialize("source", "eu")

    result = impact("source", materialization_id=_id(second, "source", "eu"))
    assert [n.materialization_id for n in result.superseded] == [_id(first, "source", "eu")]
    assert _shape(result.stale) == [("left", EU, 1), ("right", EU, 1), ("sink", EU, 2)]
    assert impact("source", materialization_id=_id(first, "source", "eu")).stale == ()


# --- weekly over daily, tenant x day over daily -----------------------------------------------


def test_weekly_over_daily_upstream_has_the_seven_days_and_the_catalog() -> None:
    flowstone.materialize_all("weekly_summary", WEEK)
    result = upstream("weekly_summary", WEEK)

    days = [encode_partition_key(WEEK + dt.timedelta(days=n)) for n in range(7)]
    assert _shape(result.nodes) == [
        *[("daily_events", day, 1) for day in days],
        ("catalog", "", 2),
    ]
    assert len(result.links) == 14
    assert _shape(upstream("weekly_summary", WEEK, depth=1).nodes) == [
        ("daily_events", day, 1) for day in days
    ]


def test_daily_downstream_reaches_its_week_and_tenants() -> None:
    flowstone.materialize_all("weekly_summary", WEEK)
    flowstone.materialize("tenant_events", ("a|b", dt.date(2025, 12, 3)))

    result = downstream("daily_events", dt.date(2025, 12, 3))
    assert _shape(result.nodes) == [
        ("tenant_events", 'T:["s:a|b","d:2025-12-03"]', 1),
        ("weekly_summary", WEEK_KEY, 1),
    ]
    catalog = downstream("catalog")
    assert len(catalog.nodes) == 9  # 7 days, the week, the tenant day
    assert max(n.depth for n in catalog.nodes) == 2


def test_impact_and_staleness_across_weekly_over_daily() -> None:
    flowstone.materialize_all("weekly_summary", WEEK)
    changed = flowstone.materialize("daily_events", dt.date(2025, 12, 3))

    assert _shape(impact("daily_events", dt.date(2025, 12, 3)).stale) == [
        ("weekly_summary", WEEK_KEY, 1)
    ]
    assert impact("daily_events", dt.date(2025, 12, 4)).stale == ()
    state = staleness("weekly_summary", WEEK)
    assert state.is_stale
    assert [(c.kind, c.node.asset, c.node.partition_key, c.node.depth) for c in state.causes] == [
        (UPSTREAM_NEWER, "daily_events", "d:2025-12-03", 1)
    ]
    assert state.causes[0].newer_materialization_id == _id(
        changed, "daily_events", dt.date(2025, 12, 3)
    )

    flowstone.materialize("catalog")
    stale = impact("catalog").stale
    assert len(stale) == 8
    assert _shape(stale)[-1] == ("weekly_summary", WEEK_KEY, 2)


def test_tenant_partition_values_and_parsed_text_name_the_same_key() -> None:
    key = ("a|b", dt.date(2025, 12, 2))
    flowstone.materialize_all("tenant_events", key)

    assert parse_partition("tenant_events", '["a|b", "2025-12-02"]') == key
    assert parse_partition("weekly_summary", "2025-12-01") == WEEK
    assert upstream("tenant_events", key) == upstream(
        "tenant_events", partition_key='T:["s:a|b","d:2025-12-02"]'
    )
    assert _shape(upstream("tenant_events", key).nodes) == [
        ("daily_events", "d:2025-12-02", 1),
        ("catalog", "", 2),
    ]


# --- staleness --------------------------------------------------------------------------------


def test_a_fresh_materialization_is_up_to_date() -> None:
    run = flowstone.materialize_all("sink", "eu")
    state = staleness("sink", "eu")

    assert state.start.materialization_id == _id(run, "sink", "eu")
    assert not state.is_stale
    assert state.causes == ()
    assert state.summary() == "up to date"


def test_a_newer_input_makes_every_consumer_stale() -> None:
    first = flowstone.materialize_all("sink", "eu")
    flowstone.materialize("source", "eu")

    left = staleness("left", "eu")
    assert [(c.kind, c.node.asset, c.node.depth) for c in left.causes] == [
        (UPSTREAM_NEWER, "source", 1)
    ]
    sink = staleness("sink", "eu")
    assert [(c.kind, c.node.materialization_id, c.node.depth) for c in sink.causes] == [
        (UPSTREAM_NEWER, _id(first, "source", "eu"), 2)
    ]
    assert sink.summary().startswith("stale: input source[s:eu] #")


def test_an_input_with_a_newer_success_is_not_looked_through() -> None:
    first = flowstone.materialize_all("sink", "eu")
    flowstone.materialize("source", "eu")
    flowstone.materialize("left", "eu")

    causes = staleness("sink", "eu").causes
    assert [(c.kind, c.node.materialization_id, c.node.depth) for c in causes] == [
        (UPSTREAM_NEWER, _id(first, "left", "eu"), 1),
        (UPSTREAM_NEWER, _id(first, "source", "eu"), 2),  # through right, still the latest
    ]


def test_a_changed_code_version_makes_it_and_its_consumers_stale(
    use_definitions: UseDefinitions,
) -> None:
    run = flowstone.materialize_all("sink", "eu")
    use_definitions("tests.pipelines.lineage_graph_v2")

    left = staleness("left", "eu")
    assert [
        (c.kind, c.node.depth, c.recorded_code_version, c.current_code_version) for c in left.causes
    ] == [(CODE_VERSION_CHANGED, 0, "1", "2")]
    sink = staleness("sink", "eu")
    assert [(c.kind, c.node.materialization_id, c.node.depth) for c in sink.causes] == [
        (CODE_VERSION_CHANGED, _id(run, "left", "eu"), 1)
    ]
    assert "code version '1'; the asset is now at '2'" in sink.summary()
    assert not staleness("right", "eu").is_stale

    flowstone.materialize_all("sink", "eu")
    assert not staleness("sink", "eu").is_stale


def test_a_superseded_materialization_is_stale() -> None:
    first = flowstone.materialize_all("source", "eu")
    second = flowstone.materialize_all("source", "eu")

    state = staleness("source", materialization_id=_id(first, "source", "eu"))
    assert [(c.kind, c.newer_materialization_id) for c in state.causes] == [
        (SUPERSEDED, _id(second, "source", "eu"))
    ]


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("query", [upstream, downstream, impact, staleness])
def test_unknown_asset_is_a_clear_error(query: Any) -> None:
    with pytest.raises(AssetNotFoundError, match="unknown asset 'nope'"):
        query("nope", "eu")
    with pytest.raises(AssetNotFoundError):
        query("demo.assets.customers")  # a dotted path is a name like any other, never imported


@pytest.mark.parametrize("query", [upstream, downstream, impact, staleness])
def test_a_partition_without_success_is_not_found(query: Any) -> None:
    with pytest.raises(MaterializationNotFoundError, match=r"no successful materialization.*s:us"):
        query("sink", "us")


def test_partitions_are_validated_like_the_run_api() -> None:
    flowstone.materialize_all("sink", "eu")

    with pytest.raises(PartitionKeyError, match="asset 'sink' is partitioned"):
        upstream("sink")
    with pytest.raises(PartitionKeyError):
        upstream("sink", "nowhere")
    with pytest.raises(PartitionKeyError, match="unknown type tag"):
        upstream("sink", partition_key="eu")
    with pytest.raises(PartitionKeyError):
        upstream("sink", partition_key="s:nowhere")
    with pytest.raises(PartitionKeyError, match="not partitioned"):
        upstream("catalog", "eu")
    with pytest.raises(PartitionKeyError, match="not partitioned"):
        parse_partition("catalog", "eu")
    with pytest.raises(PartitionKeyError, match="is not a date"):
        parse_partition("weekly_summary", "monday")
    with pytest.raises(ValidationFailedError, match="not both"):
        upstream("sink", "eu", partition_key=EU)


def test_materialization_ids_are_checked() -> None:
    run = flowstone.materialize_all("sink", "eu")

    with pytest.raises(ValidationFailedError, match="not both"):
        upstream("sink", "eu", materialization_id=_id(run, "sink", "eu"))
    with pytest.raises(MaterializationNotFoundError, match="of asset 'sink'"):
        upstream("sink", materialization_id=_id(run, "left", "eu"))
    bad: Any
    for bad in (0, -1, True, "7", 2**63):
        with pytest.raises(ValidationFailedError, match="materialization id"):
            upstream("sink", materialization_id=bad)


@pytest.mark.parametrize("depth", [0, -1, True, 1.5, "2", MAX_DEPTH + 1])
def test_depth_must_be_a_positive_integer(depth: Any) -> None:
    flowstone.materialize_all("sink", "eu")
    with pytest.raises(ValidationFailedError, match="depth must be an integer"):
        upstream("sink", "eu", depth)


# --- cycles written behind the services' back -------------------------------------------------


def test_walks_over_a_corrupted_cyclic_graph_end_and_list_each_node_once() -> None:
    run = flowstone.materialize_all("sink", "eu")
    sink, source = _id(run, "sink", "eu"), _id(run, "source", "eu")
    LineageEdge.objects.create(
        downstream_id=source,
        upstream_id=sink,
        downstream_asset="source",
        downstream_partition_key=EU,
        upstream_asset="sink",
        upstream_partition_key=EU,
    )  # the services refuse this edge; a cycle can only come from writing around them

    up = upstream("sink", "eu")
    assert _shape(up.nodes) == [("left", EU, 1), ("right", EU, 1), ("source", EU, 2)]
    assert len(up.links) == 5
    assert _shape(downstream("sink", "eu").nodes) == [
        ("source", EU, 1),
        ("left", EU, 2),
        ("right", EU, 2),
    ]
    assert _shape(upstream("sink", "eu", depth=MAX_DEPTH).nodes) == _shape(up.nodes)
    flowstone.materialize("source", "eu")
    assert {n.asset for n in impact("source", "eu").stale} == {"left", "right", "sink"}
    assert staleness("sink", "eu").is_stale


# --- the same answers as a pure-Python walk, on either database -------------------------------


def _reference(start: int, direction: str, depth: int | None) -> dict[int, int]:
    """Shortest depth of every node reachable from ``start``, by breadth-first search in Python."""
    edges = list(LineageEdge.objects.values_list("downstream_id", "upstream_id"))
    step: dict[int, list[int]] = {}
    for down, up in edges:
        src, dst = (down, up) if direction == "upstream" else (up, down)
        step.setdefault(src, []).append(dst)
    found: dict[int, int] = {}
    frontier = deque([(start, 0)])
    while frontier:
        node, level = frontier.popleft()
        if depth is not None and level == depth:
            continue
        for nxt in step.get(node, ()):
            if nxt not in found and nxt != start:
                found[nxt] = level + 1
                frontier.append((nxt, level + 1))
    return found


def test_every_answer_matches_a_python_walk_of_the_edges() -> None:
    flowstone.materialize_all("sink", "eu")
    flowstone.materialize_all("sink", "us")
    flowstone.materialize("source", "eu")
    flowstone.materialize("left", "eu")
    flowstone.materialize_all("weekly_summary", WEEK)
    flowstone.materialize("catalog")
    flowstone.materialize("daily_events", dt.date(2025, 12, 2))
    flowstone.materialize_all("tenant_events", ("acme", dt.date(2025, 12, 2)))

    successes = Materialization.objects.filter(status="success").order_by("id")
    assert successes.count() > 20
    for row in successes:
        for depth in (None, 1, 2):
            for query, direction in ((upstream, "upstream"), (downstream, "downstream")):
                result = query(row.asset, depth=depth, materialization_id=row.pk)
                got = {n.materialization_id: n.depth for n in result.nodes}
                assert got == _reference(row.pk, direction, depth), (row, direction, depth)
