"""Text renderings of lineage answers (no database)."""

from __future__ import annotations

from lineage.render import render_impact, render_tree
from lineage.results import ImpactResult, LineageLink, LineageNode, LineageResult


def _node(pk: int, asset: str, depth: int, key: str = "") -> LineageNode:
    return LineageNode(materialization_id=pk, asset=asset, partition_key=key, depth=depth)


def test_a_shared_node_with_inputs_is_drawn_once_then_marked() -> None:
    # top is made from a and b, both made from mid, itself made from leaf.
    result = LineageResult(
        direction="upstream",
        start=_node(1, "top", 0),
        depth_limit=None,
        nodes=(_node(2, "a", 1), _node(3, "b", 1), _node(4, "mid", 2), _node(5, "leaf", 3)),
        links=(
            LineageLink(downstream_id=1, upstream_id=2),
            LineageLink(downstream_id=1, upstream_id=3),
            LineageLink(downstream_id=2, upstream_id=4),
            LineageLink(downstream_id=3, upstream_id=4),
            LineageLink(downstream_id=4, upstream_id=5),
        ),
    )
    assert render_tree(result) == [
        "upstream of top #1:",
        "top #1",
        "├── a #2",
        "│   └── mid #4",
        "│       └── leaf #5",
        "└── b #3",
        "    └── mid #4 (see above)",
    ]


def test_a_downstream_tree_follows_the_links_the_other_way() -> None:
    result = LineageResult(
        direction="downstream",
        start=_node(5, "leaf", 0, "s:x"),
        depth_limit=2,
        nodes=(_node(4, "mid", 1, "s:x"), _node(2, "a", 2, "s:x")),
        links=(
            LineageLink(downstream_id=4, upstream_id=5),
            LineageLink(downstream_id=2, upstream_id=4),
        ),
    )
    assert render_tree(result) == [
        "downstream of leaf[s:x] #5, depth <= 2:",
        "leaf[s:x] #5",
        "└── mid[s:x] #4",
        "    └── a[s:x] #2",
    ]


def test_impact_with_superseded_inputs_and_nothing_stale() -> None:
    result = ImpactResult(
        start=_node(9, "src", 0, "i:1"),
        depth_limit=None,
        superseded=(_node(3, "src", 0, "i:1"), _node(6, "src", 0, "i:1")),
        stale=(),
    )
    assert render_impact(result) == [
        "impact of src[i:1] #9:",
        "  supersedes #3, #6",
        "  nothing is stale",
    ]
