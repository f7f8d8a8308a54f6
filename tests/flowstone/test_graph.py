"""The asset DAG."""

from __future__ import annotations

import pytest

from flowstone.errors import AssetNotFoundError, DefinitionError
from flowstone.graph import AssetGraph, find_cycle

DIAMOND = {
    "source": [],
    "left": ["source"],
    "right": ["source"],
    "sink": ["left", "right"],
    "x": [],
}


def test_topological_order_is_deterministic() -> None:
    graph = AssetGraph.build(DIAMOND)
    assert graph.order == ("source", "left", "right", "sink", "x")
    assert graph.sorted(["sink", "source", "right"]) == ["source", "right", "sink"]


def test_closures() -> None:
    graph = AssetGraph.build(DIAMOND)
    assert graph.upstream_closure(["sink"]) == {"sink", "left", "right", "source"}
    assert graph.upstream_closure(["left"], include_self=False) == {"source"}
    assert graph.downstream_closure(["source"], include_self=False) == {"left", "right", "sink"}
    with pytest.raises(AssetNotFoundError):
        graph.upstream_closure(["nope"])


def test_cycles_are_found_and_rejected() -> None:
    edges = {"a": ["c"], "b": ["a"], "c": ["b"], "d": []}
    assert find_cycle(edges) == ["a", "c", "b", "a"]
    with pytest.raises(DefinitionError, match="cycle"):
        AssetGraph.build(edges)
    assert find_cycle(DIAMOND) is None


def test_unknown_nodes_are_rejected() -> None:
    with pytest.raises(DefinitionError, match="unknown asset"):
        AssetGraph.build({"a": ["ghost"]})


def test_long_chain_has_no_recursion_limit() -> None:
    chain = {f"n{i}": [f"n{i - 1}"] if i else [] for i in range(5000)}
    assert AssetGraph.build(chain).order[-1] == "n4999"
